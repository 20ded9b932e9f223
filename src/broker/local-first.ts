/**
 * With `disableBalancer` (src/broker/broker-options.ts: one NATS subject per action, so NATS users can
 * be given per-action permissions), Moleculer sends every call naming no node through NATS,
 * even to a service of the same process: slower, and lost when it is sent before the service's
 * own subscription is in place (a node that calls itself right after starting). This middleware
 * runs such a call here instead, as the built-in balancer would with `preferLocal`.
 */
import type { Middleware, ServiceBroker } from "moleculer";

interface Endpoint {
	local: boolean;
	action: { handler(ctx: unknown): Promise<unknown> };
}

interface CallContext {
	nodeID: string | null;
	endpoint?: Endpoint;
	params: unknown;
	options: Record<string, unknown>;
	broker: ServiceBroker;
}

interface EndpointList {
	hasLocal(): boolean;
}

export function LocalFirstMiddleware(): Middleware {
	return {
		name: "LocalFirst",
		remoteAction(next: (ctx: CallContext) => Promise<unknown>, action: { name: string }) {
			return function localFirst(ctx: CallContext) {
				if (ctx.endpoint?.local) {
					ctx.nodeID = ctx.broker.nodeID;
					return ctx.endpoint.action.handler(ctx);
				}
				if (!ctx.nodeID) {
					const endpoints = (
						ctx.broker.registry as unknown as {
							getActionEndpoints(name: string): EndpointList | null;
						}
					).getActionEndpoints(action.name);
					if (endpoints?.hasLocal())
						return ctx.broker.call(action.name, ctx.params as object, {
							...ctx.options,
							nodeID: ctx.broker.nodeID,
							parentCtx: ctx as never,
						});
				}
				return next(ctx);
			};
		},
	} as unknown as Middleware;
}
