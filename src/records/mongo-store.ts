/**
 * The records store on MongoDB. `records.signed` is a marker the records service keeps
 * itself (it owns both collections): an index on `(signed, _id)` makes paging the unsigned
 * records one indexed query per page, where a lookup per candidate would cost a round trip.
 * The marker is set after the signatures are stored, so it may lag (a crash in between):
 * a lagging record is offered again and its second signature is refused as a duplicate,
 * which sets the marker.
 *
 * Every document's `_id` is its natural key (a signature's is its record id), so the `_id`
 * index is the guard against a second signature: no other unique index repeats it.
 *
 * A batch closed by `closeBatch` (`closed_batches`) takes no more signatures. The check and
 * the insert are two commands, so one batch's writes and its close run one after another in
 * this process: the records service runs as a single instance, next to the batcher.
 *
 * Arrival order (`seq`, docs/design.md §4.4) is numbered here, by that single instance: the
 * submissions are stored one after another, and a follow run's pages read only the records of
 * submissions whose insert has returned (`visibleSeq`), so an unordered insert still under way
 * is never skipped past. Records stored before submissions existed are numbered in `_id` order
 * when the store opens, once.
 *
 * The signature log (docs/design.md §8.4, src/tlog/mongo-log.ts): each signature is inserted
 * with its leaf's index (`logIndex`, unique) and its leaf appended to the tree right after, one
 * piece at a time in this process, so the log's order is the order the pieces were stored. A
 * piece with duplicates leaves gaps in the indexes it was given, closed before its leaves are
 * appended. Rows given an index but not in the tree (a crash or a failed write in between) are
 * appended, in index order, before the next piece and at the next start.
 */
import type { AnyBulkWriteOperation, Collection } from "mongodb";
import type {
	Arrival,
	ClosedBatch,
	Page,
	RecordPayload,
	RecordsList,
	RecordView,
	SignatureDoc,
} from "../contract";
import {
	dropIndexIfPresent,
	insertUnordered,
	openMongoStore,
	pageById,
	type MongoConnection,
} from "../store/mongo";
import { signatureLeaf } from "../tlog/leaves";
import { MongoLog } from "../tlog/mongo-log";
import { leafHashesOf, storedLeafHashes } from "../tlog/piece-leaves";
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

interface RecordRow {
	_id: string;
	data: string;
	signed: boolean;
	/** Arrival order; absent only in a store from before submissions, until it opens once. */
	seq?: number;
	submittedBy?: string | null;
	submittedAt?: string | null;
}

type SignatureRow = SignatureDoc & { _id: string; logIndex?: number };

interface ClosedRow {
	_id: string;
	closedAt: string;
}

/** What a record's view shows. */
const LIST_FIELDS = { data: 1, submittedBy: 1, submittedAt: 1 } as const;

/** Records read per command when a scan must see them all: each command stays far within the socket timeout. */
const SCAN_PAGE = 100_000;
/** Signatures read per command when the log takes in rows it lacks. */
const LOG_PAGE = 10_000;

/** Gives `rows` (in log order) the indexes from `start` on, moving only those not there yet. */
function closeUp(rows: SignatureRow[], start: number): AnyBulkWriteOperation<SignatureRow>[] {
	// In ascending order each target index is free: every row's index is at least its target.
	return rows.flatMap((row, i) =>
		row.logIndex === start + i
			? []
			: [
					{
						updateOne: {
							filter: { _id: row._id },
							update: { $set: { logIndex: start + i } },
						},
					},
				],
	);
}

export class MongoRecordsStore implements RecordsStore {
	private records: number | null = null;
	private largest: number | null = null;

	/** Per batch, the tail of its writes and close in this process. */
	private readonly busy = new Map<string, Promise<unknown>>();
	/** Set when a piece's log write failed: the tree is read back and caught up before the next. */
	private logBehind = false;
	/** The last `seq` given, and the last whose insert has returned (what a follow run may page up to). */
	private lastSeq = 0;
	private visibleSeq = 0;
	/** The tail of the submissions: stored one after another. */
	private submitting: Promise<unknown> = Promise.resolve();

	private constructor(
		private readonly connection: MongoConnection,
		private readonly recordsOf: Collection<RecordRow>,
		private readonly signaturesOf: Collection<SignatureRow>,
		private readonly closedOf: Collection<ClosedRow>,
		/** Every stored signature, in the order the pieces were stored (docs/design.md §8.4). */
		readonly signatureLog: MongoLog,
	) {}

