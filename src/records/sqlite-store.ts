/** The records store on the embedded SQLite file `records.sqlite`. */
import type {
	Arrival,
	ClosedBatch,
	Page,
	RecordPayload,
	RecordsList,
	RecordView,
	SignatureDoc,
} from "../contract";
import { RECORDS_SCHEMA } from "../store/schema";
import { closeStore, openStore, Statements, transaction, type DatabaseSync } from "../store/sqlite";
import { signatureLeaf } from "../tlog/leaves";
import { leafHashesOf, storedLeafHashes } from "../tlog/piece-leaves";
import { SignatureHasher } from "../tlog/signature-hasher";
import { SqliteLog } from "../tlog/sqlite-log";
import { transparencyLogs } from "../tlog/log-switch";
import {
	BatchClosedError,
	closedBatch,
	signatureView,
	type LoggedSignature,
	type RecordsStore,
	type SignedBatch,
	type StoredRecord,
} from "./store";
import { RecordConflictError, recordMessageBytes, type SubmitOutcome } from "./submission";

const SQL = {
	insertRecords:
		"INSERT INTO records (id, data, seq) SELECT value->>0, value->>1, ? + key FROM json_each(?) WHERE true ON CONFLICT(id) DO NOTHING",
	submitRecords:
		"INSERT INTO records (id, data, seq, submittedBy, submittedAt) SELECT value->>0, value->>1, ? + key, ?, ? FROM json_each(?) WHERE true ON CONFLICT(id) DO NOTHING",
	storedAmong:
		"SELECT r.id, r.data FROM json_each(?) j JOIN records r ON r.id = j.value->>0 WHERE r.data IS NOT j.value->>1",
	unsignedArrivals:
		"SELECT id, data, seq, submittedAt FROM records r WHERE seq > ? AND NOT EXISTS (SELECT 1 FROM signatures s WHERE s.recordId = r.id) ORDER BY seq LIMIT ?",
	unsignedRecords:
		"SELECT id, data FROM records r WHERE id > ? AND NOT EXISTS (SELECT 1 FROM signatures s WHERE s.recordId = r.id) ORDER BY id LIMIT ?",
	/** Whether no signature is stored for an id after ?: one seek of the signatures' key. */
	noSignatureAfter: "SELECT NOT EXISTS (SELECT 1 FROM signatures WHERE recordId > ?) AS none",
	/** unsignedRecords when noSignatureAfter holds: no lookup of each record's signature. */
	recordsAfter: "SELECT id, data FROM records WHERE id > ? ORDER BY id LIMIT ?",
	unsignedAmong:
		"SELECT r.id, r.data FROM json_each(?) j JOIN records r ON r.id = j.value WHERE NOT EXISTS (SELECT 1 FROM signatures s WHERE s.recordId = j.value) ORDER BY j.key",
	/** As recordMessageBytes: the data as JSON (json_quote escapes as JSON.stringify does), less its quotes. */
	maxRecordBytes:
		"SELECT coalesce(max(length(CAST(id AS BLOB)) + length(CAST(json_quote(data) AS BLOB)) - 2), 0) AS n FROM records",
	/** A piece's rows, numbered in the log from ?5 in the piece's order (docs/design.md §8.4). */
	storeSignatures:
		"INSERT INTO signatures (recordId, keyId, batchId, leaseId, jws, signedAt, logIndex) " +
		"SELECT value->>0, ?1, ?2, ?3, value->>1, value->>2, ?5 + key FROM json_each(?4) WHERE true ON CONFLICT(recordId) DO NOTHING",
	isClosed: "SELECT 1 FROM closed_batches WHERE batchId = ?",
	close: "INSERT INTO closed_batches (batchId, closedAt) VALUES (?, ?) ON CONFLICT(batchId) DO NOTHING",
	signedUnder:
		"SELECT keyId, leaseId, count(*) AS count FROM signatures WHERE batchId = ? GROUP BY keyId, leaseId ORDER BY keyId, leaseId",
	record: "SELECT id, data, submittedBy, submittedAt FROM records WHERE id = ?",
	listAll:
		"SELECT r.id, r.data, r.submittedBy, r.submittedAt, s.keyId, s.batchId, s.leaseId, s.jws, s.signedAt FROM records r LEFT JOIN signatures s ON s.recordId = r.id WHERE r.id > ? ORDER BY r.id LIMIT ?",
	listSigned:
		"SELECT r.id, r.data, r.submittedBy, r.submittedAt, s.keyId, s.batchId, s.leaseId, s.jws, s.signedAt FROM signatures s JOIN records r ON r.id = s.recordId WHERE s.recordId > ? ORDER BY s.recordId LIMIT ?",
	signature:
		"SELECT recordId, keyId, batchId, leaseId, jws, signedAt FROM signatures WHERE recordId = ?",
	pageRecords: "SELECT id AS _id, data FROM records WHERE id > ? ORDER BY id LIMIT ?",
	pageSignatures:
		"SELECT recordId AS _id, recordId, keyId, batchId, leaseId, jws, signedAt FROM signatures WHERE recordId > ? ORDER BY recordId LIMIT ?",
	/** Of a piece some of whose records were signed already: the rows it stored, in its order. */
	storedOfPiece:
		"SELECT recordId, keyId, batchId, leaseId, jws, signedAt, logIndex FROM signatures WHERE recordId IN (SELECT value FROM json_each(?)) AND logIndex >= ? ORDER BY logIndex",
	renumber: "UPDATE signatures SET logIndex = ? WHERE recordId = ?",
	unlogged:
		"SELECT recordId, keyId, batchId, leaseId, jws, signedAt FROM signatures WHERE recordId > ? AND logIndex IS NULL ORDER BY recordId LIMIT ?",
	numberUnlogged:
		"UPDATE signatures SET logIndex = ?1 + j.key FROM json_each(?2) j WHERE signatures.recordId = j.value",
	logged: "SELECT recordId, keyId, batchId, leaseId, jws, signedAt, logIndex FROM signatures WHERE recordId = ?",
	unhashed:
		"SELECT recordId, keyId, batchId, leaseId, jws, signedAt FROM signatures WHERE logIndex >= ? ORDER BY logIndex LIMIT ?",
};

