/**
 * The audit database: one SQLite connection with the three owners' files attached read-only
 * under fixed schema names (`rec`, `bat`, `kr`), plus the public JWKS. The audit, the export
 * and the verification floor read it the same way whether it holds the embedded store itself
 * or an import (an export, a snapshot, pages read through the services).
 */
import fs from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { JWK } from "jose";
import { legacyFiles } from "../store/legacy-nedb";
import { STORE_FILES, type StoreOwner } from "../store/schema";
import { UserError } from "../user-error";
import { BUSY_TIMEOUT_MS, attachReadOnly } from "./read-only";
import { publicJwk } from "./snapshot";

/**
 * `store`: the owners' own files, whose unique keys make duplicates impossible. `import`: the
 * same tables without unique keys (rowid tables, plain indexes), so duplicates and corrupt
 * data stay visible to the audit; queries then break ties by rowid.
 */
export type AuditDbKind = "store" | "import";

export type AuditFiles = Record<StoreOwner, string>;

/** Schema name of each owner's file on an audit connection. */
export const SCHEMA = { records: "rec", batcher: "bat", keyring: "kr" } as const satisfies Record<
	StoreOwner,
	string
>;

/** The tables each file must hold. */
const TABLES: Record<StoreOwner, string[]> = {
	records: ["records", "signatures"],
	batcher: ["runs", "batches"],
	keyring: ["keys", "leases"],
};

/**
 * The order the read snapshots are taken in. A lease is stored before its batch's signatures
 * and a batch before it is dispatched, so the signatures are read first and the batches and
 * leases after them: a live store then never shows a signature whose lease or batch it missed.
 */
export const CAUSAL_ORDER: StoreOwner[] = ["records", "batcher", "keyring"];

export interface AuditDb {
	readonly kind: AuditDbKind;
	readonly files: AuditFiles;
	/** The public JWKS as the source gives it (an export's may wrongly carry private members: the audit reports them). */
	readonly jwks: { keys: JWK[] };
	/** Read-only: the files under `rec`, `bat`, `kr`. */
	readonly sql: DatabaseSync;
	close(): void;
}

/** The embedded store is not there or is not a store: one line naming what is missing. */
export class StoreFilesError extends UserError {}

/** A connection to `files`, each attached read-only; the owners may keep writing meanwhile. */
export function openReadOnly(files: AuditFiles, owners: StoreOwner[] = CAUSAL_ORDER): DatabaseSync {
	const sql = new DatabaseSync(":memory:");
	try {
		sql.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
		for (const owner of owners) {
			try {
				attachReadOnly(sql, files[owner], SCHEMA[owner]);
				const tables = new Set(
					sql
						.prepare(
							`SELECT name FROM ${SCHEMA[owner]}.sqlite_master WHERE type = 'table'`,
						)
						.all()
						.map((row) => row.name),
				);
				const missing = TABLES[owner].filter((table) => !tables.has(table));
				if (missing.length)
					throw new StoreFilesError(
						`${files[owner]} is not the ${owner} store: it has no table ${missing.join(", ")}`,
					);
			} catch (err) {
				if (err instanceof StoreFilesError) throw err;
				throw new StoreFilesError(`Cannot read ${files[owner]}: ${(err as Error).message}`);
			}
		}
		return sql;
	} catch (err) {
		sql.close();
		throw err;
	}
}

export class AuditDatabase implements AuditDb {
	readonly kind: AuditDbKind;
	readonly files: AuditFiles;
	readonly jwks: { keys: JWK[] };
	readonly sql: DatabaseSync;
	#onClose: () => void;
	#closed = false;

	constructor(
		kind: AuditDbKind,
		files: AuditFiles,
		jwks: { keys: JWK[] } | null,
		onClose: () => void = () => undefined,
	) {
		this.kind = kind;
		this.files = files;
		this.sql = openReadOnly(files);
		this.jwks = jwks ?? storedJwks(this.sql);
		this.#onClose = onClose;
	}