	/** Connects, creates the indexes and brings the signature log up to date: for the owning service. */
	static async open(
		uri: string,
		service: { broker: unknown; logger: unknown },
	): Promise<MongoRecordsStore> {
		return openMongoStore(uri, service, "records", MongoRecordsStore.over, async (store) => {
			// The guard against a second signature is the `_id` index (`_id` is the record id); these keep every query indexed.
			await store.signaturesOf.createIndex(
				{ batchId: 1, recordId: 1 },
				{ name: "signatures_batch" },
			);
			await store.recordsOf.createIndex({ signed: 1, _id: 1 }, { name: "records_unsigned" });
			// One leaf per index, and the rows read in log order (the catch-up, the audit).
			await store.signaturesOf.createIndex(
				{ logIndex: 1 },
				{
					unique: true,
					name: "signatures_log_index",
					partialFilterExpression: { logIndex: { $type: "number" } },
				},
			);
			await store.signatureLog.createIndexes();
			// Earlier versions repeated `_id` in a unique index: one more index write per signature, for nothing.
			await dropIndexIfPresent(store.signaturesOf, "signatures_record");
			await store.numberArrivals();
			await store.recordsOf.createIndex({ signed: 1, seq: 1 }, { name: "records_arrivals" });
			await store.startLog((line) =>
				(service.logger as { info?(line: string): void }).info?.(line),
			);
		});
	}

	/** Numbers records stored before submissions existed, in `_id` order (once), and finds the last `seq`. */
	private async numberArrivals(): Promise<void> {
		const [last] = await this.recordsOf
			.find({ seq: { $exists: true } }, { projection: { seq: 1 } })
			.sort({ seq: -1 })
			.limit(1)
			.toArray();
		this.lastSeq = last?.seq ?? 0;
		for (;;) {
			const rows = await this.recordsOf
				.find({ seq: { $exists: false } }, { projection: { _id: 1 } })
				.sort({ _id: 1 })
				.limit(SCAN_PAGE)
				.toArray();
			if (!rows.length) break;
			await this.recordsOf.bulkWrite(
				rows.map((row) => ({
					updateOne: {
						filter: { _id: row._id, seq: { $exists: false } },
						update: { $set: { seq: ++this.lastSeq } },
					},
				})),
				{ ordered: false },
			);
		}
		this.visibleSeq = this.lastSeq;
	}

	/** Over an open connection, creating nothing: what the read-only audit pages through. */
	static over(connection: MongoConnection): MongoRecordsStore {
		const { db } = connection;
		return new MongoRecordsStore(
			connection,
			db.collection<RecordRow>("records"),
			db.collection<SignatureRow>("signatures"),
			db.collection<ClosedRow>("closed_batches"),
			new MongoLog(db, "signature_log"),
		);
	}

	/**
	 * Reads the tree back, appends the rows numbered but not in it, and, the first time the log is
	 * kept, the signatures stored before it existed, in store order (by record id). Once that is
	 * done a row without an index is never taken in: the audit names it.
	 */
	private async startLog(log: (line: string) => void): Promise<void> {
		await this.signatureLog.reload();
		await this.catchUpLog();
		if (await this.signatureLog.isMigrated()) return;
		let count = 0;
		for (;;) {
			const rows = await this.signaturesOf
				.find({ logIndex: { $exists: false } })
				.sort({ _id: 1 })
				.limit(LOG_PAGE)
				.toArray();
			if (!rows.length) break;
			const start = this.signatureLog.length;
			await this.signaturesOf.bulkWrite(
				rows.map((row, i) => ({
					updateOne: {
						filter: { _id: row._id, logIndex: { $exists: false } },
						update: { $set: { logIndex: start + i } },
					},
				})),
				{ ordered: true },
			);
			await this.signatureLog.append(rows.map(signatureLeaf));
			count += rows.length;
			if (rows.length < LOG_PAGE) break;
		}
		await this.signatureLog.markMigrated(count, new Date().toISOString());
		if (count) log(`The signature log took in ${count} signatures stored before it existed`);
	}

	/** The rows with an index past the tree's end, in index order: gaps closed, appended. */
	private async catchUpLog(): Promise<void> {
		const log = this.signatureLog;
		for (;;) {
			const rows = await this.signaturesOf
				.find({ logIndex: { $gte: log.length } })
				.sort({ logIndex: 1 })
				.limit(LOG_PAGE)
				.toArray();
			if (!rows.length) return;
			const moves = closeUp(rows, log.length);
			if (moves.length) await this.signaturesOf.bulkWrite(moves, { ordered: true });
			await log.append(rows.map(signatureLeaf));
			if (rows.length < LOG_PAGE) return;
		}
	}

