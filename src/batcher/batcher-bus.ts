/**
 * The batcher's ports (ports.ts) on the bus: the records service through its actions, and the
 * signers as the registry sees them. A batch goes to one signer the batcher chose, with a
 * dispatch ticket naming it; a batch is closed with the batcher's close proof (docs/design.md §6).
 */
import type { CallingOptions, ServiceBroker } from "moleculer";
import { Actions, call } from "../contract";
import { busChecks } from "../identity/bus-checks";
import type { SignerCredential } from "../identity/credential";
import { makeCloseProof, makeTicket } from "../identity/ticket";
import type { RecordsPort, SignersPort } from "./ports";

/** `credential`: the batcher's credential in use (it may be rotated while the batcher runs, docs/design.md §6.1). */
export function recordsOnBus(
	broker: ServiceBroker,
	credential: () => SignerCredential,
): RecordsPort {
	return {
		unsignedPage: async (after, limit) =>
			(await call(broker, Actions.records.unsignedPage, { after, limit })).records,
		unsignedAmong: async (ids) =>
			(await call(broker, Actions.records.unsignedAmong, { ids })).records,
		unsignedArrivals: async (afterSeq, limit) =>
			(await call(broker, Actions.records.unsignedArrivals, { afterSeq, limit })).records,
		progress: () => call(broker, Actions.records.progress, {}),
		closeBatch: (batchId, recordIds) =>
			call(broker, Actions.records.closeBatch, {
				batchId,
				recordIds,
				proof: busChecks.on ? makeCloseProof(credential(), batchId) : "",
			}),
		signedUnder: async (batchId) =>
			(await call(broker, Actions.records.signedUnder, { batchId })).signed,
		stats: () => call(broker, Actions.records.stats, {}),
	};
}

/**
 * `maxMessageBytes`: the largest message the transport carries (src/broker/nats-status.ts);
 * `credential`: the batcher's credential in use; `macKey`: its request MAC key for the keyring
 * (docs/design.md §6.9), or null while it knows no keyring key (its tickets are then Ed25519).
 */
export function signersOnBus(
	broker: ServiceBroker,
	credential: () => SignerCredential,
	maxMessageBytes: () => number | null,
	macKey: (credential: SignerCredential) => Uint8Array | null = () => null,
): SignersPort {
	return {
		available: () =>
			broker.registry
				.getServiceList({ onlyAvailable: true })
				.flatMap((s) => (s.name === "signer" && s.nodeID ? [s.nodeID] : [])),
		keyringAvailable: () =>
			Boolean(broker.registry.getActionEndpoints(Actions.keyring.acquire)?.hasAvailable()),
		async keyringKeys() {
			if (!broker.registry.getActionEndpoints(Actions.keyring.status)?.hasAvailable())
				return null;
			try {
				const status = await call(broker, Actions.keyring.status, {}, { timeout: 5_000 });
				return typeof status.active === "number"
					? { keys: status.keys, active: status.active }
					: null;
			} catch {
				// The run starts as before: its batches wait for the keyring.
				return null;
			}
		},
		waitForAny: (timeoutMs) =>
			broker.waitForServices("signer", timeoutMs).then(
				() => undefined,
				() => undefined,
			),
		// keepOnReconnect: after a NATS reconnect the batcher asks the signer instead (src/broker/lost-requests.ts).
		async signBatch(params, { nodeID, timeoutMs, signal }) {
			// The ticket names the node: a batch goes to one signer the batcher chose, or nowhere.
			if (!nodeID) throw new Error(`no signer node to send batch ${params.batchId} to`);
			const batcher = credential();
			const ticket = busChecks.on
				? makeTicket(
						batcher,
						{ ...params, signer: nodeID, ttlMs: timeoutMs },
						Date.now(),
						macKey(batcher),
					)
				: "";
			return call(broker, Actions.signer.signBatch, { ...params, ticket }, {
				timeout: timeoutMs,
				nodeID,
				signal,
				keepOnReconnect: true,
			} as CallingOptions);
		},
		// A check sent on this node's own reconnect must not be failed by that same reconnect.
		inFlight: async (nodeID, timeoutMs) =>
			(
				await call(broker, Actions.signer.inFlight, {}, {
					nodeID,
					timeout: timeoutMs,
					keepOnReconnect: true,
				} as CallingOptions)
			).batchIds,
		maxMessageBytes,
	};
}