/** Signatures read per page when the log takes in those stored before it existed. */
const MIGRATION_PAGE = 10_000;

/**
 * The signature log's index on each signature row, added to a store made before the log (its
 * rows are numbered once, by logEarlierSignatures). Not indexed: an index costs every insert
 * more than the whole log does, and only the audit and the export read rows in log order.
 */
function addLogIndex(db: DatabaseSync): void {
	if (!db.prepare("SELECT 1 FROM pragma_table_info('signatures') WHERE name = 'logIndex'").get())
		db.exec("ALTER TABLE signatures ADD COLUMN logIndex INTEGER");
}

/** Sorts before every id: `id > ""` is every id. */
const FIRST = "";

/** `[id, data]` rows (Statements.arrays) as records. */
function plain(rows: unknown[]): RecordPayload[] {
	return (rows as Array<[string, string]>).map(([id, data]) => ({ id, data }));
}

export class SqliteRecordsStore implements RecordsStore {
	private readonly statements: Statements;
	private records: number;
	/** Kept here: this process is the only writer of its file. */
	private signed: number;
	private largest: number | null = null;
	/** Every stored signature, in commit order (docs/design.md §8.4). */
	readonly signatureLog: SqliteLog;
	/** Hashes the log on its own thread; the log's next index, ahead of the hashed tree by the pieces in flight. */
	private readonly hasher: SignatureHasher;
	private numbered: number;
	/** The last `seq` given: the next record arrives after it. */
	private lastSeq: number;

	private constructor(
		private readonly db: DatabaseSync,
		private readonly dataDir: string,
		log?: (line: string) => void,
	) {
		this.statements = new Statements(db);
		this.signatureLog = new SqliteLog(db, "signature_log");
		addLogIndex(db);
		this.logEarlierSignatures(log);
		const rows = db
			.prepare(
				"SELECT count(*) AS n, coalesce(max(logIndex) + 1, 0) AS numbered FROM signatures",
			)
			.get() as { n: number; numbered: number };
		this.hashNumbered(Number(rows.numbered));
		this.numbered = this.signatureLog.length;
		this.hasher = new SignatureHasher(db, this.signatureLog);
		this.signatureLog.settleWith = () => this.hasher.settle();
		this.records = Number(
			(db.prepare("SELECT count(*) AS n FROM records").get() as { n: number }).n,
		);
		this.signed = Number(rows.n);
		this.lastSeq = Number(
			(db.prepare("SELECT coalesce(max(seq), 0) AS n FROM records").get() as { n: number }).n,
		);
	}