	async recordCount(): Promise<number> {
		// Records never change once seeded: counted once, from the collection's metadata.
		this.records ??= await this.recordsOf.estimatedDocumentCount();
		return this.records;
	}

	async signedCount(): Promise<number> {
		return this.signaturesOf.estimatedDocumentCount();
	}

	async insertRecords(records: RecordPayload[]): Promise<void> {
		// Records already stored are refused by `_id` and counted as duplicates; anything else throws.
		const first = this.lastSeq + 1;
		this.lastSeq += records.length;
		await insertUnordered(
			this.recordsOf,
			records.map((r, i) => ({ _id: r.id, data: r.data, signed: false, seq: first + i })),
		);
		this.visibleSeq = Math.max(this.visibleSeq, first + records.length - 1);
		this.records = null;
		this.largest = null;
	}

	submitRecords(
		records: RecordPayload[],
		submitter: string,
		submittedAt: string,
	): Promise<SubmitOutcome> {
		const run = this.submitting.then(() => this.submitNow(records, submitter, submittedAt));
		this.submitting = run.catch(() => undefined);
		return run;
	}

	private async submitNow(
		records: RecordPayload[],
		submitter: string,
		submittedAt: string,
	): Promise<SubmitOutcome> {
		const stored = new Map(
			(
				await this.recordsOf
					.find({ _id: { $in: records.map((r) => r.id) } }, { projection: { data: 1 } })
					.toArray()
			).map((row) => [row._id, row.data]),
		);
		const conflicts = records.filter((r) => stored.has(r.id) && stored.get(r.id) !== r.data);
		if (conflicts.length) throw new RecordConflictError(conflicts.map((r) => r.id));
		const fresh = records.filter((r) => !stored.has(r.id));
		const first = this.lastSeq + 1;
		this.lastSeq += fresh.length;
		// A write that fails half-way leaves some stored: the same request again stores the rest as a replay.
		const { inserted } = await insertUnordered(
			this.recordsOf,
			fresh.map((r, i) => ({
				_id: r.id,
				data: r.data,
				signed: false,
				seq: first + i,
				submittedBy: submitter,
				submittedAt,
			})),
		);
		this.visibleSeq = this.lastSeq;
		if (this.records !== null) this.records += inserted;
		if (this.largest !== null)
			for (const r of fresh) this.largest = Math.max(this.largest, recordMessageBytes(r));
		return { stored: inserted, replayed: records.length - inserted };
	}

	async lastArrival(): Promise<number> {
		return this.visibleSeq;
	}

	async unsignedArrivals(afterSeq: number, limit: number): Promise<Arrival[]> {
		const rows: RecordRow[] = await this.recordsOf
			.find(
				{ signed: false, seq: { $gt: afterSeq, $lte: this.visibleSeq } },
				{ projection: { data: 1, seq: 1, submittedAt: 1 } },
			)
			.sort({ seq: 1 })
			.limit(limit)
			.hint("records_arrivals")
			.toArray();
		return rows.map((row) => ({
			id: row._id,
			data: row.data,
			seq: row.seq!,
			submittedAt: row.submittedAt ?? null,
		}));
	}

	async unsignedRecords(after: string | undefined, limit: number): Promise<RecordPayload[]> {
		const query =
			after === undefined ? { signed: false } : { signed: false, _id: { $gt: after } };
		const rows: RecordRow[] = await this.recordsOf
			.find(query, { projection: { data: 1 } })
			.sort({ _id: 1 })
			.limit(limit)
			.hint("records_unsigned")
			.toArray();
		return rows.map((row) => ({ id: row._id, data: row.data }));
	}

	async unsignedAmong(ids: string[]): Promise<RecordPayload[]> {
		const signed = new Set(
			(
				await this.signaturesOf
					.find({ _id: { $in: ids } }, { projection: { _id: 1 } })
					.toArray()
			).map((s) => s._id),
		);
		const rows: RecordRow[] = await this.recordsOf
			.find(
				{ _id: { $in: ids.filter((id) => !signed.has(id)) } },
				{ projection: { data: 1 } },
			)
			.toArray();
		const byId = new Map(rows.map((row) => [row._id, row.data]));
		return ids.flatMap((id) => (byId.has(id) ? [{ id, data: byId.get(id)! }] : []));
	}

