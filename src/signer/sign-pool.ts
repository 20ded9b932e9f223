/**
 * The signer's pool of signing threads (piscina). A batch is cut into chunks spread over
 * the threads, so even one large batch uses every core while the event loop stays free for
 * leases and storage.
 */
import os from "node:os";
import path from "node:path";
import Piscina from "piscina";
import { LeaseDeadlineError, type RecordPayload, type SigningKey } from "./jws";
import type { SignTask, SignTaskResult } from "./sign.worker";

/**
 * A signing thread holds one chunk at a time; small heaps make V8 collect its short-lived
 * garbage early instead of growing each thread's heap by a hundred megabytes.
 */
export const SIGNING_THREAD_LIMITS = { maxOldGenerationSizeMb: 48, maxYoungGenerationSizeMb: 8 };

export interface SignedRecord {
	recordId: string;
	jws: string;
	signedAt: string;
}

export class SignPool {
	private readonly pool: Piscina<SignTask, SignTaskResult>;
	readonly threads: number;

	constructor(threads = os.availableParallelism()) {
		this.threads = Math.max(1, threads);
		// Under jest the sources are TypeScript; Node 22 strips the worker's types itself.
		const worker = path.join(__dirname, `sign.worker${path.extname(__filename)}`);
		// Several chunks queued per thread: a thread finishing one starts the next without waiting
		// for the event loop (busy with storage) to hand it out.
		this.pool = new Piscina({ filename: worker, minThreads: this.threads, maxThreads: this.threads, concurrentTasksPerWorker: 4, idleTimeout: 60_000, resourceLimits: SIGNING_THREAD_LIMITS });
	}

	/**
	 * Signs every record with one key. No chunk starts at or after `deadline()`, and a chunk
	 * that finishes past it voids the batch: a paused process must not come back and use a
	 * lease the keyring may have reclaimed.
	 */
	async sign(key: SigningKey, keyId: string, records: RecordPayload[], deadline: () => number): Promise<SignedRecord[]> {
		const chunkSize = Math.min(512, Math.max(32, Math.ceil(records.length / this.threads)));
		const chunks: RecordPayload[][] = [];
		for (let i = 0; i < records.length; i += chunkSize) chunks.push(records.slice(i, i + chunkSize));
		const results = await Promise.all(chunks.map(chunk => this.pool.run({ key, keyId, records: JSON.stringify(chunk.map(r => [r.id, r.data])), deadline: deadline() })));
		const signed: SignedRecord[] = [];
		for (let c = 0; c < chunks.length; c++) {
			const { jws, finishedAt } = results[c];
			if (jws === null || finishedAt >= deadline()) throw new LeaseDeadlineError(signed.length, records.length);
			const signedAt = new Date(finishedAt).toISOString();
			const chunkJws = jws.split("\n");
			chunks[c].forEach((record, i) => signed.push({ recordId: record.id, jws: chunkJws[i], signedAt }));
		}
		return signed;
	}

	destroy(): Promise<void> {
		return this.pool.destroy();
	}
}
