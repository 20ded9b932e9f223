/**
 * Run-completion webhooks: the report POSTed to the run's `callbackUrl`, signed with the
 * gateway's own Ed25519 key (a detached compact JWS over the exact body bytes, the same
 * format as the record signatures, docs/design.md §8.1), retried with exponential backoff,
 * every attempt kept for GET /api/runs/:id. No broker in here.
 */
import fs from "node:fs";
import path from "node:path";
import { CompactSign, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from "jose";
import { systemClock, type Clock } from "../clock";
import type { RunCompletedEvent } from "../contract";
import { postJson, publicUrl } from "./outbound";
import { ensurePrivateDir, PRIVATE_FILE_MODE } from "../private-files";

/** An abort that came from the per-attempt timeout rather than the shutdown signal. */
function timeoutFired(shutdown?: AbortSignal): boolean {
	return !shutdown?.aborted;
}

export const WEBHOOK_KID = "webhook-1";
export const WEBHOOK_KEY_FILE = "webhook-key.json";
/** Header carrying `<protected>..<signature>`; the payload is the request body. */
export const SIGNATURE_HEADER = "X-Signature-JWS";

export class WebhookSigner {
	private constructor(
		private readonly privateKey: CryptoKey,
		readonly publicJwk: JWK,
	) {}

	/** Loads `dataDir/webhook-key.json` (mode 0600), creating it once; in memory when `dataDir` is "". */
	static async open(dataDir: string): Promise<WebhookSigner> {
		const file = dataDir ? path.join(dataDir, WEBHOOK_KEY_FILE) : null;
		if (file && fs.existsSync(file)) {
			const jwk = JSON.parse(fs.readFileSync(file, "utf8")) as JWK;
			return WebhookSigner.fromPrivateJwk(jwk);
		}
		const { privateKey } = await generateKeyPair("EdDSA", {
			crv: "Ed25519",
			extractable: true,
		});
		const jwk = {
			...(await exportJWK(privateKey)),
			kid: WEBHOOK_KID,
			alg: "EdDSA",
			use: "sig",
		};
		if (file) {
			ensurePrivateDir(dataDir);
			try {
				fs.writeFileSync(file, JSON.stringify(jwk), {
					mode: PRIVATE_FILE_MODE,
					flag: "wx",
				});
				fs.chmodSync(file, PRIVATE_FILE_MODE);
			} catch (err) {
				// Another process created it first: use theirs, so one kid means one key.
				if ((err as NodeJS.ErrnoException).code === "EEXIST")
					return WebhookSigner.fromPrivateJwk(JSON.parse(fs.readFileSync(file, "utf8")));
				throw err;
			}
		}
		return WebhookSigner.fromPrivateJwk(jwk);
	}

	private static async fromPrivateJwk(jwk: JWK): Promise<WebhookSigner> {
		const privateKey = (await importJWK({ ...jwk, alg: "EdDSA" }, "EdDSA")) as CryptoKey;
		const { d: _private, ...publicJwk } = jwk;
		return new WebhookSigner(privateKey, {
			...publicJwk,
			kid: jwk.kid ?? WEBHOOK_KID,
			alg: "EdDSA",
			use: "sig",
		});
	}

	/** Detached compact JWS (RFC 7515 appendix F) over the UTF-8 bytes of `body`. */
	async sign(body: string): Promise<string> {
		const jws = await new CompactSign(new TextEncoder().encode(body))
			.setProtectedHeader({ alg: "EdDSA", kid: this.publicJwk.kid!, typ: "webhook+jws" })
			.sign(this.privateKey);
		const [protectedHeader, , signature] = jws.split(".");
		return `${protectedHeader}..${signature}`;
	}
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
	/** Loopback, link-local and private addresses allowed (src/api/outbound.ts). */
	allowPrivate: boolean;
	/** Bytes of a receiver's answer read at most. */
	maxResponseBytes: number;
}

export const DEFAULT_DELIVERY: DeliveryOptions = {
	maxAttempts: 6,
	baseDelayMs: 1_000,
	maxDelayMs: 60_000,
	timeoutMs: 10_000,
	allowPrivate: false,
	maxResponseBytes: 8 * 1024,
};

/**
 * A webhook as GET /api/runs/:id shows it to anyone: the URL without its query (a token there
 * stays private) and each attempt's outcome, without the network details of failures (they
 * would make the gateway a port scanner); those go to the gateway's log.
 */
export function publicWebhookView(state: WebhookState | null) {
	if (!state) return null;
	return {
		url: publicUrl(state.url),
		status: state.status,
		attempts: state.attempts.map(({ attempt, at, status, ok, durationMs }) => ({
			attempt,
			at,
			status,
			ok,
			durationMs,
			error: ok ? null : status === null ? "no answer" : `HTTP ${status}`,
		})),
	};
}

export function backoffMs(attempt: number, options: DeliveryOptions, random = Math.random): number {
	const base = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (attempt - 1));
	// Up to 20% jitter so many receivers recovering at once are not hit in lockstep.
	return Math.round(base * (1 + 0.2 * random()));
}

