/**
 * The api service's settings from the validated configuration and the AUTH_* variables.
 * The environment comes in as a parameter: src/config.ts stays the one reader of it.
 */
import fs from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import type { AppConfig } from "../config";
import { toApiError } from "./errors";
import type { StreamLimits } from "./progress-stream";
import { DEFAULT_DELIVERY, type DeliveryOptions } from "./webhook";

/** The realm of the gateway's Bearer challenges. */
export const API_REALM = "record-signer";

export interface ApiOptions {
	port: number;
	/** PORT was set by the user: taken, it is an error; otherwise the gateway falls back to a free port (src/listen.ts). */
	portSet?: boolean;
	/** Interface to bind; undefined = all. */
	ip?: string;
	dataDir: string;
	/** The AUTH_* variables, read by src/api/auth.ts when the service starts. */
	authEnv: Record<string, string | undefined>;
	/** POST /api/batcher/start per client IP. */
	startRateLimit: { window: number; limit: number };
	/** Largest accepted JSON body (body-parser syntax). */
	bodyLimit: string;
	/** Minimum gap between two SSE progress messages. */
	progressIntervalMs: number;
	webhook: DeliveryOptions;
	/** What GET /health/ready waits for. */
	requiredServices: string[];
	/** Cache-Control max-age of the JWKS, seconds. */
	jwksMaxAge: number;
	/** GET /api/events streams open at once, per client address and in total. */
	eventStreams: StreamLimits;
	/** Where the API keys are (src/api/api-keys.ts); null: none. */
	apiKeysFile: string | null;
	/** GET /api/audit without a token: the last verdict, recomputed at most this often. */
	auditCacheMs: number;
}

export const AUTH_ENV_NAMES = ["AUTH_SECRET", "AUTH_PUBLIC_KEY", "AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_READS"] as const;

export function apiOptions(config: AppConfig, env: Record<string, string | undefined> = config.authEnv): ApiOptions {
	return {
		port: config.port,
		portSet: config.explicitPorts.port,
		dataDir: config.dataDir,
		authEnv: Object.fromEntries(AUTH_ENV_NAMES.map(name => [name, env[name]])),
		startRateLimit: { window: 60_000, limit: 10 },
		bodyLimit: "16kb",
		progressIntervalMs: 250,
		webhook: { ...DEFAULT_DELIVERY, allowPrivate: config.webhookAllowPrivate },
		requiredServices: ["records", "keyring", "batcher", "signer", "metrics"],
		jwksMaxAge: 300,
		eventStreams: { perClient: 5, total: 200 },
		auditCacheMs: 60_000,
		apiKeysFile: config.apiKeysFile
	};
}

/** public/ (the dashboard and the API docs) beside services/ in the sources, or beside dist/. */
export function publicFolder(from = __dirname): string {
	const candidates = [path.resolve(from, "..", "..", "public"), path.resolve(from, "..", "..", "..", "public")];
	return candidates.find(dir => fs.existsSync(path.join(dir, "index.html"))) ?? candidates[0];
}

type RateLimitedRequest = IncomingMessage & { $route?: { rateLimit?: { store?: { resetTime?: number } } } };

/**
 * Headers on every answer: the pages load only their own scripts, styles and data (no inline
 * code, no framing), and no content is sniffed into another type.
 */
export const SECURITY_HEADERS: Record<string, string> = {
	"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy": "no-referrer"
};

/** moleculer-web's own settings for this gateway: assets, error bodies, logging, the event stream's call options. */
export function gatewaySettings() {
	return {
		use: [
			(_req: IncomingMessage, res: ServerResponse, next: () => void) => {
				for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
				next();
			}
		],
		assets: {
			folder: publicFolder(),
			options: {
				index: "index.html",
				maxAge: 0,
				setHeaders(res: ServerResponse) {
					for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
				}
			}
		},
		// The event stream stays open: no request timeout, and not tracked, so shutdown does not wait for it.
		rootCallOptions(callOptions: Record<string, unknown>, req: IncomingMessage) {
			if (req.url?.startsWith("/api/events")) Object.assign(callOptions, { timeout: 0, tracking: false });
		},
		log4XXResponses: false,
		logRequest: "debug",
		logResponse: "debug",
		onError(req: RateLimitedRequest, res: ServerResponse, err: unknown) {
			const { status, body, headers } = toApiError(err, { realm: API_REALM, rateLimitResetAt: req.$route?.rateLimit?.store?.resetTime });
			if (res.headersSent) return void res.end();
			for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
			res.setHeader("Content-Type", "application/json; charset=utf-8");
			res.writeHead(status);
			res.end(JSON.stringify(body));
		}
	};
}