	async maxRecordBytes(): Promise<number> {
		// Records never change once seeded: measured once (a full scan), then kept. The scan is
		// paged by `_id` so that no single command runs long enough to meet the socket timeout.
		if (this.largest === null) {
			let largest = 0;
			let after: string | undefined;
			for (;;) {
				const [page] = await this.recordsOf
					.aggregate<{ n: number; last: string; count: number }>([
						{ $match: after === undefined ? {} : { _id: { $gt: after } } },
						{ $sort: { _id: 1 } },
						{ $limit: SCAN_PAGE },
						{
							$group: {
								_id: null,
								n: {
									// As recordMessageBytes, bounded: a control character takes
									// 6 bytes as JSON (5 more), a quote or backslash 2 (1 more).
									$max: {
										$add: [
											{ $strLenBytes: "$_id" },
											{ $strLenBytes: "$data" },
											{
												$multiply: [
													5,
													{
														$size: {
															$regexFindAll: {
																input: "$data",
																regex: "[\\x00-\\x1f]",
															},
														},
													},
												],
											},
											{
												$size: {
													$regexFindAll: {
														input: "$data",
														regex: '["\\\\]',
													},
												},
											},
										],
									},
								},
								last: { $max: "$_id" },
								count: { $sum: 1 },
							},
						},
					])
					.toArray();
				if (!page) break;
				largest = Math.max(largest, page.n);
				if (page.count < SCAN_PAGE) break;
				after = page.last;
			}
			this.largest = largest;
		}
		return this.largest;
	}

	/** Runs `work` after every earlier write or close of the same batch in this process. */
	private serially<T>(batchId: string, work: () => Promise<T>): Promise<T> {
		const run = (this.busy.get(batchId) ?? Promise.resolve()).then(work, work);
		const tail = run.catch(() => undefined);
		this.busy.set(batchId, tail);
		void tail.then(() => {
			if (this.busy.get(batchId) === tail) this.busy.delete(batchId);
		});
		return run;
	}

	storeSignatures(batch: SignedBatch): Promise<{ stored: number; duplicates: number }> {
		return this.serially(batch.batchId, async () => {
			if (await this.closedOf.findOne({ _id: batch.batchId }))
				throw new BatchClosedError(batch.batchId);
			return this.signatureLog.exclusive(() => this.insertSignatures(batch));
		});
	}

	closeBatch(batchId: string, recordIds: string[]): Promise<ClosedBatch> {
		return this.serially(batchId, async () => {
			await this.closedOf.updateOne(
				{ _id: batchId },
				{ $setOnInsert: { closedAt: new Date().toISOString() } },
				{ upsert: true },
			);
			return closedBatch(this, batchId, recordIds);
		});
	}

	async signedUnder(batchId: string): Promise<ClosedBatch["signed"]> {
		const groups = await this.signaturesOf
			.aggregate<{ _id: { keyId: string; leaseId: string }; count: number }>([
				{ $match: { batchId } },
				{ $group: { _id: { keyId: "$keyId", leaseId: "$leaseId" }, count: { $sum: 1 } } },
				{ $sort: { _id: 1 } },
			])
			.toArray();
		return groups.map((g) => ({ keyId: g._id.keyId, leaseId: g._id.leaseId, count: g.count }));
	}

	/** Inserts a piece's rows numbered in the log, then appends their leaves; inside the log's `exclusive`. */
	private async insertSignatures({
		batchId,
		keyId,
		leaseId,
		signatures,
	}: SignedBatch): Promise<{ stored: number; duplicates: number }> {
		if (!signatures.length) return { stored: 0, duplicates: 0 };
		if (this.logBehind) {
			await this.signatureLog.reload();
			await this.catchUpLog();
			this.logBehind = false;
		}
		const start = this.signatureLog.length;
		const docs: SignatureRow[] = signatures.map((s, i) => ({
			_id: s.recordId,
			recordId: s.recordId,
			keyId,
			batchId,
			leaseId,
			jws: s.jws,
			signedAt: s.signedAt,
			logIndex: start + i,
		}));
		// Hashed by this process's signing threads, when this very array came from its signer.
		const leafHashes = leafHashesOf(signatures, { keyId, batchId, leaseId });
		let stored: number;
		try {
			// Unordered: every document is tried; `_id` (the record id) refuses the stored ones. A
			// write concern error throws even when the rest were duplicates: not confirmed is not stored.
			stored = (await insertUnordered(this.signaturesOf, docs)).inserted;
			if (stored === docs.length)
				await this.signatureLog.append(leafHashes ?? docs.map(signatureLeaf));
			else if (stored) {
				// Only this piece has indexes from `start` on: its stored rows, in its order.
				const rows = await this.signaturesOf
					.find({ _id: { $in: docs.map((d) => d._id) }, logIndex: { $gte: start } })
					.sort({ logIndex: 1 })
					.toArray();
				const moves = closeUp(rows, start);
				if (moves.length) await this.signaturesOf.bulkWrite(moves, { ordered: true });
				await this.signatureLog.append(
					leafHashes
						? storedLeafHashes(leafHashes, rows, start)
						: rows.map(signatureLeaf),
				);
			}
		} catch (err) {
			this.logBehind = true;
			throw err;
		}
		// Every record of the batch has a signature now, this one or an earlier one.
		await this.recordsOf.updateMany(
			{ _id: { $in: docs.map((d) => d._id) }, signed: false },
			{ $set: { signed: true } },
		);
		return { stored, duplicates: signatures.length - stored };
	}

