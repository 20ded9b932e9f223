/**
 * api: the HTTP gateway (moleculer-web). REST routes over the other services' actions, JSON
 * errors with a stable `type`, bearer-JWT authentication for writes, live progress as
 * server-sent events, the OpenAPI document, the dashboard, and run-completion webhooks.
 * The logic lives in src/api/; this file wires it up.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import fs from "node:fs";
import path from "node:path";
import type { AddressInfo } from "node:net";
import type { Context, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import ApiGateway from "moleculer-web";
import type { JWK } from "jose";
import { appConfig } from "../src/config";
import { Events, type BatchSignedEvent, type RunDoc, type RunReport, type RunStartedEvent } from "../src/contract";
import { AuthError, bearerToken, loadAuthConfig, requireScope, verifyToken, SCOPE_RUNS_WRITE, type AuthConfig, type Principal } from "../src/api/auth";
import { toApiError } from "../src/api/errors";
import { IdempotencyStore } from "../src/api/idempotency";
import { openApiDocument } from "../src/api/openapi";
import { ProgressStream } from "../src/api/progress-stream";
import { apiOptions, type ApiOptions } from "../src/api/settings";
import { SIGNATURE_HEADER, WebhookSigner, deliver, type WebhookState } from "../src/api/webhook";

export interface ApiSettings {
	port: number;
	ip?: string;
	api: ApiOptions;
	$secureSettings?: string[];
	[key: string]: unknown;
}

interface RunCompletion {
	report: RunReport;
	status?: string;
	error?: string | null;
}

interface ApiVars {
	server: import("node:http").Server;
	authReady: Promise<AuthConfig>;
	webhookSigner: Promise<WebhookSigner>;
	idempotency: IdempotencyStore;
	progress: ProgressStream;
	webhooks: Map<string, WebhookState>;
	/** Recent completions, for a callback registered after its (very short) run already ended. */
	completions: Map<string, RunCompletion>;
	auditInFlight: Promise<unknown> | null;
	shutdown: AbortController;
}

interface ApiMethods {
	authenticate(ctx: Context, route: unknown, req: IncomingMessage): Promise<Principal | null>;
	authorize(ctx: Context<unknown, { user?: Principal | null }>, route: unknown, req: IncomingMessage, res: ServerResponse, alias: { action?: string }): void;
	openEventStream(req: IncomingMessage, res: ServerResponse): Promise<void>;
	registerWebhook(runId: string, url: string): void;
	sendWebhook(runId: string, completion: RunCompletion): Promise<void>;
	[name: string]: (...args: any[]) => any;
}

/** Scopes a token needs per action behind a mutating route. */
const REQUIRED_SCOPES: Record<string, string> = { "api.startRun": SCOPE_RUNS_WRITE };

const JSON_TYPE = /^application\/([\w.+-]+\+)?json\s*(;|$)/i;

/** public/ next to services/ in the sources, or two levels up from dist/services. */
function publicFolder(): string {
	const candidates = [path.resolve(__dirname, "..", "public"), path.resolve(__dirname, "..", "..", "public")];
	return candidates.find(dir => fs.existsSync(path.join(dir, "index.html"))) ?? candidates[0];
}

/** Full settings from options; tests pass port 0 and small limits. */
export function apiSettings(options: ApiOptions): ApiSettings {
	return {
		port: options.port,
		ip: options.ip,
		api: options,
		// Settings travel to every node in INFO packets: the auth secret must not.
		$secureSettings: ["api.authEnv"]
	};
}

