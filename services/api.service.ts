/**
 * api: the HTTP gateway (moleculer-web). REST routes over the other services' actions, JSON
 * errors with a stable `type`, bearer-JWT authentication for writes, live progress as
 * server-sent events, the OpenAPI document, the dashboard, and run-completion webhooks.
 * The logic lives in src/api/; this file holds the routes and wires them up.
 */
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { Context, Logger, ServiceBroker, ServiceSchema } from "moleculer";
import ApiGateway from "moleculer-web";
import { gatewayActions } from "../src/api/actions";
import { authorizeAction } from "../src/api/auth";
import { clientAddress, TrustedProxies } from "../src/api/client-address";
import { toApiError } from "../src/api/errors";
import { Gateway } from "../src/api/gateway";
import {
	answerClientError,
	API_REALM,
	gatewaySettings,
	withSecurityHeaders,
	type ApiOptions,
	type GatewayMethods,
} from "../src/api/settings";
import { refuseArrayBody, startRunRequestMeta, type StartRunMeta } from "../src/api/start-run";
import type { Clock } from "../src/clock";
import { appConfig } from "../src/config";
import { Actions, call, Events, type EventMap } from "../src/contract";
import { listen } from "../src/broker/listen";
import { serviceSettings } from "../src/settings";

interface ApiVars {
	server: import("node:http").Server;
	gateway: Gateway;
}

type ApiThis = ApiVars & GatewayMethods & { broker: ServiceBroker; logger: Logger };

function routes(options: ApiOptions) {
	// One client, for the rate limit and the event streams alike: the peer, or behind a trusted proxy the address it forwarded.
	const trusted = new TrustedProxies(options.trustedProxies);
	const clientOf = (req: IncomingMessage) => clientAddress(req, trusted);
	return [
		{
			name: "health",
			path: "/health",
			authentication: false,
			bodyParsers: false,
			mappingPolicy: "restrict",
			aliases: { "GET /live": "api.live", "GET /ready": "api.ready" },
		},
		{
			name: "well-known",
			path: "/.well-known",
			authentication: false,
			bodyParsers: false,
			mappingPolicy: "restrict",
			aliases: { "GET /jwks.json": "api.jwks" },
		},
		{
			name: "writes",
			path: "/api",
			authentication: true,
			authorization: true,
			mappingPolicy: "restrict",
			bodyParsers: { json: { limit: options.bodyLimit, strict: true } },
			// One client cannot start runs in a tight loop; keyed on the client address, which X-Forwarded-For sets only from a trusted proxy.
			rateLimit: {
				window: options.startRateLimit.window,
				limit: options.startRateLimit.limit,
				headers: true,
				key: clientOf,
			},
			aliases: {
				"POST /batcher/start": "api.startRun",
				"POST /runs/:id/cancel": "api.cancelRun",
			},
			onBeforeCall(
				ctx: Context<unknown, StartRunMeta>,
				_route: unknown,
				req: IncomingMessage,
			) {
				refuseArrayBody(req, '{ "batchSize": 300 }');
				Object.assign(ctx.meta, startRunRequestMeta(req));
			},
		},
		{
			name: "submissions",
			path: "/api",
			authentication: true,
			authorization: true,
			mappingPolicy: "restrict",
			// Up to 1,000 records a request; no rate limit: a stream of submissions is what this route is for.
			bodyParsers: { json: { limit: options.submitBodyLimit, strict: true } },
			aliases: { "POST /records": "api.submitRecords" },
			onBeforeCall(
				ctx: Context<unknown, StartRunMeta>,
				_route: unknown,
				req: IncomingMessage,
			) {
				refuseArrayBody(req, '{ "records": [{ "id": "...", "data": "..." }] }');
				Object.assign(ctx.meta, startRunRequestMeta(req));
			},
		},
		{
			name: "reads",
			path: "/api",
			authentication: true,
			authorization: true,
			mappingPolicy: "restrict",
			bodyParsers: false,
			aliases: {
				"GET /batcher/status": Actions.batcher.status,
				"GET /runs": Actions.batcher.runs,
				"GET /runs/:id": "api.run",
				"GET /records": Actions.records.list,
				"GET /records/:id": Actions.records.get,
				"GET /records/:id/proof": Actions.records.inclusionProof,
				"GET /logs": "api.logs",
				"GET /logs/:log/checkpoint": "api.logCheckpoint",
				"GET /logs/:log/consistency": "api.logConsistency",
				"GET /keys": Actions.keyring.keys,
				"GET /metrics": Actions.metrics.snapshot,
				"GET /audit": "api.audit",
				"GET /openapi.json": "api.openapi",
				"GET /events"(this: ApiThis, req: IncomingMessage, res: ServerResponse) {
					this.gateway.streamEvents(clientOf(req), res, () =>
						call(this.broker, Actions.metrics.snapshot, {}),
					);
				},
			},
		},
	];
}

/** What a test may give the gateway besides its options: a clock it moves by hand (webhook backoff). */
export interface ApiServiceDeps {
	clock?: Clock;
}

/** The schema, typed for its own settings, methods and vars. */
export type ApiSchema = ServiceSchema<Record<string, unknown>, GatewayMethods, ApiVars>;

export function createApiService(options: ApiOptions, deps: ApiServiceDeps = {}): ApiSchema {
	const schema: ApiSchema = {
		name: "api",
		mixins: [ApiGateway],
		settings: { ...gatewaySettings(options), routes: routes(options) },

		actions: gatewayActions(options),

		events: {
			[Events.runStarted](ctx: Context<EventMap["run.started"]>) {
				this.gateway.progress.runStarted(ctx.params);
			},
			[Events.batchSigned](ctx: Context<EventMap["batch.signed"]>) {
				this.gateway.progress.batchSigned(ctx.params);
			},
			[Events.recordsArrived](ctx: Context<EventMap["records.arrived"]>) {
				this.gateway.progress.recordsArrived(ctx.params.stored);
			},
			[Events.runCompleted](ctx: Context<EventMap["run.completed"]>) {
				this.gateway.runCompleted(ctx.params);
			},
		},

		methods: {
			/** Writes need a valid token; reads only when AUTH_READS=required, but a token sent is always checked. */
			authenticate(_ctx, _route, req) {
				return this.gateway.authenticate(req);
			},
			authorize(ctx, _route, _req, _res, alias) {
				authorizeAction(ctx.meta.user, alias.action);
			},
			/** moleculer-web logs every non-4xx as an error; here only real server errors are. */
			errorHandler(req, res, err) {
				const { status } = toApiError(err, { realm: API_REALM });
				if (status >= 500) this.logger.error(`${req.method} ${req.url} failed:`, err);
				this.sendError(req, res, err);
			},
		} satisfies Partial<GatewayMethods> & ThisType<ApiThis>,

		created() {
			this.gateway = new Gateway(options, this.broker, this.logger, deps.clock);
			this.server = http.createServer(withSecurityHeaders(this.httpHandler));
			this.server.on("clientError", answerClientError);
		},

		async started() {
			const address = await listen(
				this.server,
				{ port: options.port, variable: "PORT", explicit: options.portSet ?? true },
				"API gateway",
				(line) => this.logger.warn(line),
				options.ip,
			);
			this.logger.info(this.gateway.describe(address.port, await this.gateway.ready()));
		},

		async stopped() {
			// Runs before the gateway's own stopped hook, which then finds the server closed.
			await this.gateway.close(this.server);
		},
	};
	return schema;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) => createApiService(serviceSettings(appConfig()).api);
