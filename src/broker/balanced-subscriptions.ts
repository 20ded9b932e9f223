/**
 * With `disableBalancer` (src/broker/broker-options.ts) every node subscribes to one NATS subject
 * per action it serves, in a queue group. Moleculer re-makes those subscriptions each time it
 * announces its services (Moleculer's transporters/base.js, `makeBalancedSubscriptions`): it
 * drops them all, waits for the server, then subscribes again. A request published in between
 * finds no subscriber and NATS drops it: its caller hears nothing until its timeout (30 s).
 * And it makes them only then, about a second after a node's last service starts, while a node
 * that joins meanwhile is already told of the services in the reply to its DISCOVER: its calls
 * found no subscriber (seen as a REPL's first `batcher.start` timing out beside npm run serve).
 *
 * Here the node subscribes to the new set first and drains the old one only once the server has
 * the new one (a request already handed to an old subscription is still answered): for a moment
 * the same subject has two subscriptions of the same queue group on one connection, and NATS
 * hands each message to one of them.
 */
import type { Middleware, ServiceBroker } from "moleculer";

/** What of Moleculer's NATS transporter this reads and replaces. */
interface NatsTx {
	subscriptions?: Array<{ unsubscribe(): void; drain?(): Promise<void> }>;
	client?: { flush(): Promise<void> } | null;
	makeBalancedSubscriptions?: () => Promise<void>;
	unsubscribeFromBalancedCommands?: () => Promise<void>;
}

export function SteadySubscriptionsMiddleware(): Middleware {
	return {
		name: "SteadySubscriptions",
		created(broker: ServiceBroker) {
			const tx = (broker as unknown as { transit?: { tx?: NatsTx } }).transit?.tx;
			if (
				!tx ||
				!Array.isArray(tx.subscriptions) ||
				typeof tx.makeBalancedSubscriptions !== "function" ||
				typeof tx.unsubscribeFromBalancedCommands !== "function"
			)
				return;
			const make = tx.makeBalancedSubscriptions.bind(tx);
			// Called by `make` before it subscribes: the old subscriptions stay until the new ones hold.
			tx.unsubscribeFromBalancedCommands = () => Promise.resolve();
			let last: Promise<void> = Promise.resolve();
			const remake = () => {
				const run = last.then(async () => {
					const old = tx.subscriptions ?? [];
					tx.subscriptions = [];
					await make();
					await tx.client?.flush();
					// Drained, not cut: a request the server already handed to an old one is answered.
					await Promise.all(
						old.map((subscription) =>
							subscription.drain
								? subscription.drain().catch(() => subscription.unsubscribe())
								: subscription.unsubscribe(),
						),
					);
				});
				last = run.catch(() => undefined);
				return run;
			};
			tx.makeBalancedSubscriptions = remake;
			// A service that starts is subscribed to at once, not at the debounced announcement a
			// second later: a node that asks for the services (DISCOVER) is told of it in the
			// meantime, and its calls would find no subscriber. The subscriptions are written to
			// the connection before any reply that names the service.
			broker.localBus.on("$services.changed", (payload: { localService?: boolean }) => {
				// A stopping node has told the others it serves nothing: its services leaving must
				// not subscribe it again (Moleculer's own announcement skips it too).
				if (payload?.localService && broker.transit?.connected && !broker.stopping)
					void remake().catch(() => undefined);
			});
		},
	} as unknown as Middleware;
}