	close(): void {
		if (this.#closed) return;
		this.#closed = true;
		try {
			this.sql.close();
		} finally {
			this.#onClose();
		}
	}
}

/** The JWKS as the keyring serves it: each key's stored public JWK, public members only. */
function storedJwks(sql: DatabaseSync): { keys: JWK[] } {
	const keys: JWK[] = [];
	for (const row of sql
		.prepare("SELECT keyId, publicJwk FROM kr.keys ORDER BY keyId")
		.iterate()) {
		let jwk: JWK = {};
		try {
			const parsed = JSON.parse(String(row.publicJwk));
			if (parsed && typeof parsed === "object") jwk = parsed;
		} catch {
			// Unreadable: the audit reports a JWKS key that is not an Ed25519 public key.
		}
		keys.push({
			...publicJwk(jwk),
			kid: typeof jwk.kid === "string" ? jwk.kid : String(row.keyId),
		});
	}
	return { keys };
}

/** The store files of `dataDir`. */
export function storeFiles(dataDir: string): AuditFiles {
	return {
		records: path.join(dataDir, STORE_FILES.records),
		batcher: path.join(dataDir, STORE_FILES.batcher),
		keyring: path.join(dataDir, STORE_FILES.keyring),
	};
}

/**
 * The embedded store of `dataDir`, read-only: nothing is created, seeded or changed (SQLite
 * may add its `-wal`/`-shm` companions beside a file no owner has open).
 */
export function openStoreFiles(dataDir: string): AuditDb {
	if (!dataDir)
		throw new StoreFilesError(
			"DATA_DIR is empty, which means an in-memory store: there is nothing stored to read",
		);
	const files = storeFiles(path.resolve(dataDir));
	const missing = Object.values(files)
		.filter((file) => !fs.existsSync(file))
		.map((file) => path.basename(file));
	if (missing.length) {
		// A DATA_DIR an earlier version wrote: its NeDB files are imported by the services, not here.
		const legacy = (Object.keys(files) as StoreOwner[]).flatMap((owner) =>
			legacyFiles(path.resolve(dataDir), owner).map((file) => path.basename(file)),
		);
		throw new StoreFilesError(
			legacy.length
				? `${path.resolve(dataDir)} holds an earlier version's store (${legacy.join(", ")}), not imported yet: start the services on it once (npm start, or npm run serve), which imports it and keeps the old files, then audit`
				: `No embedded store in ${path.resolve(dataDir)} (missing ${missing.join(", ")}): run npm start first, or pass --data-dir`,
		);
	}
	return new AuditDatabase("store", files, null);
}

/** Runs `work` on `db`, then closes `db` (an import's files are removed), whether or not it threw. */
export async function closeAfter<T>(
	db: AuditDb,
	work: (db: AuditDb) => T | Promise<T>,
): Promise<T> {
	try {
		return await work(db);
	} finally {
		db.close();
	}
}

/**
 * Runs `work` on one read snapshot of all three files, taken in causal order: what the audit
 * and the export read on the main connection belongs together even while the owners write.
 */
export async function withReadSnapshot<T>(db: AuditDb, work: () => Promise<T>): Promise<T> {
	db.sql.exec("BEGIN");
	try {
		for (const owner of CAUSAL_ORDER)
			db.sql.prepare(`SELECT count(*) FROM ${SCHEMA[owner]}.sqlite_master`).get();
		return await work();
	} finally {
		db.sql.exec("COMMIT");
	}
}

/** Waits for the event loop: a long pass on the main thread lets the worker threads' results in. */
export function yieldToEventLoop(): Promise<void> {
	return new Promise((resolve) => setImmediate(resolve));
}

/** SQLite's order of values (NULL, numbers, text by UTF-8 bytes, blobs), for merging two ordered queries. */
export function compareSql(a: unknown, b: unknown): number {
	const rank = (v: unknown) =>
		v == null
			? 0
			: typeof v === "number" || typeof v === "bigint"
				? 1
				: typeof v === "string"
					? 2
					: 3;
	const ra = rank(a);
	const rb = rank(b);
	if (ra !== rb) return ra - rb;
	if (ra === 1) return (a as number) < (b as number) ? -1 : (a as number) > (b as number) ? 1 : 0;
	if (ra === 2) return compareUtf8(a as string, b as string);
	return 0;
}

/** UTF-8 byte order (SQLite's BINARY collation): UTF-16 order except that surrogates sort after U+E000..U+FFFF. */
export function compareUtf8(a: string, b: string): number {
	if (a === b) return 0;
	const n = Math.min(a.length, b.length);
	for (let i = 0; i < n; i++) {
		let x = a.charCodeAt(i);
		let y = b.charCodeAt(i);
		if (x === y) continue;
		if (x >= 0xd800 && y >= 0xd800) {
			x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
			y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
		}
		return x - y;
	}
	return a.length - b.length;
}
