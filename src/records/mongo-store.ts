/**
 * The records store on MongoDB. `records.signed` is a marker the records service keeps
 * itself (it owns both collections): an index on `(signed, _id)` makes paging the unsigned
 * records one indexed query per page, where a lookup per candidate would cost a round trip.
 * The marker is set after the signatures are stored, so it may lag (a crash in between):
 * a lagging record is offered again and its second signature is refused as a duplicate,
 * which sets the marker.
 *
 * A batch closed by `closeBatch` (`closed_batches`) takes no more signatures. The check and
 * the insert are two commands, so one batch's writes and its close run one after another in
 * this process: the records service runs as a single instance, next to the batcher.
 */
import type { ClosedBatch, Page, RecordPayload, RecordsList, RecordView, SignatureDoc } from "../contract";
import { connectMongo, isDuplicateKey, type MongoCollection, type MongoConnection } from "../store/mongo";
import { BatchClosedError, signatureView, type RecordsStore, type SignedBatch } from "./store";

interface RecordRow {
	_id: string;
	data: string;
	signed: boolean;
}

export class MongoRecordsStore implements RecordsStore {
	private records: number | null = null;
	private largest: number | null = null;

	/** Per batch, the tail of its writes and close in this process. */
	private readonly busy = new Map<string, Promise<unknown>>();

	private constructor(
		private readonly connection: MongoConnection,
		private readonly recordsOf: MongoCollection,
		private readonly signaturesOf: MongoCollection,
		private readonly closedOf: MongoCollection
	) {}

	/** Connects and creates the indexes: for the owning service. */
	static async open(uri: string, service: { broker: unknown; logger: unknown }): Promise<MongoRecordsStore> {
		const store = MongoRecordsStore.over(await connectMongo(uri, service, "records"));
		// The guard against a second signature, then the indexes that keep every query indexed.
		await store.signaturesOf.createIndex({ recordId: 1 }, { unique: true, name: "signatures_record" });
		await store.signaturesOf.createIndex({ batchId: 1, recordId: 1 }, { name: "signatures_batch" });
		await store.recordsOf.createIndex({ signed: 1, _id: 1 }, { name: "records_unsigned" });
		return store;
	}

	/** Over an open connection, creating nothing: what the read-only audit pages through. */
	static over(connection: MongoConnection): MongoRecordsStore {
		return new MongoRecordsStore(connection, connection.db.collection("records"), connection.db.collection("signatures"), connection.db.collection("closed_batches"));
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
		try {
			await this.recordsOf.insertMany(records.map(r => ({ _id: r.id, data: r.data, signed: false })), { ordered: false });
		} catch (err) {
			if (!allDuplicates(err)) throw err;
		}
		this.records = null;
		this.largest = null;
	}

	async unsignedRecords(after: string | undefined, limit: number): Promise<RecordPayload[]> {
		const query = after === undefined ? { signed: false } : { signed: false, _id: { $gt: after } };
		const rows: RecordRow[] = await this.recordsOf.find(query, { projection: { data: 1 } }).sort({ _id: 1 }).limit(limit).hint("records_unsigned").toArray();
		return rows.map(row => ({ id: row._id, data: row.data }));
	}

	async unsignedAmong(ids: string[]): Promise<RecordPayload[]> {
		const signed = new Set((await this.signaturesOf.find({ recordId: { $in: ids } }, { projection: { recordId: 1 } }).toArray()).map((s: SignatureDoc) => s.recordId));
		const rows: RecordRow[] = await this.recordsOf.find({ _id: { $in: ids.filter(id => !signed.has(id)) } }, { projection: { data: 1 } }).toArray();
		const byId = new Map(rows.map(row => [row._id, row.data]));
		return ids.flatMap(id => (byId.has(id) ? [{ id, data: byId.get(id)! }] : []));
	}

