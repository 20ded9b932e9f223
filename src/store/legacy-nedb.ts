/**
 * A one-time import of a store written by an earlier version (NeDB: one `<collection>.db`
 * file per collection in DATA_DIR, a JSON document per line, later lines replacing earlier
 * ones with the same `_id`, `$$deleted` lines removing them). The owning service imports its
 * own collections into its new SQLite file the first time it opens, so no signature is
 * lost, and renames the old files to `<name>.db.nedb-imported` (never deletes them).
 */
import fs from "node:fs";
import path from "node:path";
import type { DatabaseSync } from "node:sqlite";
import type { StoreOwner } from "./schema";
import { beginImmediate } from "./begin-immediate";

export const LEGACY_SUFFIX = ".nedb-imported";

type Doc = Record<string, unknown>;

/** NeDB encodes dates as `{ "$$date": <ms> }`; the export wants ISO-8601 strings. */
function revive(value: unknown): unknown {
	if (Array.isArray(value)) return value.map(revive);
	if (value && typeof value === "object") {
		const date = (value as { $$date?: number }).$$date;
		if (typeof date === "number") return new Date(date).toISOString();
		return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, revive(v)]));
	}
	return value;
}

/** The documents of one NeDB file as it would load them: last version per `_id`, deletions applied. */
export function readNedbFile(file: string): Doc[] {
	const docs = new Map<string, Doc>();
	const lines = fs.readFileSync(file, "utf8").split("\n");
	lines.forEach((line, i) => {
		if (!line.trim()) return;
		let doc: Doc;
		try {
			doc = JSON.parse(line);
		} catch {
			throw new Error(
				`${file}:${i + 1} is not a NeDB document; the earlier store cannot be imported`,
			);
		}
		if (doc.$$indexCreated || doc.$$indexRemoved) return;
		const id = String(doc._id);
		if (doc.$$deleted === true) docs.delete(id);
		else docs.set(id, revive(doc) as Doc);
	});
	return [...docs.values()];
}

interface Import {
	file: string;
	/** Inserts one document; duplicates of what is already stored are skipped. */
	insert: string;
	row(doc: Doc): unknown[];
}

const str = (value: unknown): string | null =>
	value === undefined || value === null ? null : String(value);
const num = (value: unknown): number | null => (typeof value === "number" ? value : null);
const json = (value: unknown): string | null =>
	value === undefined || value === null ? null : JSON.stringify(value);

const IMPORTS: Record<StoreOwner, Import[]> = {
	records: [
		{
			file: "records.db",
			insert: "INSERT OR IGNORE INTO records (id, data) VALUES (?, ?)",
			row: (d) => [str(d._id), str(d.data)],
		},
		{
			file: "signatures.db",
			insert: "INSERT OR IGNORE INTO signatures (recordId, keyId, batchId, leaseId, jws, signedAt) VALUES (?, ?, ?, ?, ?, ?)",
			row: (d) => [
				str(d.recordId),
				str(d.keyId),
				str(d.batchId),
				str(d.leaseId),
				str(d.jws),
				str(d.signedAt),
			],
		},
	],
	keyring: [
		{
			file: "keys.db",
			insert: "INSERT OR IGNORE INTO keys (keyId, createdAt, publicJwk, sealedPrivateKey) VALUES (?, ?, ?, ?)",
			row: (d) => [
				str(d.keyId),
				str(d.createdAt),
				json(d.publicJwk),
				str(d.sealedPrivateKey),
			],
		},
		{
			file: "leases.db",
			insert: `INSERT OR IGNORE INTO leases (leaseId, keyId, holder, grantSeq, grantedAt, expiresAt, endSeq, endedAt, "end") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			row: (d) => [
				str(d.leaseId),
				str(d.keyId),
				str(d.holder),
				num(d.grantSeq),
				str(d.grantedAt),
				str(d.expiresAt),
				num(d.endSeq),
				str(d.endedAt),
				str(d.end),
			],
		},
	],
	batcher: [
		{
			file: "runs.db",
			insert: "INSERT OR IGNORE INTO runs (runId, batchSize, status, startedAt, finishedAt, report, error, idempotencyKey) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
			row: (d) => [
				str(d.runId),
				num(d.batchSize),
				str(d.status),
				str(d.startedAt),
				str(d.finishedAt),
				json(d.report),
				str(d.error),
				str(d.idempotencyKey),
			],
		},
		{
			file: "batches.db",
			insert: "INSERT OR IGNORE INTO batches (batchId, runId, keyId, leaseId, recordIds, attempt, status, startedAt, finishedAt, signer, error, stored, duplicates) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			row: (d) => [
				str(d.batchId),
				str(d.runId),
				str(d.keyId),
				str(d.leaseId),
				json(d.recordIds ?? []),
				num(d.attempt) ?? 1,
				str(d.status),
				str(d.startedAt),
				str(d.finishedAt),
				str(d.signer),
				str(d.error),
				num(d.stored),
				num(d.duplicates),
			],
		},
	],
};

/** The earlier version's files of `owner` that are still in `dataDir`. */
export function legacyFiles(dataDir: string, owner: StoreOwner): string[] {
	if (!dataDir) return [];
	return IMPORTS[owner]
		.map((spec) => path.join(dataDir, spec.file))
		.filter((file) => fs.existsSync(file));
}

/**
 * Imports `owner`'s NeDB files from `dataDir` into `db` in one transaction, then renames them.
 * Returns a line for the log, or null when there was nothing to import.
 */
export function importLegacyStore(
	db: DatabaseSync,
	owner: StoreOwner,
	dataDir: string,
): string | null {
	const present = IMPORTS[owner].filter((spec) => fs.existsSync(path.join(dataDir, spec.file)));
	if (!present.length) return null;
	// Only into a new store: one that already holds data was imported before or started afresh.
	const table = /INTO (\w+)/.exec(IMPORTS[owner][0].insert)![1];
	if (db.prepare(`SELECT 1 FROM ${table} LIMIT 1`).get()) return null;
	// One transaction: all of the earlier store or none of it.
	beginImmediate(db);
	let counts: string[];
	try {
		counts = present.map((spec) => {
			const insert = db.prepare(spec.insert);
			let imported = 0;
			for (const doc of readNedbFile(path.join(dataDir, spec.file)))
				imported += Number(
					insert.run(...(spec.row(doc) as Array<string | number | null>)).changes,
				);
			return `${imported} from ${spec.file}`;
		});
		db.exec("COMMIT");
	} catch (err) {
		db.exec("ROLLBACK");
		throw err;
	}
	for (const spec of present)
		fs.renameSync(path.join(dataDir, spec.file), path.join(dataDir, spec.file + LEGACY_SUFFIX));
	return `${dataDir} held a store of an earlier version (NeDB files): imported ${counts.join(", ")}; the old files are kept as *.db${LEGACY_SUFFIX}`;
}
