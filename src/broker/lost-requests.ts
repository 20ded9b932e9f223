/**
 * Requests whose replies will not come, ended now rather than at their timeout, and none left
 * behind to keep a stopping node waiting.
 *
 * Over NATS a request is lost when it is published while its target is not subscribed (the
 * target has not reconnected yet after a nats-server restart), and a reply is lost when its
 * caller is not. So:
 * - When this node reconnects, it fails its own requests sent before (their replies may have
 *   gone to a server that is gone), and tells every node on a subject of its own. Its
 *   subscriptions are back before that notice leaves (nats.js sends them first on reconnect).
 * - When another node's notice arrives, this node fails its requests to that node sent before,
 *   and its balanced requests (naming no node) to an action that node serves: any that
 *   reached the server while the node was away was dropped. (One that reached it
 *   after is failed too; every caller here treats a failed call as "maybe done": the batcher
 *   settles the batch from its stored signatures, a lease not released expires.)
 * - When another node is gone (its goodbye, or its heartbeats missed), Moleculer fails the
 *   requests sent to it by name; this fails the balanced ones (naming no node) sent while only
 *   nodes now gone offered their action: one of them took it, and none will answer. A
 *   `keyring.acquire` waiting at a keyring killed with -9 would otherwise wait out its whole
 *   timeout (ACQUIRE_WAIT_MS + 10 s, 70 s by default), a new keyring serving in seconds.
 * - Calls marked `keepOnReconnect` are not failed: their caller checks on them itself (the
 *   batcher asks the signer whether it has the batch) and hears of the reconnect as the local
 *   event `$transporter.peerReconnected`.
 * - A call given an AbortSignal is failed with RequestAbortedError when it aborts; a call past
 *   its timeout is settled too. Moleculer's own timeout answers the caller but leaves the
 *   request's context tracked, and a stopping node would wait for it (GracefulStopTimeoutError).
 */
import { Errors, type Middleware, type ServiceBroker } from "moleculer";
import { natsClient, watchNatsStatus } from "./nats-status";

interface PendingRequest {
	nodeID: string;
	action?: { name: string };
	reject(err: Error): void;
	ctx?: { options?: RequestControl };
}

interface Transit {
	pendingRequests: Map<string, PendingRequest>;
	removePendingRequest(id: string): void;
	tx?: { prefix?: string };
}

/** What of nats.js this middleware uses beside the status events. */
interface NatsPubSub {
	publish(subject: string, data: Uint8Array): void;
	subscribe(
		subject: string,
		options: { callback(err: Error | null, msg: { data: Uint8Array }): void },
	): unknown;
}

/** Options of a call this middleware reads (beside Moleculer's own). */
export interface RequestControl {
	/** Aborting it fails the call at once. */
	signal?: AbortSignal;
	/** A reconnect does not fail it: its caller checks on it. */
	keepOnReconnect?: boolean;
}

/** Local event: another node reconnected to NATS; requests sent to it before may be lost. */
export const PEER_RECONNECTED = "$transporter.peerReconnected";

export class RequestAbortedError extends Errors.MoleculerRetryableError {
	/** `nodeID` is null for a call balanced by NATS (it names no node). */
	constructor(action: string, nodeID: string | null, reason: string) {
		super(
			`Request '${action}'${nodeID ? ` to '${nodeID}'` : ""} was given up: ${reason}`,
			503,
			"REQUEST_ABORTED",
			{ action, nodeID },
		);
	}
}

function transitOf(broker: ServiceBroker): Transit | undefined {
	return broker.transit as unknown as Transit | undefined;
}

function reasonOf(signal: AbortSignal): string {
	const reason = signal.reason as unknown;
	return reason instanceof Error ? reason.message : String(reason ?? "aborted");
}

/** Fails the pending requests `which` selects, except those whose caller checks on them; returns their target nodes. */
function failPending(
	transit: Transit,
	which: (request: PendingRequest, id: string) => boolean,
): Set<string> {
	const nodes = new Set<string>();
	for (const [id, request] of [...transit.pendingRequests]) {
		if (request.ctx?.options?.keepOnReconnect || !which(request, id)) continue;
		nodes.add(request.nodeID);
		transit.removePendingRequest(id);
		request.reject(
			new Errors.RequestRejectedError({
				action: request.action?.name ?? "?",
				nodeID: request.nodeID,
			}),
		);
	}
	return nodes;
}

/** The endpoints of `action` in the registry this node keeps, one per node that offers it. */
function endpointsOf(
	broker: ServiceBroker,
	action: string,
): Array<{ id: string; available?: boolean }> {
	const list = broker.registry.getActionEndpoints(action) as unknown as
		{ endpoints?: Array<{ id: string; available?: boolean }> } | undefined;
	return list?.endpoints ?? [];
}

/** `nodeID` has `action` (by the registry this node keeps). */
function serves(broker: ServiceBroker, nodeID: string, action: string | undefined): boolean {
	return action ? endpointsOf(broker, action).some((endpoint) => endpoint.id === nodeID) : false;
}

