/**
 * One writing process per records and batcher store file (docs/design.md §4.2). Each of those
 * services keeps what it wrote in memory too (records its counts and the signature log's tree,
 * the batcher its active run), so a second process writing the same file would act on a state
 * the first does not know: a second `npm run serve` or `npm start` on one DATA_DIR resumed the
 * first one's active run, closed its batches in flight and wrote batches beside it, until its
 * keyring (which holds a role of its own, src/keyring/role.ts) was refused seconds later.
 *
 * The lock is an OS file lock, taken through SQLite: `<store>.lock` is a small SQLite database
 * that the writer opens in exclusive locking mode and writes once, so SQLite holds its lock
 * until the connection closes, and the OS drops it when the process ends, even by `kill -9`:
 * no stale lock is ever left to clear. Another process's attempt fails at once (busy), and it
 * reads who holds the store from the store itself (`store_writer`, written by the holder).
 * Readers (the audit, the export) never take it. One process may open a store more than once
 * (a hot reload, the tests): the lock is counted.
 */
import os from "node:os";
import { DatabaseSync } from "node:sqlite";
import { touchPrivate } from "../private-files";
import { UserError } from "../user-error";

/** Who writes a store, as the holder records it. */
export interface StoreWriter {
	pid: number;
	host: string;
	since: string;
}

/** The table in the store where its writer says who it is. */
const STORE_WRITER_SCHEMA = `
CREATE TABLE IF NOT EXISTS store_writer (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	pid INTEGER NOT NULL,
	host TEXT NOT NULL,
	since TEXT NOT NULL
);`;

export class StoreInUseError extends UserError {
	constructor(
		readonly file: string,
		readonly writer: StoreWriter | null,
	) {
		super(
			`The store ${file} is in use by another process${
				writer ? ` (pid ${writer.pid} on ${writer.host}, since ${writer.since})` : ""
			}: one process writes a store. Stop that one first, or use it: join it with npm run repl, ` +
				"or run this role against it over NATS (TRANSPORTER)",
		);
		this.name = "StoreInUseError";
	}
}

/** This process's locks, by store file: the lock's connection and how many opens share it. */
const held = new Map<string, { lock: DatabaseSync; opens: number }>();

/** Who the store's writer says it is, read without a lock; null when it cannot be read. */
function writerOf(file: string): StoreWriter | null {
	try {
		const db = new DatabaseSync(file, { readOnly: true });
		try {
			const row = db
				.prepare("SELECT pid, host, since FROM store_writer WHERE id = 1")
				.get() as StoreWriter | undefined;
			return row
				? { pid: Number(row.pid), host: String(row.host), since: String(row.since) }
				: null;
		} finally {
			db.close();
		}
	} catch {
		return null;
	}
}

/**
 * Takes the writer's lock of the store `file` for this process, or throws a StoreInUseError
 * naming the process that holds it. Each lock is released once, when its store closes.
 */
export function lockStoreWriter(file: string): void {
	const mine = held.get(file);
	if (mine) mine.opens++;
	else held.set(file, { lock: takeLock(file), opens: 1 });
}

/** Gives back one lockStoreWriter of `file`; the last one open lets another process take it. */
export function releaseStoreWriter(file: string): void {
	const entry = held.get(file);
	if (!entry || --entry.opens > 0) return;
	held.delete(file);
	entry.lock.close();
}

function takeLock(file: string): DatabaseSync {
	const lockFile = `${file}.lock`;
	touchPrivate(lockFile);
	const lock = new DatabaseSync(lockFile);
	try {
		lock.exec(`
			PRAGMA busy_timeout = 0;
			PRAGMA locking_mode = EXCLUSIVE;
			PRAGMA journal_mode = DELETE;
			BEGIN EXCLUSIVE;
			CREATE TABLE IF NOT EXISTS held (id INTEGER PRIMARY KEY);
			INSERT OR REPLACE INTO held (id) VALUES (1);
			COMMIT;
		`);
		return lock;
	} catch (err) {
		lock.close();
		if ((err as { errcode?: number }).errcode === 5 /* SQLITE_BUSY */)
			throw new StoreInUseError(file, writerOf(file));
		throw err;
	}
}

/** Records this process as the writer of the open store `db` (after lockStoreWriter). */
export function recordStoreWriter(db: DatabaseSync): void {
	db.exec(STORE_WRITER_SCHEMA);
	db.prepare(
		"INSERT INTO store_writer (id, pid, host, since) VALUES (1, ?, ?, ?) " +
			"ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, host = excluded.host, since = excluded.since",
	).run(process.pid, os.hostname(), new Date().toISOString());
}
