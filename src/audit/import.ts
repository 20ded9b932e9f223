/**
 * Imports documents into temporary SQLite files that the audit reads like the store itself:
 * the same tables and column names, but no unique keys and untyped columns, so a duplicate
 * or a corrupt value stays what it was and the audit names it. Readers (an export's lines,
 * the services' pages, an in-memory snapshot, later MongoDB) feed one ImportWriter
 * collection by collection; nothing is held in memory but the JWKS.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { JWK } from "jose";
import type { LogName } from "../contract";
import type { StoreOwner } from "../store/schema";
import type { StoredCheckpoint } from "../tlog/log";
import { logSchema } from "../tlog/sqlite-log";
import { TILE_LEAVES } from "../tlog/tree-builder";
import { UserError } from "../user-error";
import { AuditDatabase, type AuditDb, type AuditFiles } from "./audit-db";
import {
	EXPORT_FIELDS,
	type AuditSnapshot,
	type SnapshotBatch,
	type SnapshotKey,
	type SnapshotLease,
	type SnapshotRecord,
	type SnapshotRun,
	type SnapshotSignature,
} from "./snapshot";

/** The documents an import takes, in the export's field names (docs/design.md §8.3). */
export interface ImportDocs {
	records: SnapshotRecord;
	signatures: SnapshotSignature;
	batches: SnapshotBatch;
	leases: SnapshotLease;
	keys: SnapshotKey;
	runs: SnapshotRun;
}
export type ImportCollection = keyof ImportDocs;
/** How many documents of each collection an audit checked or an export wrote. */
export type CollectionCounts = Record<ImportCollection, number>;

/** Every collection, in the causal order a live system is best read in (keys and leases first). */
export const IMPORT_COLLECTIONS: ImportCollection[] = [
	"keys",
	"leases",
	"runs",
	"batches",
	"records",
	"signatures",
];

export interface ImportWriter {
	/** Adds one document; an ImportProblem (with no location: the reader adds it) when it cannot be imported at all. */
	add<C extends ImportCollection>(collection: C, doc: ImportDocs[C]): void;
	/** The JWKS as the source gives it; the audit reports any private member, the export drops it. */
	jwks(keys: JWK[]): void;
	/** The next leaf hash of a log, in log order (an export's log file); `entry` names a lease log's. */
	logLeaf(log: LogName, hash: Buffer, entry?: string): void;
	/** A signed checkpoint of a log. */
	logCheckpoint(log: LogName, checkpoint: StoredCheckpoint): void;
	/** Indexes what was written and opens it for the audit; closing that removes the files. */
	finish(): AuditDb;
	/** Removes what was written. */
	abort(): void;
}

/** A document that cannot be imported at all (not an object, no string id): the audit could not name it. */
export class ImportProblem extends Error {}

export interface ImportOptions {
	/** Where the temporary folder goes (default: the OS's). */
	tmpDir?: string;
}

const OWNER: Record<ImportCollection, StoreOwner> = {
	records: "records",
	signatures: "records",
	batches: "batcher",
	runs: "batcher",
	keys: "keyring",
	leases: "keyring",
};

/** The fields without which a document cannot be placed or named. */
const ID_FIELDS: Record<ImportCollection, string> = {
	records: "id",
	signatures: "recordId",
	batches: "batchId",
	leases: "leaseId",
	keys: "keyId",
	runs: "runId",
};

/** Where an import keeps each log: the tables its owner's store has (docs/design.md §8.4). */
const LOG_OWNER: Record<LogName, StoreOwner> = { signatures: "records", leases: "keyring" };
const LOG_TABLE_NAMES: Record<LogName, string> = {
	signatures: "signature_log",
	leases: "lease_log",
};

const quote = (column: string) => `"${column}"`;

/** Tables first (bulk inserts run fastest without indexes), indexes when the data is in. */
const INDEXES: Record<StoreOwner, string> = {
	records: `
		CREATE INDEX records_id ON records (id);
		CREATE INDEX signatures_record ON signatures (recordId);
		CREATE INDEX signatures_batch ON signatures (batchId, recordId);`,
	batcher: `
		CREATE INDEX runs_id ON runs (runId);
		CREATE INDEX batches_id ON batches (batchId);`,
	keyring: `
		CREATE INDEX keys_id ON keys (keyId);
		CREATE INDEX leases_id ON leases (leaseId);
		CREATE INDEX leases_grant ON leases (grantSeq);
		CREATE INDEX leases_end ON leases (endSeq);`,
};

/** A value SQLite can hold as it is; anything else (an object where a string belongs) as its JSON. */
function bindable(value: unknown): string | number | bigint | null {
	if (value == null) return null;
	if (typeof value === "string" || typeof value === "number" || typeof value === "bigint")
		return value;
	return JSON.stringify(value);
}

class SqliteImport implements ImportWriter {
	readonly dir: string;
	readonly files: AuditFiles;
	#dbs: Record<StoreOwner, DatabaseSync>;
	#inserts = new Map<ImportCollection, StatementSync>();
	#jwks: JWK[] = [];
	/** Per log: its leaves so far and the hashes of its unfinished tile. */
	#logs = new Map<LogName, { size: number; tile: Buffer[] }>();