	static open(dataDir: string, log?: (line: string) => void): SqliteRecordsStore {
		const db = openStore({ dataDir, owner: "records", schema: RECORDS_SCHEMA, log });
		const numbered = migrateArrivalOrder(db);
		if (numbered) log?.(`Numbered ${numbered} records in arrival order (id order), once`);
		return new SqliteRecordsStore(db, dataDir, log);
	}

	/** Once, when the log is new: the signatures stored before it existed enter it in store order. */
	private logEarlierSignatures(log?: (line: string) => void): void {
		if (this.signatureLog.isMigrated()) return;
		const count = this.appendLogged(() => {
			let count = 0;
			for (let after = ""; ;) {
				const rows = this.statements
					.get(SQL.unlogged)
					.all(after, MIGRATION_PAGE) as unknown as SignatureDoc[];
				const start = this.signatureLog.append(rows.map(signatureLeaf));
				this.statements
					.get(SQL.numberUnlogged)
					.run(start, JSON.stringify(rows.map((s) => s.recordId)));
				count += rows.length;
				if (rows.length < MIGRATION_PAGE) break;
				after = rows[rows.length - 1].recordId;
			}
			this.signatureLog.markMigrated(count, new Date().toISOString());
			return count;
		});
		if (count) log?.(`The signature log took in ${count} signatures stored before it existed`);
	}

	/** After a crash: the rows numbered but not yet hashed enter the tree, in log order. */
	private hashNumbered(numbered: number): void {
		this.appendLogged(() => {
			while (this.signatureLog.length < numbered) {
				const rows = this.statements
					.get(SQL.unhashed)
					.all(this.signatureLog.length, MIGRATION_PAGE) as unknown as SignatureDoc[];
				if (!rows.length) break;
				this.signatureLog.append(rows.map(signatureLeaf));
			}
		});
	}

	/** Runs `work` in one write transaction; a rollback takes the log's memory back too. */
	private appendLogged<T>(work: () => T): T {
		try {
			return transaction(this.db, work);
		} catch (err) {
			this.signatureLog.reload();
			throw err;
		}
	}

	async recordCount(): Promise<number> {
		return this.records;
	}

	async signedCount(): Promise<number> {
		return this.signed;
	}

	async insertRecords(records: RecordPayload[]): Promise<void> {
		const { changes } = transaction(this.db, () =>
			this.statements
				.get(SQL.insertRecords)
				.run(this.lastSeq + 1, JSON.stringify(records.map((r) => [r.id, r.data]))),
		);
		this.lastSeq += records.length;
		this.records += Number(changes);
		this.largest = null;
	}

	async submitRecords(
		records: RecordPayload[],
		submitter: string,
		submittedAt: string,
	): Promise<SubmitOutcome> {
		const rows = JSON.stringify(records.map((r) => [r.id, r.data]));
		// One transaction with no await in it, by the file's only writer: the check holds for the insert.
		const stored = transaction(this.db, () => {
			const conflicts = this.statements.get(SQL.storedAmong).all(rows) as Array<{
				id: string;
			}>;
			if (conflicts.length) throw new RecordConflictError(conflicts.map((row) => row.id));
			return Number(
				this.statements
					.get(SQL.submitRecords)
					.run(this.lastSeq + 1, submitter, submittedAt, rows).changes,
			);
		});
		this.lastSeq += records.length;
		this.records += stored;
		if (this.largest !== null)
			for (const r of records) this.largest = Math.max(this.largest, recordMessageBytes(r));
		return { stored, replayed: records.length - stored };
	}

	async lastArrival(): Promise<number> {
		return this.lastSeq;
	}

