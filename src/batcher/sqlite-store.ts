/** The batcher's store on the embedded SQLite file `batcher.sqlite`. */
import { BATCH_FIELDS, type BatchDoc, type BatchStatus, type Page, type RunDoc } from "../contract";
import { BATCHER_SCHEMA } from "../store/schema";
import {
	closeStore,
	ensureColumn,
	openStore,
	Statements,
	type DatabaseSync,
} from "../store/sqlite";
import type { BatcherStore, BatchSummary } from "./ports";

const RUN_COLUMNS = [
	"runId",
	"batchSize",
	"status",
	"startedAt",
	"finishedAt",
	"report",
	"error",
	"idempotencyKey",
	"requestFingerprint",
	"cancelRequestedAt",
	"follow",
] as const;
const BATCH_COLUMNS = [
	...BATCH_FIELDS,
	"signer",
	"error",
	"stored",
	"duplicates",
	"unsigned",
	"short",
] as const;
/** Columns stored as JSON text. */
const JSON_COLUMNS = new Set(["report", "recordIds"]);
/** Columns stored as 0 or 1. */
const BOOLEAN_COLUMNS = new Set(["follow"]);

type Row = Record<string, string | number | null>;

function toRow(doc: object, columns: readonly string[]): Row {
	const row: Row = {};
	for (const column of columns) {
		const value = (doc as Record<string, unknown>)[column];
		if (value === undefined) continue;
		row[column] = BOOLEAN_COLUMNS.has(column)
			? Number(Boolean(value))
			: JSON_COLUMNS.has(column)
				? value === null
					? null
					: JSON.stringify(value)
				: (value as string | number | null);
	}
	return row;
}

/** A run's fields that are absent, not null, when unset. */
const OPTIONAL_RUN_FIELDS = new Set([
	"error",
	"idempotencyKey",
	"requestFingerprint",
	"cancelRequestedAt",
	"follow",
]);

function fromRow<T>(row: Row | undefined, key: string, optional = new Set<string>()): T | null {
	if (!row) return null;
	const doc: Record<string, unknown> = { _id: row[key] };
	for (const [column, value] of Object.entries(row)) {
		if (value === null && optional.has(column)) continue;
		doc[column] = BOOLEAN_COLUMNS.has(column)
			? value === 1
			: JSON_COLUMNS.has(column) && typeof value === "string"
				? JSON.parse(value)
				: value;
	}
	return doc as T;
}

const toRun = (row: Row | undefined) => fromRow<RunDoc>(row, "runId", OPTIONAL_RUN_FIELDS);

export class SqliteBatcherStore implements BatcherStore {
	private readonly statements: Statements;

	private constructor(
		private readonly db: DatabaseSync,
		private readonly dataDir: string,
	) {
		this.statements = new Statements(db);
	}

	static open(dataDir: string, log?: (line: string) => void): SqliteBatcherStore {
		const db = openStore({ dataDir, owner: "batcher", schema: BATCHER_SCHEMA, log });
		// A file from before batches counted their unsigned records, or runs could be cancelled.
		ensureColumn(db, "batches", "unsigned", "INTEGER");
		ensureColumn(db, "runs", "cancelRequestedAt", "TEXT");
		// A file from before follow runs (docs/design.md §7.7).
		ensureColumn(db, "runs", "follow", "INTEGER");
		ensureColumn(db, "batches", "short", "TEXT");
		return new SqliteBatcherStore(db, dataDir);
	}

	private insert(table: string, row: Row): void {
		const columns = Object.keys(row);
		this.statements
			.get(
				`INSERT INTO ${table} (${columns.join(", ")}) VALUES (${columns.map((c) => `:${c}`).join(", ")})`,
			)
			.run(row);
	}

	private update(table: string, key: string, id: string, row: Row): number {
		const columns = Object.keys(row);
		if (!columns.length) return 0;
		return Number(
			this.statements
				.get(
					`UPDATE ${table} SET ${columns.map((c) => `${c} = :${c}`).join(", ")} WHERE ${key} = :$key`,
				)
				.run({ ...row, $key: id }).changes,
		);
	}

