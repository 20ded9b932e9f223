/**
 * `Idempotency-Key` for POST /api/batcher/start: the first request with a key starts the run,
 * every repeat (same key, same body) gets that run back instead of a 409. Kept in the
 * gateway's memory for `ttlMs`; no broker in here.
 */
import { Errors } from "moleculer";

interface Entry {
	fingerprint: string;
	/** Settles with the run id; a failed start frees the key so the client may retry. */
	runId: Promise<string>;
	expiresAt: number;
}

/** Printable ASCII, as in the IETF httpapi Idempotency-Key draft; bounded so it cannot bloat memory. */
const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;

export class IdempotencyStore {
	private readonly entries = new Map<string, Entry>();

	constructor(private readonly ttlMs = 24 * 3600_000, private readonly maxEntries = 10_000) {}

	static validate(key: string): void {
		if (!KEY_PATTERN.test(key))
			throw new Errors.MoleculerClientError("Idempotency-Key must be 1 to 255 printable ASCII characters", 422, "INVALID_IDEMPOTENCY_KEY", { field: "Idempotency-Key", rule: "1-255 printable ASCII characters" });
	}

	/** The run this key started, or the one `start` starts now. */
	async claim(key: string, fingerprint: string, start: () => Promise<string>, now = Date.now()): Promise<{ runId: string; replayed: boolean }> {
		IdempotencyStore.validate(key);
		this.evict(now);
		const existing = this.entries.get(key);
		if (existing) {
			if (existing.fingerprint !== fingerprint)
				throw new Errors.MoleculerClientError("This Idempotency-Key was already used with a different request body", 422, "IDEMPOTENCY_KEY_REUSED", { field: "Idempotency-Key" });
			return { runId: await existing.runId, replayed: true };
		}
		const runId = start();
		const entry: Entry = { fingerprint, runId, expiresAt: now + this.ttlMs };
		this.entries.set(key, entry);
		try {
			return { runId: await runId, replayed: false };
		} catch (err) {
			if (this.entries.get(key) === entry) this.entries.delete(key);
			throw err;
		}
	}

	/** Pre-seeds a key (e.g. from the batcher's stored runs after a restart). */
	remember(key: string, fingerprint: string, runId: string, now = Date.now()): void {
		this.entries.set(key, { fingerprint, runId: Promise.resolve(runId), expiresAt: now + this.ttlMs });
	}

	private evict(now: number): void {
		for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(key);
		// Oldest first: Map keeps insertion order.
		while (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
	}
}
