/**
 * Bearer tokens for the API gateway: the configuration (read from an env object, so the
 * gateway, the token command and the tests share one reading), verification with jose, and
 * issuing tokens for local use. No broker in here.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import {
	SignJWT,
	errors as joseErrors,
	importJWK,
	importSPKI,
	jwtVerify,
	type CryptoKey,
	type JWTPayload,
} from "jose";
import { ensurePrivateDir, PRIVATE_FILE_MODE } from "../private-files";

export type AuthKey =
	/** HS256 with a shared secret: the gateway verifies, `npm run token` issues. */
	| { alg: "HS256"; secret: Uint8Array; source: "env" | "file" | "memory"; file?: string }
	/** EdDSA with an external issuer's public key: the gateway only verifies. */
	| { alg: "EdDSA"; publicKey: CryptoKey | Uint8Array; source: "env" };

export interface AuthConfig {
	key: AuthKey;
	issuer: string;
	audience: string;
	/** "open": GET routes need no token; "required": every /api route does. */
	reads: "open" | "required";
}

export class AuthConfigError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "AuthConfigError";
	}
}

export const AUTH_SECRET_FILE = "auth.secret";
export const SCOPE_RUNS_WRITE = "runs:write";
/** POST /api/records: submitting records to be signed. */
export const SCOPE_RECORDS_WRITE = "records:write";

/** Reads (or, with a data folder, creates once with mode 0600) the shared dev secret. */
function secretFromFile(dataDir: string): { secret: Uint8Array; file: string } {
	const file = path.join(dataDir, AUTH_SECRET_FILE);
	ensurePrivateDir(dataDir);
	try {
		// "wx": two processes starting together never overwrite each other's secret.
		fs.writeFileSync(file, randomBytes(32).toString("base64") + "\n", {
			mode: PRIVATE_FILE_MODE,
			flag: "wx",
		});
		fs.chmodSync(file, PRIVATE_FILE_MODE);
	} catch (err) {
		if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
	}
	const secret = Buffer.from(fs.readFileSync(file, "utf8").trim(), "base64");
	if (secret.length < 32)
		throw new AuthConfigError(`${file} must hold the base64 of at least 32 bytes`);
	return { secret: new Uint8Array(secret), file };
}

/**
 * AUTH_SECRET (base64, >= 32 bytes, HS256) or AUTH_PUBLIC_KEY (Ed25519 SPKI PEM or JWK,
 * EdDSA); AUTH_ISSUER, AUTH_AUDIENCE, AUTH_READS. Without either key, the HS256 secret is
 * `dataDir/auth.secret` (generated once), or a per-process random one when `dataDir` is "".
 */
export async function loadAuthConfig(
	env: Record<string, string | undefined>,
	dataDir: string,
): Promise<AuthConfig> {
	const issuer = env.AUTH_ISSUER || "record-signer";
	const audience = env.AUTH_AUDIENCE || "record-signer-api";
	const readsRaw = (env.AUTH_READS || "open").toLowerCase();
	if (readsRaw !== "open" && readsRaw !== "required")
		throw new AuthConfigError(
			`AUTH_READS must be "open" or "required", got "${env.AUTH_READS}"`,
		);
	let key: AuthKey;
	if (env.AUTH_PUBLIC_KEY) {
		const raw = env.AUTH_PUBLIC_KEY.trim();
		try {
			const publicKey = raw.startsWith("{")
				? await importJWK({ ...JSON.parse(raw), alg: "EdDSA" }, "EdDSA")
				: await importSPKI(raw, "EdDSA");
			key = { alg: "EdDSA", publicKey, source: "env" };
		} catch (err) {
			throw new AuthConfigError(
				`AUTH_PUBLIC_KEY must be an Ed25519 public key (SPKI PEM or JWK): ${(err as Error).message}`,
			);
		}
	} else if (env.AUTH_SECRET) {
		const secret = Buffer.from(env.AUTH_SECRET, "base64");
		if (secret.length < 32)
			throw new AuthConfigError(
				"AUTH_SECRET must be the base64 encoding of at least 32 bytes (e.g. `openssl rand -base64 32`)",
			);
		key = { alg: "HS256", secret: new Uint8Array(secret), source: "env" };
	} else if (dataDir) {
		key = { alg: "HS256", ...secretFromFile(dataDir), source: "file" };
	} else {
		key = { alg: "HS256", secret: new Uint8Array(randomBytes(32)), source: "memory" };
	}
	return { key, issuer, audience, reads: readsRaw };
}

