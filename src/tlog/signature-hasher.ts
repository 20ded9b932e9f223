/**
 * Hashes the signature log's pieces from the bus on a thread of its own (docs/design.md §8.4),
 * so that storing one costs records' thread one more integer per row: records numbers the rows
 * in the write transaction that stores them (the log's order is fixed there), hands the
 * committed piece to src/tlog/hasher.worker.ts, and writes the tiles and nodes it answers, in
 * order, inside its next write transaction (no commit of their own). The tree lags the rows by
 * the pieces in flight; settle() waits for them and writes them (a checkpoint does), and a store
 * reopened after a crash hashes the rows it lacks before it takes any.
 *
 * A piece whose leaves the signing threads of this process hashed (src/tlog/piece-leaves.ts)
 * is appended by records itself, in the transaction that stores it, when no piece is in flight
 * here (`idle`): the tree then costs it about a node hash per leaf, where the hand-over to the
 * thread and back cost more than that (waking the thread, cloning the answer). The thread is
 * started with the first piece it gets, and is told the tree's state whenever records appended
 * since the last.
 */
import path from "node:path";
import { Worker } from "node:worker_threads";
import { transaction, type DatabaseSync } from "../store/sqlite";
import { sourceWorkerExecArgv } from "../worker-threads";
import type { HashPiece } from "./hasher.worker";
import type { SqliteLog } from "./sqlite-log";
import type { TreeUpdate } from "./tree-builder";

export class SignatureHasher {
	private worker: Worker | null = null;
	/** The tree size the thread's builder reaches once it has hashed what it was sent. */
	private threadAt = -1;
	private sent = 0;
	private applied = 0;
	/** Answers received, not yet written. */
	private received: TreeUpdate[] = [];
	private failure: Error | null = null;
	private waiters: Array<{ upTo: number; resolve(): void; reject(err: Error): void }> = [];

	constructor(
		private readonly db: DatabaseSync,
		private readonly log: SqliteLog,
	) {}

	private thread(): Worker {
		if (this.worker) return this.worker;
		// Under jest the sources are TypeScript; Node 22 strips the worker's types itself.
		const filename = path.join(__dirname, `hasher.worker${path.extname(__filename)}`);
		const worker = new Worker(filename, { execArgv: sourceWorkerExecArgv(filename) });
		worker.on("message", (update: TreeUpdate) => this.receive(update));
		worker.on("error", (err) => this.fail(err));
		worker.on("exit", () => this.fail(new Error("the signature log's hashing thread stopped")));
		this.worker = worker;
		return worker;
	}

	/** Every piece handed over is back (written, or to be written by applyReceived()): the tree may take one here. */
	get idle(): boolean {
		return this.applied + this.received.length === this.sent;
	}

	/** Hashes a committed piece of `count` rows from log index `start`, after those before it. */
	hash(piece: HashPiece, start: number, count: number): void {
		const worker = this.thread();
		// Records appended since the thread's last piece (only when none was in flight, so the
		// stored tree ends where this piece starts): the thread continues from the stored tree.
		const state = start === this.threadAt ? undefined : this.log.treeState;
		this.threadAt = start + count;
		this.sent++;
		worker.ref();
		if (!("leafHashes" in piece)) return worker.postMessage({ piece, state });
		// A copy of just these bytes, moved: a view would clone the whole buffer under it.
		const leafHashes = new Uint8Array(piece.leafHashes);
		worker.postMessage({ piece: { leafHashes }, state }, [leafHashes.buffer]);
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
			await this.worker?.terminate();
		}
	}

	private receive(update: TreeUpdate): void {
		this.received.push(update);
		const done = this.applied + this.received.length;
		if (done === this.sent) this.worker?.unref();
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
