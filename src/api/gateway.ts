/**
 * The gateway's own state beside moleculer-web: its token configuration and API keys, its
 * webhook signing key and deliveries, the live progress stream and the audit verdict. Created with the
 * service, ready once the keys are loaded, closed before the HTTP server.
 */
import type { Server } from "node:http";
import type { ServiceBroker } from "moleculer";
import type { Clock } from "../clock";
import { ApiKeyVerifier } from "./api-keys";
import { AuditVerdict } from "./audit-verdict";
import { loadAuthConfig, type AuthConfig } from "./auth";
import { ensurePrivateDir } from "../private-files";
import { ProgressStream } from "./progress-stream";
import type { ApiOptions } from "./settings";
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

	constructor(options: ApiOptions, broker: ServiceBroker, logger: GatewayLogger, clock?: Clock) {
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
			(runId, state) =>
				logger.warn(
					`Webhook for run ${runId} failed after ${state.attempts.length} attempts: ${state.attempts.at(-1)?.error}`,
				),
			clock,
		);
		this.progress = new ProgressStream(options.progressIntervalMs);
		this.audit = new AuditVerdict(broker, options.auditCacheMs);
		this.apiKeys = new ApiKeyVerifier(options.apiKeysFile);
	}

	/** Resolves with the token configuration once every key has loaded; rejects on a bad one. */
	async ready(): Promise<AuthConfig> {
		await this.webhookSigner;
		return this.auth;
	}

	/**
	 * Ends webhook deliveries and event streams, then closes `server` without waiting on idle
	 * keep-alive sockets (the broker has drained requests in flight by then).
	 */
	async close(server: Server | undefined): Promise<void> {
		this.webhooks.close();
		this.progress.close();
		if (!server?.listening) return;
		const closed = new Promise<void>((resolve) => server.close(() => resolve()));
		server.closeAllConnections();
		await closed;
	}
}