	async maxRecordBytes(): Promise<number> {
		// Records never change once seeded: measured once (a full scan), then kept.
		if (this.largest === null) {
			const [row] = await this.recordsOf.aggregate([{ $group: { _id: null, n: { $max: { $add: [{ $strLenBytes: "$_id" }, { $strLenBytes: "$data" }] } } } }]).toArray();
			this.largest = row?.n ?? 0;
		}
		return this.largest!;
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
			if (await this.closedOf.findOne({ _id: batch.batchId })) throw new BatchClosedError(batch.batchId);
			return this.insertSignatures(batch);
		});
	}

	closeBatch(batchId: string, recordIds: string[]): Promise<ClosedBatch> {
		return this.serially(batchId, async () => {
			await this.closedOf.updateOne({ _id: batchId }, { $setOnInsert: { closedAt: new Date().toISOString() } }, { upsert: true });
			const signed = await this.signedUnder(batchId);
			const all = signed.reduce((sum, group) => sum + group.count, 0) === recordIds.length;
			return { signed, unsigned: recordIds.length && !all ? await this.unsignedAmong(recordIds) : [] };
		});
	}

	async signedUnder(batchId: string): Promise<ClosedBatch["signed"]> {
		const groups: Array<{ _id: { keyId: string; leaseId: string }; count: number }> = await this.signaturesOf
			.aggregate([{ $match: { batchId } }, { $group: { _id: { keyId: "$keyId", leaseId: "$leaseId" }, count: { $sum: 1 } } }, { $sort: { _id: 1 } }])
			.toArray();
		return groups.map(g => ({ keyId: g._id.keyId, leaseId: g._id.leaseId, count: g.count }));
	}

	private async insertSignatures({ batchId, keyId, leaseId, signatures }: SignedBatch): Promise<{ stored: number; duplicates: number }> {
		if (!signatures.length) return { stored: 0, duplicates: 0 };
		const docs = signatures.map(s => ({ _id: s.recordId, recordId: s.recordId, keyId, batchId, leaseId, jws: s.jws, signedAt: s.signedAt }));
		let stored: number;
		try {
			// Unordered: every document is tried; the unique index refuses the stored ones.
			stored = (await this.signaturesOf.insertMany(docs, { ordered: false })).insertedCount;
		} catch (err) {
			const duplicates = allDuplicates(err);
			if (!duplicates) throw err;
			stored = docs.length - duplicates;
		}
		// Every record of the batch has a signature now, this one or an earlier one.
		await this.recordsOf.updateMany({ _id: { $in: docs.map(d => d._id) }, signed: false }, { $set: { signed: true } });
		return { stored, duplicates: docs.length - stored };
	}

	async record(id: string): Promise<RecordPayload | null> {
		const row: RecordRow | null = await this.recordsOf.findOne({ _id: id });
		return row ? { id: row._id, data: row.data } : null;
	}

	async signature(recordId: string): Promise<SignatureDoc | null> {
		const row = await this.signaturesOf.findOne({ recordId }, { projection: { _id: 0 } });
		return row ?? null;
	}

	/**
	 * Signed only: a page of `signatures` (its `_id` is the record id) with their records.
	 * Otherwise a page of `records` with their signatures; unsigned only pages by the `signed`
	 * marker, and leaves out a record whose marker lags behind its signature.
	 */
	async list(after: string | undefined, limit: number, signed: boolean | undefined): Promise<RecordsList> {
		const range = after === undefined ? {} : { _id: { $gt: after } };
		let ids: string[];
		let records: Map<string, string>;
		let signatures: Map<string, SignatureDoc>;
		if (signed) {
			const docs: Array<SignatureDoc & { _id: string }> = await this.signaturesOf.find(range).sort({ _id: 1 }).limit(limit).toArray();
			ids = docs.map(d => d._id);
			signatures = new Map(docs.map(d => [d._id, d]));
			records = new Map((await this.recordsOf.find({ _id: { $in: ids } }, { projection: { data: 1 } }).toArray() as RecordRow[]).map(r => [r._id, r.data]));
		} else {
			const rows: RecordRow[] = await this.recordsOf.find(signed === false ? { ...range, signed: false } : range, { projection: { data: 1 } }).sort({ _id: 1 }).limit(limit).toArray();
			ids = rows.map(r => r._id);
			records = new Map(rows.map(r => [r._id, r.data]));
			signatures = new Map((await this.signaturesOf.find({ _id: { $in: ids } }).toArray() as Array<SignatureDoc & { _id: string }>).map(d => [d._id, d]));
		}
		const views: RecordView[] = ids.flatMap(id => {
			const s = signatures.get(id);
			if (!records.has(id) || (signed === false && s)) return [];
			return [{ id, data: records.get(id)!, signature: s ? signatureView(s) : null }];
		});
		return { records: views, next: ids.length === limit ? ids[ids.length - 1] : null };
	}

	async page(collection: "records" | "signatures", after: string | undefined, limit: number): Promise<Page> {
		const of = collection === "records" ? this.recordsOf : this.signaturesOf;
		const projection = collection === "records" ? { signed: 0 } : {};
		const docs = await of.find(after === undefined ? {} : { _id: { $gt: after } }, { projection }).sort({ _id: 1 }).limit(limit).toArray();
		return { docs, next: docs.length === limit ? String(docs[docs.length - 1]._id) : null };
	}

	async ping(): Promise<void> {
		await this.connection.db.command({ ping: 1 });
	}

	async close(): Promise<void> {
		await this.connection.close();
	}
}

/** The number of duplicate-key refusals of an unordered bulk insert, or 0 when any other error is among them. */
function allDuplicates(err: unknown): number {
	const bulk = err as { writeErrors?: Array<{ code: number }> | { code: number } };
	const writeErrors = Array.isArray(bulk.writeErrors) ? bulk.writeErrors : bulk.writeErrors ? [bulk.writeErrors] : [];
	if (!writeErrors.length) return isDuplicateKey(err) ? 1 : 0;
	return writeErrors.every(w => w.code === 11000) ? writeErrors.length : 0;
}