/** Why a request is refused: `status` 401 (who are you) or 403 (not allowed). */
export class AuthError extends Error {
	constructor(
		readonly status: 401 | 403,
		readonly type: string,
		message: string,
		/** RFC 6750 error code for the WWW-Authenticate header. */
		readonly bearerError?: "invalid_request" | "invalid_token" | "insufficient_scope",
		readonly scope?: string,
	) {
		super(message);
		this.name = "AuthError";
		this.code = status;
	}

	/** Same as `status`: moleculer-web reads `code` to tell client errors from server errors. */
	readonly code: number;

	/** RFC 6750 section 3 challenge. */
	challenge(realm: string): string {
		const parts = [`realm="${realm}"`];
		if (this.bearerError)
			parts.push(
				`error="${this.bearerError}"`,
				`error_description="${this.message.replace(/"/g, "'")}"`,
			);
		if (this.scope) parts.push(`scope="${this.scope}"`);
		return `Bearer ${parts.join(", ")}`;
	}
}

export interface Principal {
	subject: string | null;
	scopes: string[];
	claims: JWTPayload;
}

/** The token of an `Authorization: Bearer ...` header; null when there is none. */
export function bearerToken(header: string | undefined): string | null {
	if (!header) return null;
	const match = /^Bearer\s+([A-Za-z0-9._~+/-]+=*)\s*$/i.exec(header);
	if (!match)
		throw new AuthError(
			401,
			"INVALID_AUTHORIZATION_HEADER",
			"The Authorization header must be 'Bearer <token>'",
			"invalid_request",
		);
	return match[1];
}

/** `scope` as a space-separated string (RFC 8693) or an array of strings. */
function scopesOf(claims: JWTPayload): string[] {
	const scope = claims.scope ?? claims.scp;
	if (typeof scope === "string") return scope.split(/\s+/).filter(Boolean);
	if (Array.isArray(scope)) return scope.filter((s): s is string => typeof s === "string");
	return [];
}

/** A credential that does not verify: 401, with `invalid_token` in the Bearer challenge (RFC 6750). */
function invalidToken(type: string, message: string): AuthError {
	return new AuthError(401, type, message, "invalid_token");
}

/** Verifies signature, issuer, audience and expiry; every failure is an AuthError 401. */
export async function verifyToken(config: AuthConfig, token: string): Promise<Principal> {
	const key = config.key.alg === "HS256" ? config.key.secret : config.key.publicKey;
	try {
		const { payload } = await jwtVerify(token, key, {
			issuer: config.issuer,
			audience: config.audience,
			algorithms: [config.key.alg],
			requiredClaims: ["exp"],
			clockTolerance: 5,
		});
		return { subject: payload.sub ?? null, scopes: scopesOf(payload), claims: payload };
	} catch (err) {
		if (err instanceof joseErrors.JWTExpired)
			throw invalidToken("TOKEN_EXPIRED", "The token has expired");
		if (err instanceof joseErrors.JWTClaimValidationFailed) {
			if (err.claim === "aud")
				throw invalidToken(
					"INVALID_AUDIENCE",
					`The token is not for audience "${config.audience}"`,
				);
			if (err.claim === "iss")
				throw invalidToken(
					"INVALID_ISSUER",
					`The token was not issued by "${config.issuer}"`,
				);
			throw invalidToken(
				"INVALID_TOKEN",
				`The token's "${err.claim}" claim is invalid: ${err.reason}`,
			);
		}
		throw invalidToken(
			"INVALID_TOKEN",
			"The token is malformed or its signature does not verify. A token from npm run token is signed with one store's secret (DATA_DIR/auth.secret) or with AUTH_SECRET: make it with the DATA_DIR or AUTH_SECRET this gateway runs with.",
		);
	}
}