	async unsignedArrivals(afterSeq: number, limit: number): Promise<Arrival[]> {
		return (
			this.statements.arrays(SQL.unsignedArrivals).all(afterSeq, limit) as unknown as Array<
				[string, string, number, string | null]
			>
		).map(([id, data, seq, submittedAt]) => ({
			id,
			data,
			seq: Number(seq),
			submittedAt: submittedAt ?? null,
		}));
	}

	async unsignedRecords(after: string | undefined, limit: number): Promise<RecordPayload[]> {
		const from = after ?? FIRST;
		// A run's first pass reads ahead of every signature stored (they are for the pages before):
		// then each record needs no lookup of its signature, a third of the page's cost.
		const none = (this.statements.get(SQL.noSignatureAfter).get(from) as { none: number }).none;
		return plain(
			this.statements.arrays(none ? SQL.recordsAfter : SQL.unsignedRecords).all(from, limit),
		);
	}

	async unsignedAmong(ids: string[]): Promise<RecordPayload[]> {
		return plain(this.statements.arrays(SQL.unsignedAmong).all(JSON.stringify(ids)));
	}

	async maxRecordBytes(): Promise<number> {
		// Records never change once seeded: measured once (a full scan), then kept.
		this.largest ??= Number((this.statements.get(SQL.maxRecordBytes).get() as { n: number }).n);
		return this.largest;
	}

	async storeSignatures({
		batchId,
		keyId,
		leaseId,
		signatures,
	}: SignedBatch): Promise<{ stored: number; duplicates: number }> {
		const rows = JSON.stringify(signatures.map((s) => [s.recordId, s.jws, s.signedAt]));
		// Hashed by this process's signing threads, when this very array came from its signer.
		const leafHashes = leafHashesOf(signatures, { keyId, batchId, leaseId });
		// The check and the insert run with no await between them, and this process is the
		// file's only writer: a batch closed before is refused, one closed after sees these rows.
		// The rows and their leaves go in one transaction, numbered in the piece's order
		// (docs/design.md §8.4); a record signed before keeps its row and gets no leaf.
		const start = this.numbered;
		const logged = this.appendLogged(() => {
			if (this.statements.get(SQL.isClosed).get(batchId)) throw new BatchClosedError(batchId);
			this.hasher.applyReceived();
			const stored = Number(
				this.statements.get(SQL.storeSignatures).run(keyId, batchId, leaseId, rows, start)
					.changes,
			);
			let piece = { stored, rows, leafHashes, appended: false };
			if (stored && stored < signatures.length) {
				const gapless = this.closeGaps(start, signatures);
				piece = {
					...piece,
					rows: JSON.stringify(gapless.map((s) => [s.recordId, s.jws, s.signedAt])),
					leafHashes: leafHashes && storedLeafHashes(leafHashes, gapless, start),
				};
			}
			// Hashed already, and nothing in flight on the hashing thread: the tree takes it here, in order.
			if (stored && piece.leafHashes && this.hasher.idle && transparencyLogs.on) {
				this.signatureLog.appendLeafHashes(piece.leafHashes);
				piece.appended = true;
			}
			return piece;
		});
		this.hasher.commit();
		const stored = logged.stored;
		if (stored) {
			this.numbered += stored;
			if (!logged.appended && transparencyLogs.on)
				this.hasher.hash(
					logged.leafHashes
						? { leafHashes: logged.leafHashes }
						: { keyId, batchId, leaseId, rows: logged.rows },
					start,
					stored,
				);
		}
		this.signed += stored;
		return { stored, duplicates: signatures.length - stored };
	}

	/**
	 * The rows a piece with duplicates stored, renumbered from `start` with no gaps, in its order;
	 * each keeps the logIndex it was inserted with, `start` + its place in the piece.
	 */
	private closeGaps(start: number, signatures: SignedBatch["signatures"]): LoggedSignature[] {
		const stored = this.statements
			.get(SQL.storedOfPiece)
			.all(
				JSON.stringify(signatures.map((s) => s.recordId)),
				start,
			) as unknown as LoggedSignature[];
		stored.forEach((row, i) => {
			if (Number(row.logIndex) !== start + i)
				this.statements.get(SQL.renumber).run(start + i, row.recordId);
		});
		return stored;
	}