function routes(options: ApiOptions) {
	return [
		{
			name: "health",
			path: "/health",
			authentication: false,
			bodyParsers: false,
			mappingPolicy: "restrict",
			aliases: { "GET /live": "api.live", "GET /ready": "api.ready" }
		},
		{
			name: "well-known",
			path: "/.well-known",
			authentication: false,
			bodyParsers: false,
			mappingPolicy: "restrict",
			aliases: { "GET /jwks.json": "api.jwks" }
		},
		{
			name: "writes",
			path: "/api",
			authentication: true,
			authorization: true,
			mappingPolicy: "restrict",
			bodyParsers: { json: { limit: options.bodyLimit, strict: true } },
			// One client cannot start runs in a tight loop; keyed on the socket, not a spoofable header.
			rateLimit: { window: options.startRateLimit.window, limit: options.startRateLimit.limit, headers: true, key: (req: IncomingMessage) => req.socket.remoteAddress ?? "unknown" },
			aliases: { "POST /batcher/start": "api.startRun" },
			onBeforeCall(ctx: Context<unknown, Record<string, unknown>>, _route: unknown, req: IncomingMessage) {
				const header = req.headers["idempotency-key"];
				ctx.meta.idempotencyKey = Array.isArray(header) ? header[0] : header ?? null;
				ctx.meta.requestContentType = req.headers["content-type"] ?? null;
				ctx.meta.requestHasBody = Number(req.headers["content-length"] ?? 0) > 0 || req.headers["transfer-encoding"] !== undefined;
			}
		},
		{
			name: "reads",
			path: "/api",
			authentication: true,
			authorization: true,
			mappingPolicy: "restrict",
			bodyParsers: false,
			aliases: {
				"GET /batcher/status": "batcher.status",
				"GET /runs": "batcher.runs",
				"GET /runs/:id": "api.run",
				"GET /records/:id": "records.get",
				"GET /keys": "keyring.keys",
				"GET /metrics": "metrics.snapshot",
				"GET /audit": "api.audit",
				"GET /openapi.json": "api.openapi",
				"GET /events"(this: ApiMethods & { logger: import("moleculer").Logger }, req: IncomingMessage, res: ServerResponse) {
					this.openEventStream(req, res).catch(err => {
						this.logger.warn(`Event stream failed: ${(err as Error).message}`);
						res.destroy();
					});
				}
			}
		}
	];
}