/** The nodes that offer `action` now, by this node's registry: where a balanced request may go. */
function serversOf(broker: ServiceBroker, action: string): string[] {
	return endpointsOf(broker, action)
		.filter((endpoint) => endpoint.available !== false)
		.map((endpoint) => endpoint.id);
}

/** Whether `nodeID` is a node this node's registry counts available. */
function available(broker: ServiceBroker, nodeID: string): boolean {
	const node = (
		broker.registry as unknown as {
			nodes: { get(id: string): { available?: boolean } | undefined };
		}
	).nodes.get(nodeID);
	return Boolean(node?.available);
}

/** What the middleware reads of a remote call's context. */
interface RemoteCall {
	id: string;
	nodeID: string | null;
	broker: ServiceBroker;
	options: RequestControl & { timeout?: number };
}

export function FailLostRequestsMiddleware(): Middleware {
	/** A balanced request in flight (by id): the nodes that offered its action when it was sent. */
	const sentAmong = new Map<string, string[]>();
	return {
		name: "FailLostRequests",
		remoteAction(next: (ctx: RemoteCall) => Promise<unknown>, action: { name: string }) {
			return function settled(ctx: RemoteCall) {
				const signal = ctx.options?.signal;
				if (signal?.aborted)
					return Promise.reject(
						new RequestAbortedError(action.name, ctx.nodeID, reasonOf(signal)),
					);
				if (!ctx.nodeID) sentAmong.set(ctx.id, serversOf(ctx.broker, action.name));
				const result = next(ctx).finally(() => sentAmong.delete(ctx.id));
				const transit = transitOf(ctx.broker);
				const request = transit?.pendingRequests.get(ctx.id);
				if (!transit || !request) return result;
				const giveUp = (err: Error) => {
					if (transit.pendingRequests.get(ctx.id) === request)
						transit.removePendingRequest(ctx.id);
					request.reject(err);
				};
				// Just after Moleculer's own timeout has answered the caller.
				const timeoutMs = ctx.options?.timeout ?? 0;
				const timer =
					timeoutMs > 0
						? setTimeout(
								() =>
									giveUp(
										new Errors.RequestTimeoutError({
											action: action.name,
											nodeID: ctx.nodeID,
										}),
									),
								timeoutMs + 100,
							)
						: null;
				timer?.unref();
				const onAbort = () =>
					giveUp(new RequestAbortedError(action.name, ctx.nodeID, reasonOf(signal!)));
				signal?.addEventListener("abort", onAbort, { once: true });
				return result.finally(() => {
					if (timer) clearTimeout(timer);
					signal?.removeEventListener("abort", onAbort);
				});
			};
		},
		started(broker: ServiceBroker) {
			const transit = transitOf(broker);
			const client = natsClient(broker) as unknown as NatsPubSub | null;
			if (!transit || !client) return;
			// A balanced request went to one of the nodes offering its action then: once every one
			// of them is gone, nobody will answer it, whichever node offers the action now.
			broker.localBus.on("$node.disconnected", ({ node }: { node: { id: string } }) => {
				const failed = failPending(transit, (request, id) => {
					const among = sentAmong.get(id);
					return (
						!request.nodeID &&
						among !== undefined &&
						among.includes(node.id) &&
						among.every((nodeID) => !available(broker, nodeID))
					);
				});
				if (failed.size)
					broker.logger.warn(
						`Node '${node.id}' is gone: failing the requests only it could have taken; they will not be answered`,
					);
			});
			const subject = `${transit.tx?.prefix ?? "MOL"}.X-RECONNECTED`;
			client.subscribe(subject, {
				callback: (err, msg) => {
					if (err) return;
					let nodeID: unknown;
					try {
						nodeID = (
							JSON.parse(Buffer.from(msg.data).toString("utf8")) as {
								nodeID?: unknown;
							}
						).nodeID;
					} catch {
						return;
					}
					if (typeof nodeID !== "string" || nodeID === broker.nodeID) return;
					const failed = failPending(
						transit,
						(request) =>
							request.nodeID === nodeID ||
							(!request.nodeID &&
								serves(broker, nodeID as string, request.action?.name)),
					);
					if (failed.size)
						broker.logger.warn(
							`Node '${nodeID}' reconnected to NATS: failing the requests sent to it before; they may have been dropped while it was away`,
						);
					void broker.broadcastLocal(PEER_RECONNECTED, { nodeID });
				},
			});
			watchNatsStatus(broker, (type) => {
				if (type !== "reconnect") return;
				client.publish(subject, Buffer.from(JSON.stringify({ nodeID: broker.nodeID })));
				const nodes = failPending(transit, () => true);
				if (nodes.size)
					broker.logger.warn(
						`Transporter reconnected: failing the requests in flight to ${[...nodes].join(", ")}; their replies may be lost`,
					);
			});
		},
	} as unknown as Middleware;
}
