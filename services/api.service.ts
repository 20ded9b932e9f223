/**
 * api: the HTTP gateway (moleculer-web). REST routes over the other services' actions, JSON
 * errors with a stable `type`, bearer-JWT authentication for writes, live progress as
 * server-sent events, the OpenAPI document, the dashboard, and run-completion webhooks.
 * The logic lives in src/api/; this file holds the routes and wires them up.
 */
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { Context, Logger, ServiceBroker, ServiceSchema } from "moleculer";
import ApiGateway from "moleculer-web";
import { authenticateRequest, authorizeAction, AuthError, type Principal } from "../src/api/auth";
import { API_KEY_HEADER } from "../src/api/api-keys";
import { clientAddress, TrustedProxies } from "../src/api/client-address";
import { toApiError } from "../src/api/errors";
import { Gateway } from "../src/api/gateway";
import { latestCheckpointNote, logConsistency, logSummaries } from "../src/api/logs";
import { openApiDocument } from "../src/api/openapi";
import { openEventStream } from "../src/api/progress-stream";
import {
	answerClientError,
	API_REALM,
	gatewaySettings,
	withSecurityHeaders,
	type ApiOptions,
} from "../src/api/settings";
import {
	startRun,
	startRunBodyParams,
	type StartRunBody,
	type StartRunMeta,
} from "../src/api/start-run";
import type { Clock } from "../src/clock";
import { appConfig } from "../src/config";
import {
	Actions,
	call,
	Events,
	logConsistencyParams,
	type BatchSignedEvent,
	type LogConsistencyParams,
	type RunCompletedEvent,
	type RunStartedEvent,
} from "../src/contract";
import { readinessOf } from "../src/broker/health";
import { listen } from "../src/broker/listen";
import { publicWebhookView } from "../src/api/webhook";
import { serviceSettings } from "../src/settings";

interface ApiVars {
	server: import("node:http").Server;
	gateway: Gateway;
}

interface ApiMethods {
	authenticate(ctx: Context, route: unknown, req: IncomingMessage): Promise<Principal | null>;
	authorize(
		ctx: Context<unknown, { user?: Principal | null }>,
		route: unknown,
		req: IncomingMessage,
		res: ServerResponse,
		alias: { action?: string },
	): void;
	errorHandler(req: IncomingMessage, res: ServerResponse, err: Error & { code?: unknown }): void;
	/** moleculer-web's, from the ApiGateway mixin. */
	sendError(req: IncomingMessage, res: ServerResponse, err: Error): void;
	httpHandler(req: IncomingMessage, res: ServerResponse): void;
}

