/**
 * Spreads the per-record work over one thread per core: the main thread cuts the record ids
 * into ranges of a few thousand, hands them out as threads free up, and passes the results
 * on in range order, so the report does not depend on which thread finished first.
 */
import { randomUUID } from "node:crypto";
import os from "node:os";
import path from "node:path";
import Piscina from "piscina";
import type { AuditDb } from "./audit-db";
import type { RangeResult, RangeTask } from "./audit.worker";
import { workerExecArgv } from "../worker-threads";

export interface RangeOptions {
	/** Threads; default one per core. */
	threads?: number;
	/** Record ids per range: small enough to balance the threads, large enough to amortise a hand-out. */
	rangeSize?: number;
}

export const DEFAULT_RANGE_SIZE = 4000;

/** A thread holds one range's rows at a time: a small heap keeps each thread's memory flat. */
const THREAD_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16 };

/** What every range of one pass shares. */
export type RangeTemplate = Omit<RangeTask, "session" | "files" | "unique" | "after" | "upto">;

/** The next range's inclusive upper id, `size` ids after `after`; null when fewer remain (the last range is open). */
function rangeEnds(
	db: AuditDb,
	size: number,
): () => { after: string | null; upto: string | null } | null {
	const first = db.sql.prepare("SELECT id FROM rec.records ORDER BY id LIMIT 1 OFFSET ?");
	const next = db.sql.prepare(
		"SELECT id FROM rec.records WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?",
	);
	let after: string | null = null;
	let done = false;
	return () => {
		if (done) return null;
		const row = after === null ? first.get(size - 1) : next.get(after, size - 1);
		const upto = row ? (row.id as string) : null;
		const range = { after, upto };
		if (upto === null) done = true;
		after = upto;
		return range;
	};
}

/**
 * Runs `template` over every range of record ids of `db` on a pool of threads; `onResult` gets
 * each range's result in id order. The ranges cover every id, so signatures of unknown
 * records below the first or above the last record are in one of them too.
 */
export async function runRanges(
	db: AuditDb,
	template: RangeTemplate,
	options: RangeOptions,
	onResult: (result: RangeResult) => void,
): Promise<void> {
	const threads = Math.max(1, options.threads ?? os.availableParallelism());
	const size = Math.max(1, options.rangeSize ?? DEFAULT_RANGE_SIZE);
	// Under jest the sources are TypeScript; Node 22 strips the worker's types itself.
	const filename = path.join(__dirname, `audit.worker${path.extname(__filename)}`);
	// Two ranges per thread: each has the next one queued while it verifies; finished ranges
	// waiting for a slower earlier one are bounded too.
	const pool = new Piscina<RangeTask, RangeResult>({
		filename,
		minThreads: threads,
		maxThreads: threads,
		concurrentTasksPerWorker: 2,
		resourceLimits: THREAD_LIMITS,
		execArgv: workerExecArgv(filename),
	});
	const base = {
		...template,
		session: randomUUID(),
		files: { records: db.files.records, keyring: db.files.keyring },
		unique: db.kind === "store",
	};
	const nextRange = rangeEnds(db, size);
	try {
		await new Promise<void>((resolve, reject) => {
			const done = new Map<number, RangeResult>();
			let launched = 0;
			let passed = 0;
			let exhausted = false;
			let failed = false;
			const launch = () => {
				while (
					!failed &&
					!exhausted &&
					launched - passed - done.size < threads * 2 &&
					launched - passed < threads * 8
				) {
					const range = nextRange();
					if (!range) {
						exhausted = true;
						break;
					}
					const index = launched++;
					pool.run({ ...base, ...range })
						.then((result) => {
							done.set(index, result);
							// In order: a range's result waits for the ranges before it.
							while (done.has(passed)) {
								const next = done.get(passed)!;
								done.delete(passed++);
								onResult(next);
							}
							launch();
						})
						.catch((err) => {
							failed = true;
							reject(err);
						});
				}
				if (exhausted && passed === launched) resolve();
			};
			try {
				launch();
			} catch (err) {
				reject(err);
			}
		});
	} finally {
		await pool.destroy();
	}
}
