/**
 * The signer's pool of signing threads (piscina). A batch is cut into chunks spread over
 * the threads, so even one large batch uses every core while the event loop stays free for
 * leases and storage. With software keys the threads sign with libsodium; each chunk carries
 * its own one-shot hand-off of the lease's key (src/signer/lease-secret.ts), wiped by the
 * thread that copies it and again here once every chunk of the batch has settled. With
 * KEY_STORE=pkcs11 the threads sign in the token, each on a session of its own
 * (src/signer/token-sign.worker.ts), and a chunk carries only the token key's reference.
 */
import os from "node:os";
import path from "node:path";
import Piscina from "piscina";
import { LeaseDeadlineError, type RecordPayload } from "./jws";
import { LeaseSecret, wipeHandOff } from "./lease-secret";
import type { SignTask, SignTaskResult } from "./sign.worker";
import type { TokenSignTask, TokenThreadData } from "./token-sign.worker";
import type { TokenKeyRef, TokenSettings } from "../pkcs11/token";
import { SIGNATURE_GROUP } from "../identity/signature-groups";
import { requireSodium } from "../sodium";
import { workerExecArgv } from "../worker-threads";

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

export interface SignedBatch {
	signed: SignedRecord[];
	/** With `groups`: the signatures' group digests, in order (src/identity/signature-groups.ts). */
	groups: Uint8Array | null;
	/** With `leaves`: the signatures' leaf hashes in the signature log, 32 bytes each, in order. */
	leafHashes: Uint8Array | null;
}

/** What the threads hash beside signing (src/signer/sign.worker.ts). */
export interface SignHashes {
	/** The group digests the store proofs sign. */
	groups?: boolean;
	/** The signatures' leaf hashes, for the batch and lease they are stored under. */
	leaves?: { batchId: string; leaseId: string };
}

/** The chunks' hashes of one kind, joined in the batch's order. */
function joined(results: SignTaskResult[], kind: "groups" | "leaves", what: string): Buffer {
	const parts = results.map((result) => result[kind]);
	if (parts.some((part) => !part)) throw new Error(`a signing thread returned no ${what}`);
	return Buffer.concat(parts as Uint8Array[]);
}

/** What a chunk signs with: a software key in guarded memory, or a key in the token. */
export type PoolKey = LeaseSecret | TokenKeyRef;

export class SignPool {
	private readonly pool: Piscina<SignTask | TokenSignTask, SignTaskResult>;
	readonly threads: number;

	/** `token`: the threads sign in it (KEY_STORE=pkcs11); otherwise with libsodium. */
	constructor(threads = os.availableParallelism(), token: TokenSettings | null = null) {
		// A signer without libsodium fails here, at its start, with what to do (not at its first batch).
		if (!token) requireSodium();
		this.threads = Math.max(1, threads);
		// Under jest the sources are TypeScript; Node 22 strips the worker's types itself.
		const name = token ? "token-sign.worker" : "sign.worker";
		const worker = path.join(__dirname, `${name}${path.extname(__filename)}`);
		const workerData: TokenThreadData | undefined = token ? { token } : undefined;
		// Several chunks queued per thread: a thread finishing one starts the next without waiting
		// for the event loop (busy with storage) to hand it out.
		this.pool = new Piscina({
			filename: worker,
			minThreads: this.threads,
			maxThreads: this.threads,
			concurrentTasksPerWorker: 4,
			idleTimeout: 60_000,
			resourceLimits: SIGNING_THREAD_LIMITS,
			workerData,
			execArgv: workerExecArgv(worker),
		});
	}

	/**
	 * Signs every record with one key. No chunk starts at or after `deadline()`, and a chunk
	 * that finishes past it voids the batch: a paused process must not come back and use a
	 * lease the keyring may have reclaimed. The key stays the caller's to dispose; no copy of it
	 * made here outlives this call.
	 */
	async sign(
		key: PoolKey,
		keyId: string,
		records: RecordPayload[],
		deadline: () => number,
		{ groups = false, leaves }: SignHashes = {},
	): Promise<SignedBatch> {
		// A multiple of SIGNATURE_GROUP: each chunk's group digests are whole groups of the batch.
		const perThread =
			Math.ceil(records.length / this.threads / SIGNATURE_GROUP) * SIGNATURE_GROUP;
		const chunkSize = Math.min(512, Math.max(32, perThread));
		const chunks: RecordPayload[][] = [];
		for (let i = 0; i < records.length; i += chunkSize)
			chunks.push(records.slice(i, i + chunkSize));
		const handOffs: SharedArrayBuffer[] = [];
		const runs: Array<Promise<SignTaskResult>> = [];
		let results: SignTaskResult[];
		try {
			// One readable window of the key for all the chunks' hand-offs (lease-secret.ts).
			if (key instanceof LeaseSecret) handOffs.push(...key.handOffs(chunks.length));
			for (const [c, chunk] of chunks.entries()) {
				const task = {
					keyId,
					records: JSON.stringify(chunk.map((r) => [r.id, r.data])),
					deadline: deadline(),
					groups,
					leaves,
				};
				if (key instanceof LeaseSecret)
					runs.push(this.pool.run({ ...task, secret: handOffs[c] }));
				else runs.push(this.pool.run({ ...task, tokenKey: key }));
			}
			results = await Promise.all(runs);
		} finally {
			// A failed chunk fails the batch at once, but the others may still be queued with their hand-offs.
			await Promise.allSettled(runs);
			for (const handOff of handOffs) wipeHandOff(handOff);
		}
		const signed: SignedRecord[] = [];
		for (let c = 0; c < chunks.length; c++) {
			const { jws, finishedAt } = results[c];
			if (jws === null || finishedAt >= deadline())
				throw new LeaseDeadlineError(signed.length, records.length);
			const signedAt = new Date(finishedAt).toISOString();
			const chunkJws = jws.split("\n");
			chunks[c].forEach((record, i) =>
				signed.push({ recordId: record.id, jws: chunkJws[i], signedAt }),
			);
		}
		return {
			signed,
			groups: groups ? joined(results, "groups", "group digests") : null,
			leafHashes: leaves ? joined(results, "leaves", "leaf hashes") : null,
		};
	}

	destroy(): Promise<void> {
		return this.pool.destroy();
	}
}
