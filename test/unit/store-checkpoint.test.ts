/**
 * The checkpointer thread (src/store/checkpoint.worker.ts) keeps a store's write-ahead log from
 * growing with a run: under writes that never pause, passive checkpoints alone never start the
 * log over, so the thread restarts it once it is past its limit. Driven here on a real SQLite
 * file with a 1 MB limit and commits every few milliseconds, as an owner's event loop makes them.
 * And a write transaction that SQLite answers busy sooner than its busy timeout begins once the
 * other connection lets go (src/store/begin-immediate.ts).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { Worker } from "node:worker_threads";
import type { CheckpointMessage } from "../../src/store/checkpoint.worker";
import { beginImmediate } from "../../src/store/begin-immediate";
import { transaction } from "../../src/store/sqlite";

const MB = 1024 * 1024;

/** Commits `rows` rows of about 1 KB, `perCommit` at a time, a millisecond or so apart (an owner's turns); answers the largest log seen. */
async function writeSteadily(db: DatabaseSync, file: string, rows: number, perCommit: number) {
	const insert = db.prepare("INSERT INTO t (v) VALUES (?)");
	const value = "x".repeat(1_000);
	let largest = 0;
	for (let i = 0; i < rows; i += perCommit) {
		db.exec("BEGIN IMMEDIATE");
		for (let j = 0; j < perCommit; j++) insert.run(value);
		db.exec("COMMIT");
		largest = Math.max(largest, fs.statSync(`${file}-wal`).size);
		await new Promise((resolve) => setTimeout(resolve, 1));
	}
	return largest;
}

async function withCheckpointer(restartAbove: number, rows: number): Promise<number> {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "checkpointer-"));
	const file = path.join(dir, "store.sqlite");
	const db = new DatabaseSync(file);
	db.exec(
		"PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = 0",
	);
	db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
	const worker = new Worker(path.join(__dirname, "../../src/store/checkpoint.worker.ts"));
	const send = (message: CheckpointMessage) => worker.postMessage(message);
	try {
		send({ every: 20, restartAbove });
		send({ add: file });
		// The thread loads and opens its connection before the writes begin.
		await new Promise((resolve) => setTimeout(resolve, 500));
		const largest = await writeSteadily(db, file, rows, 50);
		// Every row is in the file, whatever the log went through.
		expect(db.prepare("SELECT count(*) AS n FROM t").get()).toEqual({ n: rows });
		return largest;
	} finally {
		await worker.terminate();
		db.close();
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

test("under commits that never pause, a log past its limit is started over and stays near it; without a limit it grows with the writes", async () => {
	const rows = 40_000; // about 40 MB of log
	const unbounded = await withCheckpointer(Infinity, rows);
	const bounded = await withCheckpointer(1 * MB, rows);
	expect(bounded).toBeLessThan(8 * MB);
	// Without the limit a passive checkpoint now and then finds the log wholly copied between two
	// commits on a loaded machine, but most of the time it does not, and the log grows.
	expect(unbounded).toBeGreaterThan(12 * MB);
	expect(unbounded).toBeGreaterThan(2 * bounded);
}, 60_000);

test("a write transaction that SQLite answers busy at once begins when the other writer lets go, and one held past the wait fails as before", async () => {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "begin-immediate-"));
	const file = path.join(dir, "store.sqlite");
	const db = new DatabaseSync(file);
	// No busy timeout: every BEGIN that meets the other writer is answered busy at once.
	db.exec("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 0");
	db.exec("CREATE TABLE t (v TEXT)");
	/** Another connection, on a thread of its own, holding the write lock for `holdMs`. */
	const holdLock = async (holdMs: number) => {
		const holder = new Worker(
			`const { DatabaseSync } = require("node:sqlite");
			const { parentPort, workerData } = require("node:worker_threads");
			const db = new DatabaseSync(workerData.file);
			db.exec("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('theirs')");
			parentPort.postMessage("locked");
			Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.holdMs);
			db.exec("COMMIT");
			db.close();`,
			{ eval: true, workerData: { file, holdMs } },
		);
		await new Promise((resolve) => holder.once("message", resolve));
		return holder;
	};
	try {
		let holder = await holdLock(200);
		const started = performance.now();
		transaction(db, () => db.prepare("INSERT INTO t (v) VALUES ('ours')").run());
		expect(performance.now() - started).toBeGreaterThanOrEqual(100);
		expect(db.prepare("SELECT v FROM t ORDER BY rowid").all()).toEqual([
			{ v: "theirs" },
			{ v: "ours" },
		]);
		await holder.terminate();

		holder = await holdLock(1_000);
		expect(() => beginImmediate(db, 300)).toThrow("database is locked");
		await holder.terminate();
	} finally {
		db.close();
		fs.rmSync(dir, { recursive: true, force: true });
	}
});