export function requireScope(principal: Principal, scope: string): void {
	if (!principal.scopes.includes(scope))
		throw new AuthError(
			403,
			"INSUFFICIENT_SCOPE",
			`The token lacks the "${scope}" scope`,
			"insufficient_scope",
			scope,
		);
}

export interface IssueOptions {
	scope: string;
	/** Seconds, or a jose time span ("15m", "2h"). */
	ttl: number | string;
	subject?: string;
	/** Overrides for tests (expired tokens, other audiences). */
	issuer?: string;
	audience?: string;
	issuedAt?: number;
}

/** An HS256 token under the configured secret; EdDSA tokens come from their own issuer. */
export async function issueToken(config: AuthConfig, options: IssueOptions): Promise<string> {
	if (config.key.alg !== "HS256")
		throw new AuthConfigError(
			"AUTH_PUBLIC_KEY is set: tokens come from the issuer holding the private key, not from this command",
		);
	const issuedAt = options.issuedAt ?? Math.floor(Date.now() / 1000);
	return (
		new SignJWT({ scope: options.scope })
			.setProtectedHeader({ alg: "HS256", typ: "JWT" })
			.setIssuer(options.issuer ?? config.issuer)
			.setAudience(options.audience ?? config.audience)
			.setSubject(options.subject ?? "local")
			.setIssuedAt(issuedAt)
			// A number is seconds after `issuedAt`; a string span ("15m") counts from now.
			.setExpirationTime(
				typeof options.ttl === "number" ? issuedAt + options.ttl : options.ttl,
			)
			.sign(config.key.secret)
	);
}

/** What checks an API key (src/api/api-keys.ts): its name and scopes when valid. */
export interface ApiKeyCheck {
	verify(key: string): { name: string; scopes: string[] } | null;
}

/**
 * Writes need a valid token or API key; reads only when AUTH_READS=required, but a credential
 * sent is always checked.
 */
export async function authenticateRequest(
	config: AuthConfig,
	method: string | undefined,
	authorization: string | undefined,
	apiKey?: string,
	apiKeys?: ApiKeyCheck,
): Promise<Principal | null> {
	const token = bearerToken(authorization);
	const mutating = method !== "GET" && method !== "HEAD";
	if (apiKey !== undefined) {
		if (token)
			throw new AuthError(
				401,
				"TWO_CREDENTIALS",
				"Send either a bearer token or an API key, not both",
				"invalid_request",
			);
		const key = apiKeys?.verify(apiKey);
		if (!key) throw invalidToken("INVALID_API_KEY", "The API key is unknown or revoked");
		return { subject: `api-key:${key.name}`, scopes: key.scopes, claims: {} };
	}
	if (!token) {
		if (mutating || config.reads === "required")
			throw new AuthError(
				401,
				"NO_TOKEN",
				"A bearer token or an API key is required: send Authorization: Bearer <token> (npm run token prints one) or X-API-Key: <key> (npm run apikey -- create)",
			);
		return null;
	}
	return verifyToken(config, token);
}

/** Scopes a token needs per action behind a mutating route. */
const REQUIRED_SCOPES: Record<string, string> = {
	"api.startRun": SCOPE_RUNS_WRITE,
	"api.cancelRun": SCOPE_RUNS_WRITE,
	"api.submitRecords": SCOPE_RECORDS_WRITE,
};

/** Refuses (403) a caller whose token lacks the scope the route's action needs. */
export function authorizeAction(
	principal: Principal | null | undefined,
	action: string | undefined,
): void {
	const scope = action ? REQUIRED_SCOPES[action] : undefined;
	if (scope && principal) requireScope(principal, scope);
}
