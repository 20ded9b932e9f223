/**
 * Hashes the signature log on a thread of its own (docs/design.md §8.4), so that storing a
 * piece costs records' thread one more integer per row and nothing else: records numbers the
 * rows in the write transaction that stores them (the log's order is fixed there), hands the
 * committed piece to src/tlog/hasher.worker.ts (or, for a piece whose leaves the signing threads
 * of this process hashed, its leaf hashes: src/tlog/piece-leaves.ts), and writes the tiles and nodes it answers, in
 * order, inside its next write transaction (no commit of their own). The tree lags the rows by
 * the pieces in flight; settle() waits for them and writes them (a checkpoint does), and a store
 * reopened after a crash hashes the rows it lacks before it takes any.
 */
import path from "node:path";
import { Worker } from "node:worker_threads";
import { transaction, type DatabaseSync } from "../store/sqlite";
import type { HashPiece } from "./hasher.worker";
import type { SqliteLog } from "./sqlite-log";
import type { TreeUpdate } from "./tree-builder";

export class SignatureHasher {
	private readonly worker: Worker;
	private sent = 0;
	private applied = 0;
	/** Answers received, not yet written. */
	private received: TreeUpdate[] = [];
	private failure: Error | null = null;
	private waiters: Array<{ upTo: number; resolve(): void; reject(err: Error): void }> = [];

	constructor(
		private readonly db: DatabaseSync,
		private readonly log: SqliteLog,
	) {
		// Under jest the sources are TypeScript; Node 22 strips the worker's types itself.
		const filename = path.join(__dirname, `hasher.worker${path.extname(__filename)}`);
		this.worker = new Worker(filename, { workerData: { state: log.treeState } });
		this.worker.on("message", (update: TreeUpdate) => this.receive(update));
		this.worker.on("error", (err) => this.fail(err));
		this.worker.on("exit", () =>
			this.fail(new Error("the signature log's hashing thread stopped")),
		);
		this.worker.unref();
	}

	/** Hashes a committed piece after those before it. */
	hash(piece: HashPiece): void {
		this.sent++;
		this.worker.ref();
		if (!("leafHashes" in piece)) return this.worker.postMessage(piece);
		// A copy of just these bytes, moved: a view would clone the whole buffer under it.
		const leafHashes = new Uint8Array(piece.leafHashes);
		this.worker.postMessage({ leafHashes }, [leafHashes.buffer]);
	}

	/** Resolves once every piece handed over so far is in the stored tree. */
	settle(): Promise<void> {
		if (this.failure) return Promise.reject(this.failure);
		if (this.applied + this.received.length === this.sent) {
			this.applyInTransaction();
			return this.failure ? Promise.reject(this.failure) : Promise.resolve();
		}
		return new Promise((resolve, reject) =>
			this.waiters.push({ upTo: this.sent, resolve, reject }),
		);
	}

	/**
	 * Writes the answers received so far inside the caller's write transaction; `commit()` once
	 * it committed. A transaction that rolls back leaves them to the next (after log.reload()).
	 */
	applyReceived(): void {
		for (const update of this.received) this.log.applyUpdate(update);
	}

	/** The answers written by applyReceived() are committed. */
	commit(): void {
		this.applied += this.received.length;
		this.received = [];
	}

	/** Settles, then stops the thread. */
	async close(): Promise<void> {
		try {
			await this.settle();
		} finally {
			this.failure ??= new Error("the signature log's hashing thread was stopped");
			await this.worker.terminate();
		}
	}

	private receive(update: TreeUpdate): void {
		this.received.push(update);
		const done = this.applied + this.received.length;
		if (done === this.sent) this.worker.unref();
		if (!this.waiters.some((w) => w.upTo <= done)) return;
		this.applyInTransaction();
		const ready = this.waiters.filter((w) => w.upTo <= this.applied);
		this.waiters = this.waiters.filter((w) => w.upTo > this.applied);
		for (const w of ready) w.resolve();
	}

	private applyInTransaction(): void {
		if (!this.received.length) return;
		try {
			transaction(this.db, () => this.applyReceived());
			this.commit();
		} catch (err) {
			this.log.reload();
			this.fail(err as Error);
		}
	}

	private fail(err: Error): void {
		this.failure ??= err;
		for (const w of this.waiters) w.reject(this.failure);
		this.waiters = [];
	}
}