	/** A signature with its place in the signature log; null when the record has no signature. */
	async loggedSignature(recordId: string): Promise<LoggedSignature | null> {
		const row = await this.signaturesOf.findOne({ _id: recordId });
		if (!row) return null;
		const { _id, logIndex, ...signature } = row;
		return { ...signature, logIndex: typeof logIndex === "number" ? logIndex : null };
	}

	async record(id: string): Promise<StoredRecord | null> {
		const row = await this.recordsOf.findOne({ _id: id });
		return row
			? {
					id: row._id,
					data: row.data,
					submittedBy: row.submittedBy ?? null,
					submittedAt: row.submittedAt ?? null,
				}
			: null;
	}

	async signature(recordId: string): Promise<SignatureDoc | null> {
		const row = await this.signaturesOf.findOne(
			{ _id: recordId },
			{ projection: { _id: 0, logIndex: 0 } },
		);
		return row ?? null;
	}

	/**
	 * Signed only: a page of `signatures` (its `_id` is the record id) with their records.
	 * Otherwise a page of `records` with their signatures; unsigned only pages by the `signed`
	 * marker, and leaves out a record whose marker lags behind its signature.
	 */
	async list(
		after: string | undefined,
		limit: number,
		signed: boolean | undefined,
	): Promise<RecordsList> {
		const range = after === undefined ? {} : { _id: { $gt: after } };
		let ids: string[];
		let records: Map<string, RecordRow>;
		let signatures: Map<string, SignatureDoc>;
		if (signed) {
			const docs = await this.signaturesOf
				.find(range)
				.sort({ _id: 1 })
				.limit(limit)
				.toArray();
			ids = docs.map((d) => d._id);
			signatures = new Map(docs.map((d) => [d._id, d]));
			records = new Map(
				(
					await this.recordsOf
						.find({ _id: { $in: ids } }, { projection: LIST_FIELDS })
						.toArray()
				).map((r) => [r._id, r]),
			);
		} else {
			const rows = await this.recordsOf
				.find(signed === false ? { ...range, signed: false } : range, {
					projection: LIST_FIELDS,
				})
				.sort({ _id: 1 })
				.limit(limit)
				.toArray();
			ids = rows.map((r) => r._id);
			records = new Map(rows.map((r) => [r._id, r]));
			signatures = new Map(
				(await this.signaturesOf.find({ _id: { $in: ids } }).toArray()).map((d) => [
					d._id,
					d,
				]),
			);
		}
		const views: RecordView[] = ids.flatMap((id) => {
			const s = signatures.get(id);
			if (!records.has(id) || (signed === false && s)) return [];
			const record = records.get(id)!;
			return [
				{
					id,
					data: record.data,
					submittedBy: record.submittedBy ?? null,
					submittedAt: record.submittedAt ?? null,
					signature: s ? signatureView(s) : null,
				},
			];
		});
		return { records: views, next: ids.length === limit ? ids[ids.length - 1] : null };
	}

	async page(
		collection: "records" | "signatures",
		after: string | undefined,
		limit: number,
	): Promise<Page> {
		return collection === "records"
			? pageById(this.recordsOf, after, limit, {
					signed: 0,
					seq: 0,
					submittedBy: 0,
					submittedAt: 0,
				})
			: pageById(this.signaturesOf, after, limit);
	}

	async ping(): Promise<void> {
		await this.connection.db.command({ ping: 1 });
	}

	async close(): Promise<void> {
		await this.connection.close();
	}
}
