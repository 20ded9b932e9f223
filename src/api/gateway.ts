/**
 * The gateway's own state beside moleculer-web: its token configuration and API keys, its
 * webhook signing key and deliveries, the live progress stream and the audit verdict. Created with the
 * service, ready once the keys are loaded, closed before the HTTP server.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { JWK } from "jose";
import type { ServiceBroker } from "moleculer";
import { systemClock, type Clock } from "../clock";
import { Actions, call, type Caller, type RunCompletedEvent } from "../contract";
import { API_KEY_HEADER, ApiKeyVerifier } from "./api-keys";
import { AuditVerdict, type AuditAnswer } from "./audit-verdict";
import {
	authenticateRequest,
	AuthError,
	loadAuthConfig,
	type AuthConfig,
	type Principal,
} from "./auth";
import { ensurePrivateDir } from "../private-files";
import { openEventStream, ProgressStream } from "./progress-stream";
import type { ApiOptions, ResponseMeta } from "./settings";
import { SubmissionCallbacks } from "./submission-callbacks";
import { SubmitCredential } from "./submit-records";
import { WebhookRegistry, WebhookSigner } from "./webhook";

interface GatewayLogger {
	warn(...args: unknown[]): void;
}

export class Gateway {
	readonly auth: Promise<AuthConfig>;
	readonly webhookSigner: Promise<WebhookSigner>;
	readonly webhooks: WebhookRegistry;
	readonly progress: ProgressStream;
	readonly audit: AuditVerdict;
	readonly apiKeys: ApiKeyVerifier;
	/** What proves POST /api/records's submissions to records. */
	readonly submitCredential: SubmitCredential;
	/** Submissions with a callback, until their records are all signed. */
	readonly submissions: SubmissionCallbacks;

	constructor(
		private readonly options: ApiOptions,
		broker: ServiceBroker,
		private readonly logger: GatewayLogger,
		clock?: Clock,
	) {
		// DATA_DIR 0700 before the secrets go in (tightened, and said so, if an earlier version made it 0755).
		if (options.dataDir) ensurePrivateDir(options.dataDir, (line) => logger.warn(line));
		this.auth = loadAuthConfig(options.authEnv, options.dataDir);
		this.webhookSigner = WebhookSigner.open(options.dataDir);
		// Settled at once, so a bad configuration fails the start (`ready`), not the first request.
		this.auth.catch(() => undefined);
		this.webhookSigner.catch(() => undefined);
		this.webhooks = new WebhookRegistry(
			this.webhookSigner,
			options.webhook,
			(id, state) =>
				logger.warn(
					`Webhook for ${id.startsWith("sub-") ? "submission" : "run"} ${id} failed after ${state.attempts.length} attempts: ${state.attempts.at(-1)?.error}`,
				),
			clock,
		);
		this.submissions = new SubmissionCallbacks(
			this.webhooks,
			async (ids) =>
				(await call(broker, Actions.records.unsignedAmong, { ids })).records.map(
					(r) => r.id,
				),
			clock ?? systemClock,
			logger,
		);
		this.progress = new ProgressStream(options.progressIntervalMs);
		this.submitCredential = new SubmitCredential(options.submitCredential);
		this.audit = new AuditVerdict(broker, options.auditCacheMs);
		this.apiKeys = new ApiKeyVerifier(options.apiKeysFile);
	}

	/** Resolves with the token configuration once every key has loaded; rejects on a bad one. */
	async ready(): Promise<AuthConfig> {
		await this.webhookSigner;
		return this.auth;
	}

	/** A run ended: its progress stream, its webhook, and the audit verdict, which is stale now. */
	runCompleted(event: RunCompletedEvent): void {
		this.progress.runCompleted(event);
		this.webhooks.runCompleted(event);
		this.audit.invalidate();
	}

	/** What the gateway says when it listens on `port`: its auth and whom it trusts for client addresses. */
	describe(port: number, auth: AuthConfig): string {
		const { ip, trustedProxies } = this.options;
		const key = `${auth.key.source}${auth.key.source === "file" ? ` ${auth.key.file}` : ""}`;
		return `API on http://${ip ?? "0.0.0.0"}:${port}; auth ${auth.key.alg} (${key}), reads ${auth.reads}${trustedProxies.length ? `; X-Forwarded-For read from ${trustedProxies.join(", ")}` : ""}`;
	}

	/** Writes need a valid token or API key; reads only when AUTH_READS=required, but one sent is always checked. */
	async authenticate(req: IncomingMessage): Promise<Principal | null> {
		const apiKey = req.headers[API_KEY_HEADER];
		return authenticateRequest(
			await this.auth,
			req.method,
			req.headers.authorization,
			Array.isArray(apiKey) ? apiKey[0] : apiKey,
			this.apiKeys,
		);
	}

	/** The keyring's public keys plus the gateway's webhook key. */
	async jwks(caller: Caller): Promise<{ keys: JWK[] }> {
		const keyring = await call(caller, Actions.keyring.jwks, {});
		const signer = await this.webhookSigner;
		return { keys: [...keyring.keys, signer.publicJwk] };
	}

	/** The last audit verdict for anyone; a fresh one (`refresh`) only for a caller with a token or an API key. */
	auditFor(refresh: boolean, user: Principal | null | undefined): Promise<AuditAnswer> {
		if (refresh && !user)
			throw new AuthError(
				401,
				"NO_TOKEN",
				"A fresh audit (refresh=true) needs a bearer token or an API key; without one, the last verdict is served",
			);
		return this.audit.current(refresh);
	}

	/** GET /api/events for the client at `address`; a stream that fails is logged and its socket ended. */
	streamEvents(address: string, res: ServerResponse, current: () => Promise<unknown>): void {
		openEventStream(this.progress, address, res, this.options.eventStreams, current).catch(
			(err) => {
				this.logger.warn(`Event stream failed: ${(err as Error).message}`);
				res.destroy();
			},
		);
	}

	/**
	 * Ends webhook deliveries and event streams, then closes `server` without waiting on idle
	 * keep-alive sockets (the broker has drained requests in flight by then).
	 */
	async close(server: Server | undefined): Promise<void> {
		this.webhooks.close();
		this.submissions.close();
		this.progress.close();
		if (!server?.listening) return;
		const closed = new Promise<void>((resolve) => server.close(() => resolve()));
		server.closeAllConnections();
		await closed;
	}
}

/** GET /health/ready: the node's readiness (src/broker/health.ts) over `required`; 503 unless ready. */
export function readinessAnswer<R extends { status: string }>(
	report: R | null | undefined,
	meta: ResponseMeta,
): R | { status: "not ready"; notReady: string[] } {
	if (!report || report.status !== "ready") meta.$statusCode = 503;
	return report ?? { status: "not ready", notReady: ["no health middleware on this broker"] };
}
