/**
 * After the transporter reconnects (a restarted nats-server), requests sent before the break
 * may never be answered: their replies went to a server that is gone. Moleculer would wait
 * out each call's timeout (the batcher's sign timeout is over a minute), so this middleware
 * fails them at once. Every caller here treats a failed call as "maybe done": the batcher
 * re-signs still-unsigned records in a new batch, a lease not released expires.
 */
import type { Middleware, ServiceBroker } from "moleculer";
import { watchNatsStatus } from "./nats-status";

interface PendingRequests {
	pendingRequests: Map<string, { nodeID: string }>;
	removePendingRequestByNodeID(nodeID: string): void;
}

export function FailLostRequestsMiddleware(): Middleware {
	return {
		name: "FailLostRequests",
		started(broker: ServiceBroker) {
			watchNatsStatus(broker, type => {
				const transit = broker.transit as unknown as PendingRequests | undefined;
				if (type !== "reconnect" || !transit) return;
				const nodes = new Set([...transit.pendingRequests.values()].map(request => request.nodeID));
				if (nodes.size) broker.logger.warn(`Transporter reconnected: failing the requests in flight to ${[...nodes].join(", ")}; their replies may be lost`);
				for (const nodeID of nodes) transit.removePendingRequestByNodeID(nodeID);
			});
		}
	} as Middleware;
}
