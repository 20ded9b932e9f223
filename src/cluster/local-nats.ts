/**
 * A nats-server on 127.0.0.1 for processes of this machine: `npm run cluster` and
 * `npm run serve` (so that `npm run repl` can join it). One NATS user per role with least
 * privilege (src/broker/nats-permissions.ts), fresh random passwords, and the configuration file
 * (mode 0600) in the caller's folder. `npm run cluster -- --nats 3 --tls` runs a routed cluster
 * of them instead (src/cluster/nats-cluster.ts, which this is the one-server case of).
 */
import { startNatsCluster, type LocalNats } from "./nats-cluster";

export { NATS_MAX_PAYLOAD, type LocalNats } from "./nats-cluster";

/** The cluster of `npm run cluster -- --nats N --tls`: how many servers, and TLS or not. */
export interface NatsShape {
	size?: number;
	tls?: boolean;
}

/**
 * Starts nats-server with a user per role; `keyringNodes` are the node ids the keyring runs
 * under (their node-addressed subjects are the keyring user's only).
 */
export function startLocalNats(
	folder: string,
	namespace: string,
	keyringNodes: string[],
	writtenBy: string,
	detached = false,
	shape: NatsShape = {},
): Promise<LocalNats> {
	return startNatsCluster({ folder, namespace, keyringNodes, writtenBy, detached, ...shape });
}