/** Resolves after `ms` on `clock`, or as soon as `signal` aborts. */
function pause(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
	if (!signal) return clock.sleep(ms);
	if (signal.aborted) return Promise.resolve();
	return Promise.race([
		clock.sleep(ms),
		new Promise<void>((resolve) =>
			signal.addEventListener("abort", () => resolve(), { once: true }),
		),
	]);
}

/** POSTs `body` until a 2xx or `maxAttempts`, recording each attempt on `state`. */
export async function deliver(
	state: WebhookState,
	body: string,
	headers: Record<string, string>,
	options: DeliveryOptions,
	signal?: AbortSignal,
	clock: Clock = systemClock,
): Promise<void> {
	state.status = "delivering";
	for (let attempt = 1; attempt <= options.maxAttempts && !signal?.aborted; attempt++) {
		const started = clock.now();
		const record: WebhookAttempt = {
			attempt,
			at: new Date(started).toISOString(),
			status: null,
			ok: false,
			error: null,
			durationMs: 0,
		};
		try {
			const timeout = AbortSignal.timeout(options.timeoutMs);
			const response = await postJson(
				state.url,
				body,
				{ ...headers, "X-Webhook-Attempt": String(attempt) },
				{
					timeoutMs: options.timeoutMs,
					signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
					allowPrivate: options.allowPrivate,
					maxResponseBytes: options.maxResponseBytes,
				},
			);
			record.status = response.status;
			record.ok = response.status >= 200 && response.status < 300;
			if (!record.ok) record.error = `HTTP ${response.status}`;
		} catch (err) {
			const e = err as Error & { code?: string };
			record.error =
				e.name === "TimeoutError" || (e.name === "AbortError" && timeoutFired(signal))
					? `no answer within ${options.timeoutMs} ms`
					: e.message;
		}
		record.durationMs = clock.now() - started;
		state.attempts.push(record);
		if (record.ok) {
			state.status = "delivered";
			return;
		}
		if (attempt < options.maxAttempts) await pause(clock, backoffMs(attempt, options), signal);
	}
	state.status = "failed";
}

/**
 * The webhooks of runs: registered with a run's start, delivered when its `run.completed`
 * arrives (or at once, if the run had already ended), each attempt kept for GET /api/runs/:id.
 */
export class WebhookRegistry {
	private readonly webhooks = new Map<string, WebhookState>();
	/** Recent completions, for a callback registered after its (very short) run already ended. */
	private readonly completions = new Map<string, RunCompletedEvent>();
	private readonly shutdown = new AbortController();

	constructor(
		private readonly signer: Promise<WebhookSigner>,
		private readonly options: DeliveryOptions,
		private readonly onFailed: (runId: string, state: WebhookState) => void,
		private readonly clock: Clock = systemClock,
		private readonly remembered = 100,
	) {}

	get(runId: string): WebhookState | null {
		return this.webhooks.get(runId) ?? null;
	}

	/** Whether webhooks may call loopback and private addresses. */
	get allowPrivate(): boolean {
		return this.options.allowPrivate;
	}

	register(runId: string, url: string): void {
		this.webhooks.set(runId, { url, status: "waiting", attempts: [] });
		const completion = this.completions.get(runId);
		if (completion) void this.send(runId, completion);
	}

	/**
	 * A webhook whose event has happened (every record of a submission is signed): registered
	 * and delivered at once, under the same rules and signature as a run's, kept under `id`.
	 */
	notify(
		id: string,
		url: string,
		event: string,
		payload: object,
		headers: Record<string, string>,
	): void {
		this.webhooks.set(id, { url, status: "waiting", attempts: [] });
		void this.post(id, event, payload, headers);
	}

	runCompleted(event: RunCompletedEvent): void {
		const { runId } = event.report;
		this.completions.set(runId, event);
		if (this.completions.size > this.remembered)
			this.completions.delete(this.completions.keys().next().value as string);
		if (this.webhooks.get(runId)?.status === "waiting") void this.send(runId, event);
	}

	/** Ends deliveries in progress (their state says how far they got). */
	close(): void {
		this.shutdown.abort();
	}

	private send(runId: string, completion: RunCompletedEvent): Promise<void> {
		return this.post(
			runId,
			"run.completed",
			{
				runId,
				status: completion.status,
				error: completion.error ?? null,
				report: completion.report,
			},
			{ "X-Run-Id": runId },
		);
	}

	private async post(
		id: string,
		event: string,
		payload: object,
		headers: Record<string, string>,
	): Promise<void> {
		const state = this.webhooks.get(id);
		if (!state || state.status !== "waiting") return;
		state.status = "delivering";
		// One body for every attempt, signed once: the receiver can dedupe on its bytes.
		const body = JSON.stringify({ event, ...payload });
		const signature = await (await this.signer).sign(body);
		await deliver(
			state,
			body,
			{ [SIGNATURE_HEADER]: signature, "X-Webhook-Event": event, ...headers },
			this.options,
			this.shutdown.signal,
			this.clock,
		);
		if ((state.status as WebhookState["status"]) === "failed") this.onFailed(id, state);
	}
}