const ApiService: ServiceSchema<ApiSettings, ApiMethods, ApiVars> & { merged?: (schema: ServiceSchema<ApiSettings>) => void } = {
	name: "api",
	mixins: [ApiGateway as unknown as ServiceSchema],
	settings: apiSettings(apiOptions(appConfig())),

	/** Routes depend on the final settings (tests override limits), so they are built after merging. */
	merged(schema) {
		const settings = schema.settings!;
		Object.assign(settings, {
			routes: routes(settings.api),
			assets: { folder: publicFolder(), options: { index: "index.html", maxAge: 0 } },
			// The event stream stays open: no request timeout, and not tracked, so shutdown does not wait for it.
			rootCallOptions(options: Record<string, unknown>, req: IncomingMessage) {
				if (req.url?.startsWith("/api/events")) Object.assign(options, { timeout: 0, tracking: false });
			},
			log4XXResponses: false,
			logRequest: "debug",
			logResponse: "debug",
			onError(req: IncomingMessage & { $route?: { rateLimit?: { store?: { resetTime?: number } } } }, res: ServerResponse, err: unknown) {
				const { status, body, headers } = toApiError(err, { realm: "record-signer", rateLimitResetAt: req.$route?.rateLimit?.store?.resetTime });
				if (res.headersSent) {
					res.end();
					return;
				}
				for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
				res.setHeader("Content-Type", "application/json; charset=utf-8");
				res.writeHead(status);
				res.end(JSON.stringify(body));
			}
		});
	},

	actions: {
		live: {
			handler() {
				return { status: "live" };
			}
		},

		/** Ready when every required service is reachable and the transporter, if any, is connected. */
		ready: {
			handler(ctx: Context<unknown, Record<string, unknown>>) {
				const available = new Set(this.broker.registry.getServiceList({ onlyAvailable: true }).map(service => service.name));
				const missing = this.settings.api.requiredServices.filter(name => !available.has(name));
				const transit = this.broker.transit as { connected?: boolean } | undefined;
				const transporterConnected = transit ? Boolean(transit.connected) : null;
				const ready = missing.length === 0 && transporterConnected !== false && !this.broker.stopping;
				if (!ready) ctx.meta.$statusCode = 503;
				return { status: ready ? "ready" : "not ready", missingServices: missing, transporter: transit ? { connected: transporterConnected } : null };
			}
		},

		/** The keyring's public keys plus the gateway's webhook key; public data, cacheable. */
		jwks: {
			async handler(ctx: Context<unknown, Record<string, unknown>>) {
				const keyring = await ctx.call<{ keys: JWK[] }>("keyring.jwks");
				const signer = await this.webhookSigner;
				ctx.meta.$responseHeaders = { "Cache-Control": `public, max-age=${this.settings.api.jwksMaxAge}` };
				return { keys: [...keyring.keys, signer.publicJwk] };
			}
		},

		/** POST /api/batcher/start: 202 + Location; an Idempotency-Key replays the same run. */
		startRun: {
			params: {
				batchSize: { type: "any", optional: true },
				callbackUrl: { type: "url", optional: true },
				$$strict: true
			},
			async handler(ctx: Context<{ batchSize?: unknown; callbackUrl?: string }, Record<string, unknown>>) {
				const meta = ctx.meta;
				if (meta.requestHasBody && !JSON_TYPE.test(String(meta.requestContentType ?? "")))
					throw new Errors.MoleculerClientError("The request body must be JSON (Content-Type: application/json)", 415, "UNSUPPORTED_MEDIA_TYPE", { contentType: meta.requestContentType });
				const { batchSize, callbackUrl } = ctx.params;
				const key = typeof meta.idempotencyKey === "string" ? meta.idempotencyKey : null;
				const start = async () => {
					// The key goes to the batcher too, so a store-backed replay can outlive this process.
					const run = await ctx.call<RunDoc, object>("batcher.start", { ...(batchSize === undefined ? {} : { batchSize }), ...(key ? { idempotencyKey: key } : {}) });
					if (callbackUrl) this.registerWebhook(run.runId, callbackUrl);
					return run.runId;
				};
				const principal = meta.user as Principal | null;
				const fingerprint = JSON.stringify({ batchSize: batchSize ?? null, callbackUrl: callbackUrl ?? null, subject: principal?.subject ?? null });
				const { runId, replayed } = key ? await this.idempotency.claim(key, fingerprint, start) : { runId: await start(), replayed: false };
				const run = await ctx.call<RunDoc & { batches?: unknown }, object>("batcher.get", { runId });
				const location = `/api/runs/${encodeURIComponent(runId)}`;
				meta.$statusCode = 202;
				meta.$responseHeaders = { Location: location, ...(key ? { "Idempotency-Key": key, "Idempotent-Replayed": String(replayed) } : {}) };
				return { id: runId, runId, batchSize: run.batchSize, status: run.status, startedAt: run.startedAt, finishedAt: run.finishedAt, replayed, links: { self: location, events: "/api/events" } };
			}
		},

		/** One run (batcher.get) with its webhook deliveries. */
		run: {
			params: { id: { type: "string", min: 1, max: 200 } },
			async handler(ctx: Context<{ id: string }>) {
				const run = await ctx.call<Record<string, unknown>, object>("batcher.get", { runId: ctx.params.id });
				const webhook = this.webhooks.get(ctx.params.id);
				return { ...run, id: ctx.params.id, webhook: webhook ?? null };
			}
		},

		/** The audit verdict over the stores (DESIGN.md section 8); one at a time, it reads everything. */
		audit: {
			// Reading and verifying a whole store outlasts the default request timeout (the key is untyped in 0.15).
			...{ timeout: 0 },
			async handler() {
				if (!this.auditInFlight) {
					this.auditInFlight = (async () => {
						const { collectSnapshot, NATS_DEFAULT_MAX_PAYLOAD } = await import("../src/audit/collect");
						const { audit } = await import("../src/audit/rules");
						return audit(await collectSnapshot(this.broker, this.broker.transit ? { maxPayloadBytes: NATS_DEFAULT_MAX_PAYLOAD } : {}));
					})().finally(() => {
						this.auditInFlight = null;
					});
				}
				return this.auditInFlight;
			}
		},

		openapi: {
			handler() {
				return openApiDocument();
			}
		}
	},

	events: {
		[Events.runStarted](ctx: Context<RunStartedEvent>) {
			this.progress.runStarted(ctx.params);
		},
		[Events.batchSigned](ctx: Context<BatchSignedEvent>) {
			this.progress.batchSigned(ctx.params);
		},
		[Events.runCompleted](ctx: Context<RunCompletion>) {
			this.progress.runCompleted(ctx.params);
			const runId = ctx.params.report.runId;
			this.completions.set(runId, ctx.params);
			if (this.completions.size > 100) this.completions.delete(this.completions.keys().next().value as string);
			if (this.webhooks.get(runId)?.status === "waiting") void this.sendWebhook(runId, ctx.params);
		}
	},

	methods: {
		/** Writes need a valid token; reads only when AUTH_READS=required, but a token sent is always checked. */
		async authenticate(ctx: Context, _route: unknown, req: IncomingMessage): Promise<Principal | null> {
			const config = await this.authReady;
			const token = bearerToken(req.headers.authorization);
			const mutating = req.method !== "GET" && req.method !== "HEAD";
			if (!token) {
				if (mutating || config.reads === "required") throw new AuthError(401, "NO_TOKEN", "A bearer token is required");
				return null;
			}
			return verifyToken(config, token);
		},

		authorize(ctx: Context<unknown, { user?: Principal | null }>, _route: unknown, _req: IncomingMessage, _res: ServerResponse, alias: { action?: string }) {
			const scope = alias.action ? REQUIRED_SCOPES[alias.action] : undefined;
			if (scope && ctx.meta.user) requireScope(ctx.meta.user, scope);
		},

		/** moleculer-web logs every non-4xx as an error; here only real server errors are. */
		errorHandler(req: IncomingMessage, res: ServerResponse, err: Error & { code?: unknown }) {
			const { status } = toApiError(err, { realm: "record-signer" });
			if (status >= 500) this.logger.error(`${req.method} ${req.url} failed:`, err);
			this.sendError(req, res, err);
		},

		async openEventStream(req: IncomingMessage, res: ServerResponse) {
			res.writeHead(200, {
				"Content-Type": "text/event-stream; charset=utf-8",
				"Cache-Control": "no-cache, no-transform",
				// The socket is the stream's own: closed with it, so shutdown never waits on an idle keep-alive.
				Connection: "close",
				// nginx buffers responses by default, which would hold events back.
				"X-Accel-Buffering": "no"
			});
			const client = { write: (chunk: string) => res.write(chunk), end: () => res.end() };
			this.progress.add(client);
			// `res` closes with the connection; `req` may close as soon as its (empty) body is read.
			res.on("close", () => {
				this.progress.remove(client);
				// The server keeps a half-closed socket open until the response ends.
				res.destroy();
			});
			// A client joining mid-run starts from the current figures, not from zero.
			const current = this.progress.current() ?? (await this.broker.call<Record<string, unknown>>("metrics.snapshot").catch(() => null));
			if (current && !res.writableEnded) this.progress.sendTo(client, "progress", current);
		},

		registerWebhook(runId: string, url: string) {
			this.webhooks.set(runId, { url, status: "waiting", attempts: [] });
			const completion = this.completions.get(runId);
			if (completion) void this.sendWebhook(runId, completion);
		},

		async sendWebhook(runId: string, completion: RunCompletion) {
			const state = this.webhooks.get(runId);
			if (!state || state.status !== "waiting") return;
			state.status = "delivering";
			// One body for every attempt, signed once: the receiver can dedupe on its bytes.
			const body = JSON.stringify({ event: Events.runCompleted, runId, status: completion.status ?? "completed", error: completion.error ?? null, report: completion.report });
			const signer = await this.webhookSigner;
			const signature = await signer.sign(body);
			await deliver(state, body, { [SIGNATURE_HEADER]: signature, "X-Webhook-Event": Events.runCompleted, "X-Run-Id": runId }, this.settings.api.webhook, this.shutdown.signal);
			if ((state.status as WebhookState["status"]) === "failed") this.logger.warn(`Webhook for run ${runId} failed after ${state.attempts.length} attempts: ${state.attempts.at(-1)?.error}`);
		}
	},

	created() {
		const options = this.settings.api;
		this.authReady = loadAuthConfig(options.authEnv, options.dataDir);
		this.webhookSigner = WebhookSigner.open(options.dataDir);
		// Settle early so a bad configuration fails the start, not the first request.
		this.authReady.catch(() => undefined);
		this.webhookSigner.catch(() => undefined);
		this.idempotency = new IdempotencyStore();
		this.progress = new ProgressStream(options.progressIntervalMs);
		this.webhooks = new Map();
		this.completions = new Map();
		this.auditInFlight = null;
		this.shutdown = new AbortController();
	},

	async started() {
		const auth = await this.authReady;
		await this.webhookSigner;
		const address = this.server?.address() as AddressInfo | null;
		this.logger.info(`API on port ${address?.port}; auth ${auth.key.alg} (${auth.key.source}${auth.key.source === "file" ? ` ${auth.key.file}` : ""}), reads ${auth.reads}`);
	},

	async stopped() {
		// Runs before the gateway's own stopped hook, which then finds the server closed.
		this.shutdown.abort();
		this.progress.close();
		// The broker's tracking has drained in-flight requests by now; idle or pre-opened
		// keep-alive sockets would otherwise hold close() for their whole keep-alive timeout.
		if (this.server?.listening) {
			const closed = new Promise<void>(resolve => this.server.close(() => resolve()));
			this.server.closeAllConnections();
			await closed;
		}
	}
};

export default ApiService;