	constructor(options: ImportOptions) {
		this.dir = fs.mkdtempSync(path.join(options.tmpDir ?? os.tmpdir(), "audit-import-"));
		this.files = {
			records: path.join(this.dir, "records.sqlite"),
			batcher: path.join(this.dir, "batcher.sqlite"),
			keyring: path.join(this.dir, "keyring.sqlite"),
		};
		const open = (owner: StoreOwner) => {
			const db = new DatabaseSync(this.files[owner]);
			// A scratch copy: no journal, no fsync; a crash loses nothing that matters.
			db.exec(
				"PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -16384; PRAGMA temp_store = FILE",
			);
			return db;
		};
		this.#dbs = {
			records: open("records"),
			batcher: open("batcher"),
			keyring: open("keyring"),
		};
		for (const collection of IMPORT_COLLECTIONS) {
			const columns = EXPORT_FIELDS[collection].map(quote);
			// No types: a number where a string belongs stays a number, for the audit to see.
			this.#dbs[OWNER[collection]].exec(`CREATE TABLE ${collection} (${columns.join(", ")})`);
		}
		for (const db of Object.values(this.#dbs)) db.exec("BEGIN");
		for (const collection of IMPORT_COLLECTIONS) {
			const columns = EXPORT_FIELDS[collection];
			this.#inserts.set(
				collection,
				this.#dbs[OWNER[collection]].prepare(
					`INSERT INTO ${collection} (${columns.map(quote).join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`,
				),
			);
		}
	}

	add<C extends ImportCollection>(collection: C, doc: ImportDocs[C]): void {
		const fields = doc as unknown as Record<string, unknown>;
		if (fields === null || typeof fields !== "object" || Array.isArray(fields))
			throw new ImportProblem(
				`is not a JSON object (got ${fields === null ? "null" : Array.isArray(fields) ? "an array" : `a ${typeof fields}`})`,
			);
		const idField = ID_FIELDS[collection];
		if (typeof fields[idField] !== "string")
			throw new ImportProblem(
				`has no string "${idField}" (got ${JSON.stringify(fields[idField]) ?? "nothing"})`,
			);
		const values = EXPORT_FIELDS[collection].map((field) =>
			// recordIds is JSON text in the store too; whatever it holds comes back as it was.
			collection === "batches" && field === "recordIds"
				? JSON.stringify(fields[field] ?? null)
				: bindable(fields[field]),
		);
		this.#inserts.get(collection)!.run(...values);
	}

	jwks(keys: JWK[]): void {
		this.#jwks = keys;
	}

	/** A log's tables as its owner's store has them (src/tlog/sqlite-log.ts), made on its first leaf or checkpoint. */
	#log(log: LogName) {
		let state = this.#logs.get(log);
		if (!state) {
			this.#dbs[LOG_OWNER[log]].exec(
				logSchema(LOG_TABLE_NAMES[log], { entries: log === "leases" }),
			);
			state = { size: 0, tile: [] };
			this.#logs.set(log, state);
		}
		return state;
	}

	logLeaf(log: LogName, hash: Buffer, entry?: string): void {
		const state = this.#log(log);
		const db = this.#dbs[LOG_OWNER[log]];
		if (entry !== undefined)
			db.prepare(
				`INSERT INTO ${LOG_TABLE_NAMES[log]}_entries (idx, entry) VALUES (?, ?)`,
			).run(state.size, entry);
		state.tile.push(hash);
		state.size++;
		if (state.tile.length === TILE_LEAVES) this.#writeTile(log);
	}

	#writeTile(log: LogName): void {
		const state = this.#logs.get(log)!;
		if (!state.tile.length) return;
		this.#dbs[LOG_OWNER[log]]
			.prepare(
				`INSERT OR REPLACE INTO ${LOG_TABLE_NAMES[log]}_tiles (tile, hashes) VALUES (?, ?)`,
			)
			.run(Math.floor((state.size - 1) / TILE_LEAVES), Buffer.concat(state.tile));
		if (state.tile.length === TILE_LEAVES) state.tile = [];
	}

	logCheckpoint(log: LogName, { size, note, publishedAt }: StoredCheckpoint): void {
		this.#log(log);
		this.#dbs[LOG_OWNER[log]]
			.prepare(
				`INSERT OR REPLACE INTO ${LOG_TABLE_NAMES[log]}_checkpoints (size, note, publishedAt) VALUES (?, ?, ?)`,
			)
			.run(size, note, publishedAt);
	}

	finish(): AuditDb {
		try {
			for (const log of this.#logs.keys()) this.#writeTile(log);
			for (const [owner, db] of Object.entries(this.#dbs) as Array<
				[StoreOwner, DatabaseSync]
			>) {
				db.exec("COMMIT");
				db.exec(INDEXES[owner]);
				db.close();
			}
			const dir = this.dir;
			return new AuditDatabase("import", this.files, { keys: this.#jwks }, () =>
				fs.rmSync(dir, { recursive: true, force: true }),
			);
		} catch (err) {
			this.abort();
			throw err;
		}
	}

	abort(): void {
		for (const db of Object.values(this.#dbs)) {
			try {
				db.close();
			} catch {
				// Already closed by finish().
			}
		}
		fs.rmSync(this.dir, { recursive: true, force: true });
	}
}

/** A writer into a new temporary folder of three SQLite files. */
export function createImport(options: ImportOptions = {}): ImportWriter {
	return new SqliteImport(options);
}

/** An in-memory snapshot (tests, small tools) as an audit database; closing it removes the files. */
export function importSnapshot(snapshot: AuditSnapshot, options: ImportOptions = {}): AuditDb {
	const writer = createImport(options);
	try {
		for (const collection of IMPORT_COLLECTIONS)
			snapshot[collection].forEach((doc, at) => {
				try {
					writer.add(collection, doc as ImportDocs[typeof collection]);
				} catch (err) {
					if (err instanceof ImportProblem)
						throw new UserError(`snapshot ${collection}[${at}] ${err.message}`);
					throw err;
				}
			});
		writer.jwks(snapshot.jwks?.keys ?? []);
		return writer.finish();
	} catch (err) {
		writer.abort();
		throw err;
	}
}
