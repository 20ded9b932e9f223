/**
 * Stopping a broker in a test so that it leaves nothing running behind it. Moleculer tells the
 * other nodes about its services through a debounced call (transit.serviceChangedDebounceTime,
 * 1 s) armed whenever a local service registers, and `broker.stop()` does not cancel it: a
 * broker on a transporter stopped within a second of a service starting keeps the process
 * alive for up to a second more, and Jest then force-exits its worker ("A worker process has
 * failed to exit gracefully").
 */
import type { ServiceBroker } from "moleculer";

export async function stopBroker(broker: ServiceBroker | undefined | null): Promise<void> {
	if (!broker) return;
	try {
		await broker.stop();
	} finally {
		(
			broker as unknown as { localServiceChanged: { cancel?: () => void } }
		).localServiceChanged.cancel?.();
	}
}
