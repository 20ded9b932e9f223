/**
 * Run-completion webhooks: the report POSTed to the run's `callbackUrl`, signed with the
 * gateway's own Ed25519 key (a detached compact JWS over the exact body bytes, the same
 * format as the record signatures, DESIGN.md section 5), retried with exponential backoff,
 * every attempt kept for GET /api/runs/:id. No broker in here.
 */
import fs from "node:fs";
import path from "node:path";
import { CompactSign, base64url, compactVerify, createLocalJWKSet, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from "jose";

export const WEBHOOK_KID = "webhook-1";
export const WEBHOOK_KEY_FILE = "webhook-key.json";
/** Header carrying `<protected>..<signature>`; the payload is the request body. */
export const SIGNATURE_HEADER = "X-Signature-JWS";

export class WebhookSigner {
	private constructor(private readonly privateKey: CryptoKey, readonly publicJwk: JWK) {}

	/** Loads `dataDir/webhook-key.json` (mode 0600), creating it once; in memory when `dataDir` is "". */
	static async open(dataDir: string): Promise<WebhookSigner> {
		const file = dataDir ? path.join(dataDir, WEBHOOK_KEY_FILE) : null;
		if (file && fs.existsSync(file)) {
			const jwk = JSON.parse(fs.readFileSync(file, "utf8")) as JWK;
			return WebhookSigner.fromPrivateJwk(jwk);
		}
		const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
		const jwk = { ...(await exportJWK(privateKey)), kid: WEBHOOK_KID, alg: "EdDSA", use: "sig" };
		if (file) {
			fs.mkdirSync(dataDir, { recursive: true });
			try {
				fs.writeFileSync(file, JSON.stringify(jwk), { mode: 0o600, flag: "wx" });
			} catch (err) {
				// Another process created it first: use theirs, so one kid means one key.
				if ((err as NodeJS.ErrnoException).code === "EEXIST") return WebhookSigner.fromPrivateJwk(JSON.parse(fs.readFileSync(file, "utf8")));
				throw err;
			}
		}
		return WebhookSigner.fromPrivateJwk(jwk);
	}

	private static async fromPrivateJwk(jwk: JWK): Promise<WebhookSigner> {
		const privateKey = (await importJWK({ ...jwk, alg: "EdDSA" }, "EdDSA")) as CryptoKey;
		const { d: _private, ...publicJwk } = jwk;
		return new WebhookSigner(privateKey, { ...publicJwk, kid: jwk.kid ?? WEBHOOK_KID, alg: "EdDSA", use: "sig" });
	}

	/** Detached compact JWS (RFC 7515 appendix F) over the UTF-8 bytes of `body`. */
	async sign(body: string): Promise<string> {
		const jws = await new CompactSign(new TextEncoder().encode(body)).setProtectedHeader({ alg: "EdDSA", kid: this.publicJwk.kid!, typ: "webhook+jws" }).sign(this.privateKey);
		const [protectedHeader, , signature] = jws.split(".");
		return `${protectedHeader}..${signature}`;
	}
}

/** What a receiver does: reattach the body and verify against the gateway's JWKS. */
export async function verifyWebhookSignature(body: string, detached: string, jwks: { keys: JWK[] }): Promise<{ kid: string | undefined }> {
	const [protectedHeader, empty, signature] = detached.split(".");
	if (empty !== "" || !protectedHeader || !signature) throw new Error("not a detached compact JWS");
	const { protectedHeader: header } = await compactVerify(`${protectedHeader}.${base64url.encode(body)}.${signature}`, createLocalJWKSet(jwks), { algorithms: ["EdDSA"] });
	return { kid: header.kid };
}

export interface WebhookAttempt {
	attempt: number;
	at: string;
	/** HTTP status of the receiver's answer; null when none came (refused, timed out). */
	status: number | null;
	ok: boolean;
	error: string | null;
	durationMs: number;
}

export interface WebhookState {
	url: string;
	status: "waiting" | "delivering" | "delivered" | "failed";
	attempts: WebhookAttempt[];
}

export interface DeliveryOptions {
	maxAttempts: number;
	/** First retry after this long, doubling each time. */
	baseDelayMs: number;
	maxDelayMs: number;
	timeoutMs: number;
}

export const DEFAULT_DELIVERY: DeliveryOptions = { maxAttempts: 6, baseDelayMs: 1_000, maxDelayMs: 60_000, timeoutMs: 10_000 };

export function backoffMs(attempt: number, options: DeliveryOptions, random = Math.random): number {
	const base = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (attempt - 1));
	// Up to 20% jitter so many receivers recovering at once are not hit in lockstep.
	return Math.round(base * (1 + 0.2 * random()));
}

const sleep = (ms: number, signal?: AbortSignal) =>
	new Promise<void>(resolve => {
		const timer = setTimeout(resolve, ms);
		signal?.addEventListener("abort", () => {
			clearTimeout(timer);
			resolve();
		}, { once: true });
	});

/** POSTs `body` until a 2xx or `maxAttempts`, recording each attempt on `state`. */
export async function deliver(state: WebhookState, body: string, headers: Record<string, string>, options: DeliveryOptions, signal?: AbortSignal): Promise<void> {
	state.status = "delivering";
	for (let attempt = 1; attempt <= options.maxAttempts && !signal?.aborted; attempt++) {
		const started = Date.now();
		const record: WebhookAttempt = { attempt, at: new Date(started).toISOString(), status: null, ok: false, error: null, durationMs: 0 };
		try {
			const timeout = AbortSignal.timeout(options.timeoutMs);
			const response = await fetch(state.url, {
				method: "POST",
				headers: { "Content-Type": "application/json", ...headers, "X-Webhook-Attempt": String(attempt) },
				body,
				redirect: "manual",
				signal: signal ? AbortSignal.any([signal, timeout]) : timeout
			});
			await response.arrayBuffer().catch(() => undefined);
			record.status = response.status;
			record.ok = response.status >= 200 && response.status < 300;
			if (!record.ok) record.error = `HTTP ${response.status}`;
		} catch (err) {
			record.error = (err as Error).name === "TimeoutError" ? `no answer within ${options.timeoutMs} ms` : String((err as Error & { cause?: Error }).cause?.message ?? (err as Error).message);
		}
		record.durationMs = Date.now() - started;
		state.attempts.push(record);
		if (record.ok) {
			state.status = "delivered";
			return;
		}
		if (attempt < options.maxAttempts) await sleep(backoffMs(attempt, options), signal);
	}
	state.status = "failed";
}
