/**
 * The nats.js connection's status events (disconnect, reconnect, ...). Moleculer's NATS
 * transporter lets the client reconnect on its own and reports none of it, so the health
 * check and the lost-request middleware listen here.
 */
import type { ServiceBroker } from "moleculer";

/** Duck type of the nats.js connection behind Moleculer's NATS transporter. */
interface NatsStatusSource {
	status(): AsyncIterable<{ type: string }>;
	isClosed?(): boolean;
	/** The server's INFO: `max_payload` is the largest message it takes. */
	info?: { max_payload?: number; server_name?: string };
}

export function natsClient(broker: ServiceBroker): NatsStatusSource | null {
	const client = (broker.transit?.tx as unknown as { client?: unknown } | undefined)?.client as
		NatsStatusSource | null | undefined;
	return client && typeof client.status === "function" ? client : null;
}

/** Calls `onEvent` with each status type until the connection closes; false without NATS. */
export function watchNatsStatus(broker: ServiceBroker, onEvent: (type: string) => void): boolean {
	const client = natsClient(broker);
	if (!client) return false;
	// Each status() call is its own listener; it ends when the connection closes.
	void (async () => {
		try {
			for await (const event of client.status()) onEvent(event.type);
		} catch (err) {
			broker.logger.debug("NATS status stream ended", err);
		}
	})();
	return true;
}

/** The largest message the connected nats-server takes (its `max_payload`), or null without NATS. */
export function natsMaxPayload(broker: ServiceBroker): number | null {
	const maxPayload = natsClient(broker)?.info?.max_payload;
	return typeof maxPayload === "number" && maxPayload > 0 ? maxPayload : null;
}
