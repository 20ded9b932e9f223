/**
 * The documents of an audit database in the export's fields and order (docs/design.md §8.3),
 * one at a time: the export streams them to its files, small tools collect them.
 */
import type { AuditDb } from "./audit-db";
import type { ImportCollection, ImportDocs } from "./import";
import { EXPORT_FIELDS, pick, type AuditSnapshot } from "./snapshot";

/** The store's own order where it has one (ids, the lease log's seq), an import's input order otherwise. */
function orderBy(db: AuditDb, collection: ImportCollection): string {
	const imported = db.kind === "import";
	switch (collection) {
		case "records":
			return imported ? "rowid" : "id";
		case "signatures":
			return imported ? "rowid" : "recordId";
		case "leases":
			return "grantSeq, rowid";
		default:
			return "rowid";
	}
}

const SCHEMA_OF: Record<ImportCollection, string> = {
	records: "rec",
	signatures: "rec",
	batches: "bat",
	runs: "bat",
	keys: "kr",
	leases: "kr",
};

function parseJson(text: unknown): unknown {
	try {
		return typeof text === "string" ? JSON.parse(text) : text;
	} catch {
		return text;
	}
}

/** The columns `schema.table` has. */
export function tableColumns(db: AuditDb, schema: string, table: string): Set<string> {
	return new Set(
		(
			db.sql.prepare(`PRAGMA ${schema}.table_info(${table})`).all() as Array<{ name: string }>
		).map((column) => column.name),
	);
}

/** Every document of `collection`, with exactly the export's fields in the export's order. */
export function* documents<C extends ImportCollection>(
	db: AuditDb,
	collection: C,
): Generator<ImportDocs[C]> {
	const fields = EXPORT_FIELDS[collection];
	const present = tableColumns(db, SCHEMA_OF[collection], collection);
	// A store an earlier version wrote may lack a later field: null, as in its export.
	const columns = fields
		.map((field) => (present.has(field) ? `"${field}"` : `NULL AS "${field}"`))
		.join(", ");
	const rows = db.sql
		.prepare(
			`SELECT ${columns} FROM ${SCHEMA_OF[collection]}.${collection} ORDER BY ${orderBy(db, collection)}`,
		)
		.iterate();
	for (const row of rows) {
		const doc = pick<Record<string, unknown>>(row, fields);
		// The one field stored as JSON text: the export has the array.
		if (collection === "batches") doc.recordIds = parseJson(doc.recordIds);
		yield doc as unknown as ImportDocs[C];
	}
}

/** The whole audit database in memory, for tests and small stores: never for a real one. */
export function readSnapshot(db: AuditDb): AuditSnapshot {
	return {
		records: [...documents(db, "records")],
		signatures: [...documents(db, "signatures")],
		batches: [...documents(db, "batches")],
		leases: [...documents(db, "leases")],
		keys: [...documents(db, "keys")],
		jwks: { keys: db.jwks.keys },
		runs: [...documents(db, "runs")],
	};
}