	/** A signature with its place in the signature log; null when the record has no signature. */
	async loggedSignature(recordId: string): Promise<LoggedSignature | null> {
		const row = this.statements.get(SQL.logged).get(recordId) as LoggedSignature | undefined;
		return row
			? { ...row, logIndex: row.logIndex === null ? null : Number(row.logIndex) }
			: null;
	}

	async closeBatch(batchId: string, recordIds: string[]): Promise<ClosedBatch> {
		this.statements.get(SQL.close).run(batchId, new Date().toISOString());
		return closedBatch(this, batchId, recordIds);
	}

	async signedUnder(batchId: string): Promise<ClosedBatch["signed"]> {
		return (
			this.statements.get(SQL.signedUnder).all(batchId) as Array<{
				keyId: string;
				leaseId: string;
				count: number;
			}>
		).map((g) => ({ keyId: g.keyId, leaseId: g.leaseId, count: Number(g.count) }));
	}

	async record(id: string): Promise<StoredRecord | null> {
		const row = this.statements.get(SQL.record).get(id) as StoredRecord | undefined;
		return row ? { ...row } : null;
	}

	async signature(recordId: string): Promise<SignatureDoc | null> {
		return (
			(this.statements.get(SQL.signature).get(recordId) as SignatureDoc | undefined) ?? null
		);
	}

	async list(
		after: string | undefined,
		limit: number,
		signed: boolean | undefined,
	): Promise<RecordsList> {
		if (signed === false) {
			const rows = await this.unsignedRecords(after, limit);
			return {
				records: rows.map((r) => ({
					...r,
					submittedBy: null,
					submittedAt: null,
					signature: null,
				})),
				next: rows.length === limit ? rows[rows.length - 1].id : null,
			};
		}
		const rows = this.statements
			.get(signed ? SQL.listSigned : SQL.listAll)
			.all(after ?? FIRST, limit) as unknown as Array<StoredRecord & Partial<SignatureDoc>>;
		const records: RecordView[] = rows.map((r) => ({
			id: r.id,
			data: r.data,
			submittedBy: r.submittedBy ?? null,
			submittedAt: r.submittedAt ?? null,
			signature: r.keyId ? signatureView(r as SignatureDoc) : null,
		}));
		return { records, next: rows.length === limit ? rows[rows.length - 1].id : null };
	}

	async page(
		collection: "records" | "signatures",
		after: string | undefined,
		limit: number,
	): Promise<Page> {
		const docs = this.statements
			.get(collection === "records" ? SQL.pageRecords : SQL.pageSignatures)
			.all(after ?? FIRST, limit) as Array<{ _id: string }>;
		return {
			docs: docs.map((doc) => ({ ...doc })),
			next: docs.length === limit ? docs[docs.length - 1]._id : null,
		};
	}

	async ping(): Promise<void> {
		this.db.prepare("SELECT 1").get();
	}

	async close(): Promise<void> {
		await this.hasher.close().catch(() => undefined);
		await closeStore(this.db, this.dataDir, "records");
	}
}

/**
 * A file from before submissions: the arrival columns added, its records numbered in id order
 * (after any already numbered: an earlier version's store imported now), then the index a follow
 * run pages by. Returns how many records it numbered (0 on every later open).
 */
function migrateArrivalOrder(db: DatabaseSync): number {
	const columns = new Set(
		(db.prepare("PRAGMA table_info(records)").all() as Array<{ name: string }>).map(
			(c) => c.name,
		),
	);
	return transaction(db, () => {
		for (const column of ["seq INTEGER", "submittedBy TEXT", "submittedAt TEXT"])
			if (!columns.has(column.split(" ")[0]))
				db.exec(`ALTER TABLE records ADD COLUMN ${column}`);
		db.exec("CREATE INDEX IF NOT EXISTS records_seq ON records (seq)");
		const base = (
			db.prepare("SELECT coalesce(max(seq), 0) AS n FROM records").get() as {
				n: number;
			}
		).n;
		return Number(
			db
				.prepare(
					"UPDATE records SET seq = ? + numbered.n " +
						"FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM records WHERE seq IS NULL) AS numbered " +
						"WHERE records.id = numbered.id",
				)
				.run(base).changes,
		);
	});
}
