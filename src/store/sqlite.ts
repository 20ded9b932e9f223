/**
 * Opening an embedded store: one `node:sqlite` database per owning service, in WAL mode so
 * readers (the audit, the export) can read while the owner writes. A committed transaction
 * is in the WAL file before the call returns, so a process killed at any moment loses
 * nothing it acknowledged. With `synchronous = NORMAL` the log is fsynced at checkpoints, not
 * at every commit: a power loss may cost the last moments (MongoDB's journaled majority
 * writes are the answer to that, docs/deploy.md). Checkpoints run on a thread of their own
 * (src/store/checkpointer.ts), so no write on the event loop waits for one.
 */
import fs from "node:fs";
import path from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { ensurePrivateDir, makePrivate, touchPrivate } from "../private-files";
import { beginImmediate } from "./begin-immediate";
import { checkpointInBackground, stopCheckpointing } from "./checkpointer";
import { importLegacyStore } from "./legacy-nedb";
import { STORE_FILES, type StoreOwner } from "./schema";
import { lockStoreWriter, recordStoreWriter, releaseStoreWriter } from "./writer-lock";

export type { DatabaseSync, StatementSync };

export interface OpenOptions {
	/** Folder of the store files; "" keeps the database in memory (tests). */
	dataDir: string;
	owner: StoreOwner;
	/** DDL run on every open (CREATE ... IF NOT EXISTS). */
	schema: string;
	/** Told what a one-time import of an earlier version's store brought in. */
	log?: (line: string) => void;
}

/** The path of `owner`'s store file in `dataDir`. */
export function storeFile(dataDir: string, owner: StoreOwner): string {
	return path.join(dataDir, STORE_FILES[owner]);
}

/** Adds `column` to `table` in a file an earlier version made without it. */
export function ensureColumn(db: DatabaseSync, table: string, column: string, type: string): void {
	const columns = db.prepare(`PRAGMA table_info(${table})`).all() as Array<{ name: string }>;
	if (!columns.some((c) => c.name === column))
		db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
}

/**
 * The stores one process writes, locked for it (src/store/writer-lock.ts). The keyring's is not:
 * it holds a role in its store (src/keyring/role.ts), and the operator's commands open that
 * store beside it (`npm run signer -- enrol`, on a running keyring's store).
 */
const SINGLE_WRITER: ReadonlySet<StoreOwner> = new Set(["records", "batcher"]);

/** Whether `owner`'s store in `dataDir` takes a writer's lock: on disk, and one process writes it. */
const locked = (dataDir: string, owner: StoreOwner) => !!dataDir && SINGLE_WRITER.has(owner);

export function openStore(options: OpenOptions): DatabaseSync {
	let location = ":memory:";
	const writerLock = locked(options.dataDir, options.owner);
	if (options.dataDir) {
		// DATA_DIR 0700 (tightened if an earlier version made it 0755), the store file 0600
		// before SQLite opens it: SQLite gives its -wal and -shm files the database file's mode.
		ensurePrivateDir(options.dataDir, options.log);
		location = storeFile(options.dataDir, options.owner);
		// Before anything is written: a store another process writes is refused untouched.
		if (writerLock) lockStoreWriter(location);
		touchPrivate(location);
	}
	let db: DatabaseSync | null = null;
	try {
		db = new DatabaseSync(location);
		db.exec(`
			PRAGMA journal_mode = WAL;
			PRAGMA synchronous = NORMAL;
			PRAGMA busy_timeout = 5000;
			PRAGMA foreign_keys = ON;
		`);
		db.exec(options.schema);
		if (writerLock) recordStoreWriter(db);
		if (options.dataDir) {
			// Those an earlier version left 0644 keep their mode when SQLite reuses them.
			for (const suffix of ["-wal", "-shm"]) makePrivate(location + suffix);
			const imported = importLegacyStore(db, options.owner, options.dataDir);
			if (imported) options.log?.(imported);
			db.exec("PRAGMA wal_autocheckpoint = 0");
			checkpointInBackground(location);
		}
		return db;
	} catch (err) {
		db?.close();
		if (writerLock) releaseStoreWriter(location);
		throw err;
	}
}

/** Closes an owner's database: its log checkpointed into the file, the background checkpoints stopped, its writer's lock given back. */
export async function closeStore(
	db: DatabaseSync,
	dataDir: string,
	owner: StoreOwner,
): Promise<void> {
	if (dataDir) await stopCheckpointing(storeFile(dataDir, owner));
	try {
		db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
	} catch {
		// A reader still holds the log: it is checkpointed at the next open.
	}
	db.close();
	if (locked(dataDir, owner)) releaseStoreWriter(storeFile(dataDir, owner));
}

/**
 * Copies every store's write-ahead log in `dataDir` into its file now, from a connection of
 * its own, as the background checkpointer would within half a second (the benchmark, before it
 * starts the clock: copying a freshly seeded store is not the run's work). A log a reader holds
 * is left for the checkpointer.
 */
export function checkpointStoresNow(dataDir: string): void {
	for (const owner of Object.keys(STORE_FILES) as StoreOwner[]) {
		const file = storeFile(dataDir, owner);
		if (!fs.existsSync(file)) continue;
		const db = new DatabaseSync(file);
		try {
			db.exec("PRAGMA busy_timeout = 1000");
			db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
		} catch {
			// Busy: the background checkpointer gets it.
		} finally {
			db.close();
		}
	}
}

/** Runs `work` in one write transaction: all of it is stored, or none. */
export function transaction<T>(db: DatabaseSync, work: () => T): T {
	beginImmediate(db);
	try {
		const result = work();
		db.exec("COMMIT");
		return result;
	} catch (err) {
		db.exec("ROLLBACK");
		throw err;
	}
}

/** SQLite's refusal of a second row with the same unique key. */
export function isUniqueViolation(err: unknown): boolean {
	const e = err as { code?: string; errcode?: number; message?: string };
	// SQLITE_CONSTRAINT_UNIQUE (2067) and SQLITE_CONSTRAINT_PRIMARYKEY (1555).
	return (
		e?.errcode === 2067 ||
		e?.errcode === 1555 ||
		/UNIQUE constraint failed/.test(e?.message ?? "")
	);
}

/** A prepared statement per SQL text, prepared once per database. */
export class Statements {
	private readonly cache = new Map<string, StatementSync>();
	private readonly arrayCache = new Map<string, StatementSync>();

	constructor(private readonly db: DatabaseSync) {}

	get(sql: string): StatementSync {
		let statement = this.cache.get(sql);
		if (!statement) this.cache.set(sql, (statement = this.db.prepare(sql)));
		return statement;
	}

	/**
	 * The statement answering each row as an array of its column values, in the query's order:
	 * for the pages a run reads on its hot path. node:sqlite makes an object row a dictionary
	 * without a prototype; an array is a third of the time to read and copy (300,000 records
	 * paged 300 at a time: 75 ms against 185 to 275 ms) and a fraction of the garbage.
	 */
	arrays(sql: string): StatementSync {
		let statement = this.arrayCache.get(sql);
		if (!statement) {
			statement = this.db.prepare(sql);
			statement.setReturnArrays(true);
			this.arrayCache.set(sql, statement);
		}
		return statement;
	}
}