	async insertRun(run: RunDoc): Promise<void> {
		this.insert("runs", toRow(run, RUN_COLUMNS));
	}

	async getRun(runId: string): Promise<RunDoc | null> {
		return toRun(
			this.statements.get("SELECT * FROM runs WHERE runId = ?").get(runId) as Row | undefined,
		);
	}

	async runByIdempotencyKey(key: string): Promise<RunDoc | null> {
		return toRun(
			this.statements.get("SELECT * FROM runs WHERE idempotencyKey = ?").get(key) as
				Row | undefined,
		);
	}

	async interruptedRun(): Promise<RunDoc | null> {
		return toRun(
			this.statements
				.get("SELECT * FROM runs WHERE status = 'running' ORDER BY startedAt LIMIT 1")
				.get() as Row | undefined,
		);
	}

	async listRuns(): Promise<RunDoc[]> {
		return (
			this.statements.get("SELECT * FROM runs ORDER BY startedAt DESC").all() as Row[]
		).map((row) => toRun(row)!);
	}

	async updateRun(runId: string, fields: Partial<RunDoc>): Promise<void> {
		this.update("runs", "runId", runId, toRow(fields, RUN_COLUMNS));
	}

	async insertBatch(batch: BatchDoc): Promise<void> {
		this.insert("batches", toRow(batch, BATCH_COLUMNS));
	}

	async updateBatch(batchId: string, fields: Partial<BatchDoc>): Promise<void> {
		this.update("batches", "batchId", batchId, toRow(fields, BATCH_COLUMNS));
	}

	async pendingBatches(runId: string): Promise<BatchDoc[]> {
		return (
			this.statements
				.get(
					"SELECT * FROM batches WHERE runId = ? AND status = 'pending' ORDER BY batchId",
				)
				.all(runId) as Row[]
		).map((row) => fromRow<BatchDoc>(row, "batchId")!);
	}

	async batchSummary(runId: string): Promise<BatchSummary> {
		const byStatus: Partial<Record<BatchStatus, number>> = {};
		let total = 0;
		for (const row of this.statements
			.get("SELECT status, count(*) AS n FROM batches WHERE runId = ? GROUP BY status")
			.all(runId) as Array<{ status: BatchStatus; n: number }>) {
			byStatus[row.status] = Number(row.n);
			total += Number(row.n);
		}
		const signed = this.statements
			.get(
				"SELECT coalesce(sum(stored), 0) AS stored, coalesce(sum(duplicates), 0) AS duplicates, count(DISTINCT keyId) AS keysUsed FROM batches WHERE runId = ? AND status IN ('signed', 'partial')",
			)
			.get(runId) as { stored: number; duplicates: number; keysUsed: number };
		return {
			total,
			byStatus,
			stored: Number(signed.stored),
			duplicates: Number(signed.duplicates),
			keysUsed: Number(signed.keysUsed),
		};
	}

	async page(
		collection: "runs" | "batches",
		after: string | undefined,
		limit: number,
	): Promise<Page> {
		const key = collection === "runs" ? "runId" : "batchId";
		const rows = this.statements
			.get(`SELECT * FROM ${collection} WHERE ${key} > ? ORDER BY ${key} LIMIT ?`)
			.all(after ?? "", limit) as Row[];
		const docs = rows.map((row) =>
			fromRow<Record<string, unknown>>(
				row,
				key,
				collection === "runs" ? OPTIONAL_RUN_FIELDS : undefined,
			)!,
		);
		return { docs, next: rows.length === limit ? String(rows[rows.length - 1][key]) : null };
	}

	async ping(): Promise<void> {
		this.db.prepare("SELECT 1").get();
	}

	async close(): Promise<void> {
		await closeStore(this.db, this.dataDir, "batcher");
	}
}
