/**
 * One stop per start. Moleculer's `broker.stop()` has no guard: called again while a stop runs,
 * it calls every service's `stopped` a second time. The REPL does that: its `exit` command stops
 * the broker, and then its input closes and its "exit" event stops it again. The second
 * `stopped` of the records and keyring services published a last checkpoint after the first had
 * closed the store ("Unable to stop all services. Error: statement has been finalized"). Here a
 * stop while one runs, or after it, answers the first one's promise; a start begins anew.
 */
import type { Middleware, ServiceBroker } from "moleculer";

export function StopOnceMiddleware(): Middleware {
	return {
		name: "StopOnce",
		created(broker: ServiceBroker) {
			const stop = broker.stop.bind(broker);
			const start = broker.start.bind(broker);
			let stopping: Promise<void> | null = null;
			broker.stop = () => (stopping ??= stop());
			broker.start = () => {
				stopping = null;
				return start();
			};
		},
	};
}
