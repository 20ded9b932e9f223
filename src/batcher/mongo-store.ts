/** The batcher's store on MongoDB: `runs` and `batches`, each keyed by its id. */
import type { BatchDoc, BatchStatus, Page, RunDoc } from "../contract";
import { connectMongo, type MongoCollection, type MongoConnection } from "../store/mongo";
import type { BatcherStore, BatchSummary } from "./ports";

export class MongoBatcherStore implements BatcherStore {
	private constructor(private readonly connection: MongoConnection, private readonly runs: MongoCollection, private readonly batches: MongoCollection) {}

	/** Connects and creates the indexes: for the owning service. */
	static async open(uri: string, service: { broker: unknown; logger: unknown }): Promise<MongoBatcherStore> {
		const store = MongoBatcherStore.over(await connectMongo(uri, service, "runs"));
		const { runs, batches } = store;
		await runs.createIndex({ runId: 1 }, { unique: true, name: "runs_run" });
		await runs.createIndex({ idempotencyKey: 1 }, { unique: true, name: "runs_idempotency", partialFilterExpression: { idempotencyKey: { $type: "string" } } });
		await runs.createIndex({ status: 1 }, { name: "runs_status" });
		await batches.createIndex({ batchId: 1 }, { unique: true, name: "batches_batch" });
		await batches.createIndex({ runId: 1, status: 1 }, { name: "batches_run" });
		return store;
	}

	/** Over an open connection, creating nothing: what the read-only audit pages through. */
	static over(connection: MongoConnection): MongoBatcherStore {
		return new MongoBatcherStore(connection, connection.db.collection("runs"), connection.db.collection("batches"));
	}

	async insertRun(run: RunDoc): Promise<void> {
		await this.runs.insertOne({ ...run, _id: run.runId });
	}

	getRun(runId: string): Promise<RunDoc | null> {
		return this.runs.findOne({ runId });
	}

	runByIdempotencyKey(key: string): Promise<RunDoc | null> {
		return this.runs.findOne({ idempotencyKey: key });
	}

	interruptedRun(): Promise<RunDoc | null> {
		return this.runs.findOne({ status: "running" }, { sort: { startedAt: 1 } });
	}

	listRuns(): Promise<RunDoc[]> {
		return this.runs.find({}).sort({ startedAt: -1 }).toArray();
	}

	async updateRun(runId: string, fields: Partial<RunDoc>): Promise<void> {
		await this.runs.updateOne({ runId }, { $set: fields });
	}

	async insertBatch(batch: BatchDoc): Promise<void> {
		await this.batches.insertOne({ ...batch, _id: batch.batchId });
	}

	async updateBatch(batchId: string, fields: Partial<BatchDoc>): Promise<void> {
		await this.batches.updateOne({ batchId }, { $set: fields });
	}

	pendingBatches(runId: string): Promise<BatchDoc[]> {
		return this.batches.find({ runId, status: "pending" }).sort({ batchId: 1 }).toArray();
	}

	async batchSummary(runId: string): Promise<BatchSummary> {
		const byStatus: Partial<Record<BatchStatus, number>> = {};
		let total = 0;
		for await (const group of this.batches.aggregate([{ $match: { runId } }, { $group: { _id: "$status", n: { $sum: 1 } } }])) {
			byStatus[group._id as BatchStatus] = group.n;
			total += group.n;
		}
		const [signed] = await this.batches.aggregate([
			{ $match: { runId, status: { $in: ["signed", "partial"] } } },
			{ $group: { _id: null, stored: { $sum: "$stored" }, duplicates: { $sum: "$duplicates" }, keys: { $addToSet: "$keyId" } } }
		]).toArray();
		return { total, byStatus, stored: signed?.stored ?? 0, duplicates: signed?.duplicates ?? 0, keysUsed: signed?.keys.length ?? 0 };
	}

	async page(collection: "runs" | "batches", after: string | undefined, limit: number): Promise<Page> {
		const of = collection === "runs" ? this.runs : this.batches;
		const docs = await of.find(after === undefined ? {} : { _id: { $gt: after } }).sort({ _id: 1 }).limit(limit).toArray();
		return { docs, next: docs.length === limit ? String(docs[docs.length - 1]._id) : null };
	}

	async ping(): Promise<void> {
		await this.connection.db.command({ ping: 1 });
	}

	async close(): Promise<void> {
		await this.connection.close();
	}
}
