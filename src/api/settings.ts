/**
 * The api service's settings from the validated configuration and the AUTH_* variables.
 * The environment comes in as a parameter: src/config.ts stays the one reader of it.
 */
import fs from "node:fs";
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from "node:http";
import path from "node:path";
import type { Duplex } from "node:stream";
import type { Context } from "moleculer";
import { credentialSettings, type AppConfig } from "../config";
import type { CredentialSettings } from "../identity/credential";
import type { Principal } from "./auth";
import { toApiError } from "./errors";
import type { StreamLimits } from "./progress-stream";
import { DEFAULT_DELIVERY, type DeliveryOptions } from "./webhook";

/** The realm of the gateway's Bearer challenges. */
export const API_REALM = "record-signer";

/** What a handler sets in `ctx.meta` for moleculer-web to answer with. */
export interface ResponseMeta {
	$statusCode?: number;
	$responseHeaders?: Record<string, string>;
	$responseType?: string;
}

export interface ApiOptions {
	port: number;
	/** PORT was set by the user: taken, it is an error; otherwise the gateway falls back to a free port (src/broker/listen.ts). */
	portSet?: boolean;
	/** Interface to bind; undefined = all. */
	ip?: string;
	dataDir: string;
	/** The AUTH_* variables, read by src/api/auth.ts when the service starts. */
	authEnv: Record<string, string | undefined>;
	/**
	 * The batcher's credential, which makes the submit proofs of POST /api/records (the gateway
	 * runs beside the batcher; docs/design.md §6.10). Never published: `$secureSettings`.
	 */
	submitCredential: CredentialSettings;
	/** Largest accepted body of POST /api/records (body-parser syntax). */
	submitBodyLimit: string;
	/** POST /api/batcher/start per client address (src/api/client-address.ts). */
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
	/** TRUSTED_PROXIES: peers whose X-Forwarded-For names the client of the limits (src/api/client-address.ts); empty: none. */
	trustedProxies: string[];
	/** Where the API keys are (src/api/api-keys.ts); null: none. */
	apiKeysFile: string | null;
	/** GET /api/audit without a token: the last verdict, recomputed at most this often. */
	auditCacheMs: number;
}

export const AUTH_ENV_NAMES = [
	"AUTH_SECRET",
	"AUTH_PUBLIC_KEY",
	"AUTH_ISSUER",
	"AUTH_AUDIENCE",
	"AUTH_READS",
] as const;

export function apiOptions(
	config: AppConfig,
	env: Record<string, string | undefined> = config.authEnv,
): ApiOptions {
	return {
		port: config.port,
		portSet: config.explicitPorts.port,
		dataDir: config.dataDir,
		authEnv: Object.fromEntries(AUTH_ENV_NAMES.map((name) => [name, env[name]])),
		startRateLimit: { window: 60_000, limit: 10 },
		submitCredential: credentialSettings(config, "batcher"),
		bodyLimit: "16kb",
		// 1,000 records of the largest id and data, every character escaped.
		submitBodyLimit: "8mb",
		progressIntervalMs: 250,
		webhook: { ...DEFAULT_DELIVERY, allowPrivate: config.webhookAllowPrivate },
		requiredServices: ["records", "keyring", "batcher", "signer", "metrics"],
		jwksMaxAge: 300,
		eventStreams: { perClient: 5, total: 200 },
		trustedProxies: config.trustedProxies,
		auditCacheMs: 60_000,
		apiKeysFile: config.apiKeysFile,
	};
}

/** public/ (the dashboard and the API docs) beside services/ in the sources, or beside dist/. */
export function publicFolder(from = __dirname): string {
	const candidates = [
		path.resolve(from, "..", "..", "public"),
		path.resolve(from, "..", "..", "..", "public"),
	];
	return candidates.find((dir) => fs.existsSync(path.join(dir, "index.html"))) ?? candidates[0];
}

type RateLimitedRequest = IncomingMessage & {
	$route?: { rateLimit?: { store?: { resetTime?: number } } };
};

/**
 * Headers on every answer: the pages load only their own scripts, styles and data (no inline
 * code, no framing), and no content is sniffed into another type.
 */
export const SECURITY_HEADERS: Record<string, string> = {
	"Content-Security-Policy":
		"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy": "no-referrer",
};

/**
 * The gateway's request handler with SECURITY_HEADERS set before anything else runs, so every
 * answer carries them: routes, assets, the event stream, and moleculer-web's own 404s, body
 * parser and rate limit errors, which no route middleware sees.
 */
export function withSecurityHeaders<R>(
	handler: (req: IncomingMessage, res: ServerResponse) => R,
): (req: IncomingMessage, res: ServerResponse) => R {
	return (req, res) => {
		for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
		return handler(req, res);
	};
}

const CLIENT_ERROR_STATUS: Record<string, number> = {
	HPE_HEADER_OVERFLOW: 431,
	HPE_CHUNK_EXTENSIONS_OVERFLOW: 413,
	ERR_HTTP_REQUEST_TIMEOUT: 408,
};

/**
 * The server's `clientError` listener: a request Node cannot parse gets the answer Node would
 * give (400, 408, 413 or 431, then the connection closed), with SECURITY_HEADERS too. As Node
 * does, nothing is written over a response already under way on the socket.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
	const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })
		._httpMessage;
	if (socket.writable && !inFlight?.headersSent) {
		const status = CLIENT_ERROR_STATUS[err.code ?? ""] ?? 400;
		const headers = Object.entries(SECURITY_HEADERS)
			.map(([name, value]) => `${name}: ${value}\r\n`)
			.join("");
		socket.write(
			`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${headers}Content-Length: 0\r\nConnection: close\r\n\r\n`,
		);
	}
	socket.destroy();
}

/** The methods moleculer-web calls on the gateway service, and its own it offers. */
export interface GatewayMethods {
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

/**
 * moleculer-web's own settings for this gateway: where it listens, assets, error bodies,
 * logging, the event stream's call options.
 */
export function gatewaySettings(options: ApiOptions) {
	return {
		// The server is made and bound by the service (created, started): a taken port gets a clear
		// message or a fallback (src/broker/listen.ts), where moleculer-web would exit the process.
		server: false,
		port: options.port,
		ip: options.ip,
		api: options,
		// Settings travel to every node in INFO packets: the auth secret must not.
		$secureSettings: ["api.authEnv", "api.submitCredential"],
		// SECURITY_HEADERS are set on every response by withSecurityHeaders, around the whole handler.
		assets: {
			folder: publicFolder(),
			options: { index: "index.html", maxAge: 0 },
		},
		// The event stream stays open: no request timeout, and not tracked, so shutdown does not wait for it.
		rootCallOptions(callOptions: Record<string, unknown>, req: IncomingMessage) {
			if (req.url?.startsWith("/api/events"))
				Object.assign(callOptions, { timeout: 0, tracking: false });
		},
		log4XXResponses: false,
		logRequest: "debug",
		logResponse: "debug",
		onError(req: RateLimitedRequest, res: ServerResponse, err: unknown) {
			const { status, body, headers } = toApiError(err, {
				realm: API_REALM,
				rateLimitResetAt: req.$route?.rateLimit?.store?.resetTime,
			});
			if (res.headersSent) return void res.end();
			for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
			res.setHeader("Content-Type", "application/json; charset=utf-8");
			res.writeHead(status);
			res.end(JSON.stringify(body));
		},
	};
}