type ApiThis = ApiVars & ApiMethods & { broker: ServiceBroker; logger: Logger };

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
				ctx: Context<unknown, Record<string, unknown>>,
				_route: unknown,
				req: IncomingMessage,
			) {
				const header = req.headers["idempotency-key"];
				ctx.meta.idempotencyKey = Array.isArray(header) ? header[0] : (header ?? null);
				ctx.meta.requestContentType = req.headers["content-type"] ?? null;
				ctx.meta.requestHasBody =
					Number(req.headers["content-length"] ?? 0) > 0 ||
					req.headers["transfer-encoding"] !== undefined;
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
					openEventStream(
						this.gateway.progress,
						clientOf(req),
						res,
						options.eventStreams,
						() => call(this.broker, Actions.metrics.snapshot, {}),
					).catch((err) => {
						this.logger.warn(`Event stream failed: ${(err as Error).message}`);
						res.destroy();
					});
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
export type ApiSchema = ServiceSchema<Record<string, unknown>, ApiMethods, ApiVars>;

export function createApiService(options: ApiOptions, deps: ApiServiceDeps = {}): ApiSchema {
	const schema: ApiSchema = {
		name: "api",
		mixins: [ApiGateway],
		settings: {
			// The server is made and bound here (created, started): a taken port gets a clear
			// message or a fallback (src/broker/listen.ts), where moleculer-web would exit the process.
			server: false,
			port: options.port,
			ip: options.ip,
			api: options,
			// Settings travel to every node in INFO packets: the auth secret must not.
			$secureSettings: ["api.authEnv"],
			routes: routes(options),
			...gatewaySettings(),
		},

		actions: {
			live: { handler: () => ({ status: "live" }) },

			/** The node's readiness (src/broker/health.ts) plus every service the routes need. */
			ready: {
				handler(ctx: Context<unknown, Record<string, unknown>>) {
					const report = readinessOf(this.broker)?.(options.requiredServices);
					if (!report || report.status !== "ready") ctx.meta.$statusCode = 503;
					return (
						report ?? {
							status: "not ready",
							notReady: ["no health middleware on this broker"],
						}
					);
				},
			},

			/** The keyring's public keys plus the gateway's webhook key; public data, cacheable. */
			jwks: {
				async handler(ctx: Context<unknown, Record<string, unknown>>) {
					const keyring = await call(ctx, Actions.keyring.jwks, {});
					const signer = await this.gateway.webhookSigner;
					ctx.meta.$responseHeaders = {
						"Cache-Control": `public, max-age=${options.jwksMaxAge}`,
					};
					return { keys: [...keyring.keys, signer.publicJwk] };
				},
			},

			/** POST /api/batcher/start: 202 + Location; an Idempotency-Key replays the same run. */
			startRun: {
				params: startRunBodyParams,
				handler(ctx: Context<StartRunBody, StartRunMeta>) {
					return startRun(ctx, this.gateway.webhooks);
				},
			},
			/** POST /api/runs/:id/cancel: 202; the run stops dispatching, its batches in flight finish, then it is `cancelled`. */
			cancelRun: {
				params: { id: { type: "string", min: 1, max: 200 } },
				async handler(ctx: Context<{ id: string }, StartRunMeta>) {
					const run = await call(ctx, Actions.batcher.cancel, { runId: ctx.params.id });
					const location = `/api/runs/${encodeURIComponent(run.runId)}`;
					ctx.meta.$statusCode = 202;
					ctx.meta.$responseHeaders = { Location: location };
					return { id: run.runId, ...run, links: { self: location } };
				},
			},
			/** One run (batcher.get) with its webhook deliveries. */
			run: {
				params: { id: { type: "string", min: 1, max: 200 } },
				async handler(ctx: Context<{ id: string }>) {
					const run = await call(ctx, Actions.batcher.get, { runId: ctx.params.id });
					return {
						...run,
						id: ctx.params.id,
						webhook: publicWebhookView(this.gateway.webhooks.get(ctx.params.id)),
					};
				},
			},

			/**
			 * The audit verdict over the stores (docs/design.md §9): the last one for anyone, a fresh
			 * one (`?refresh=true`) only with a token. Reading everything outlasts the default timeout.
			 */
			audit: {
				...{ timeout: 0 },
				params: { refresh: { type: "boolean", optional: true, convert: true } },
				handler(ctx: Context<{ refresh?: boolean }, { user?: Principal | null }>) {
					if (ctx.params.refresh && !ctx.meta.user)
						throw new AuthError(
							401,
							"NO_TOKEN",
							"A fresh audit (refresh=true) needs a bearer token or an API key; without one, the last verdict is served",
						);
					return this.gateway.audit.current(ctx.params.refresh === true);
				},
			},

			openapi: { handler: () => openApiDocument() },

			/** The transparency logs' verifier keys and latest checkpoint sizes (docs/design.md §8.4). */
			logs: {
				handler(ctx: Context) {
					return logSummaries(ctx);
				},
			},
			/** A log's latest checkpoint, as the C2SP signed note itself. */
			logCheckpoint: {
				params: { log: { type: "string", min: 1, max: 100 } },
				async handler(ctx: Context<{ log: string }, Record<string, unknown>>) {
					const note = await latestCheckpointNote(ctx, ctx.params.log);
					ctx.meta.$responseType = "text/plain; charset=utf-8";
					ctx.meta.$responseHeaders = { "Cache-Control": "no-cache" };
					return note;
				},
			},
			logConsistency: {
				params: { log: { type: "string", min: 1, max: 100 }, ...logConsistencyParams },
				handler(ctx: Context<LogConsistencyParams & { log: string }>) {
					return logConsistency(ctx, ctx.params.log, ctx.params.from, ctx.params.to);
				},
			},
		},

		events: {
			[Events.runStarted](ctx: Context<RunStartedEvent>) {
				this.gateway.progress.runStarted(ctx.params);
			},
			[Events.batchSigned](ctx: Context<BatchSignedEvent>) {
				this.gateway.progress.batchSigned(ctx.params);
			},
			[Events.runCompleted](ctx: Context<RunCompletedEvent>) {
				this.gateway.progress.runCompleted(ctx.params);
				this.gateway.webhooks.runCompleted(ctx.params);
				this.gateway.audit.invalidate();
			},
		},

		methods: {
			/** Writes need a valid token; reads only when AUTH_READS=required, but a token sent is always checked. */
			async authenticate(
				_ctx: Context,
				_route: unknown,
				req: IncomingMessage,
			): Promise<Principal | null> {
				const apiKey = req.headers[API_KEY_HEADER];
				return authenticateRequest(
					await this.gateway.auth,
					req.method,
					req.headers.authorization,
					Array.isArray(apiKey) ? apiKey[0] : apiKey,
					this.gateway.apiKeys,
				);
			},

			authorize(
				ctx: Context<unknown, { user?: Principal | null }>,
				_route: unknown,
				_req: IncomingMessage,
				_res: ServerResponse,
				alias: { action?: string },
			) {
				authorizeAction(ctx.meta.user, alias.action);
			},

			/** moleculer-web logs every non-4xx as an error; here only real server errors are. */
			errorHandler(
				req: IncomingMessage,
				res: ServerResponse,
				err: Error & { code?: unknown },
			) {
				const { status } = toApiError(err, { realm: API_REALM });
				if (status >= 500) this.logger.error(`${req.method} ${req.url} failed:`, err);
				this.sendError(req, res, err);
			},
		},

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
			const auth = await this.gateway.ready();
			this.logger.info(
				`API on http://${options.ip ?? "0.0.0.0"}:${address.port}; auth ${auth.key.alg} (${auth.key.source}${auth.key.source === "file" ? ` ${auth.key.file}` : ""}), reads ${auth.reads}${options.trustedProxies.length ? `; X-Forwarded-For read from ${options.trustedProxies.join(", ")}` : ""}`,
			);
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
