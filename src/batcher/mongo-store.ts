/**
 * The batcher's store on MongoDB: `runs` and `batches`, each keyed by its id in `_id` (the
 * `_id` index is the unique one: no other index repeats it).
 */
import type { Collection } from "mongodb";
import type { BatchDoc, BatchStatus, Page, RunDoc } from "../contract";
import { dropIndexIfPresent, openMongoStore, pageById, type MongoConnection } from "../store/mongo";
import type { BatcherStore, BatchSummary } from "./ports";

type RunRow = RunDoc & { _id: string };
type BatchRow = BatchDoc & { _id: string };

export class MongoBatcherStore implements BatcherStore {
	private constructor(
		private readonly connection: MongoConnection,
		private readonly runs: Collection<RunRow>,
		private readonly batches: Collection<BatchRow>,
	) {}

	/** Connects and creates the indexes: for the owning service. */
	static async open(
		uri: string,
		service: { broker: unknown; logger: unknown },
	): Promise<MongoBatcherStore> {
		return openMongoStore(
			uri,
			service,
			"batcher",
			MongoBatcherStore.over,
			async ({ runs, batches }) => {
				await runs.createIndex(
					{ idempotencyKey: 1 },
					{
						unique: true,
						name: "runs_idempotency",
						partialFilterExpression: { idempotencyKey: { $type: "string" } },
					},
				);
				await runs.createIndex({ status: 1 }, { name: "runs_status" });
				// pendingBatches reads it in order (no sort in memory); batchSummary uses its prefix.
				await batches.createIndex(
					{ runId: 1, status: 1, batchId: 1 },
					{ name: "batches_run_status" },
				);
				// Earlier versions: unique indexes repeating `_id` (an index write per document for
				// nothing), and `{ runId, status }`, a prefix of the index above.
				await dropIndexIfPresent(runs, "runs_run");
				await dropIndexIfPresent(batches, "batches_batch");
				await dropIndexIfPresent(batches, "batches_run");
			},
		);
	}

	/** Over an open connection, creating nothing: what the read-only audit pages through. */
	static over(connection: MongoConnection): MongoBatcherStore {
		return new MongoBatcherStore(
			connection,
			connection.db.collection<RunRow>("runs"),
			connection.db.collection<BatchRow>("batches"),
		);
	}

	async insertRun(run: RunDoc): Promise<void> {
		await this.runs.insertOne({ ...run, _id: run.runId });
	}

	getRun(runId: string): Promise<RunDoc | null> {
		return this.runs.findOne({ _id: runId });
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
		await this.runs.updateOne({ _id: runId }, { $set: fields });
	}

	async insertBatch(batch: BatchDoc): Promise<void> {
		await this.batches.insertOne({ ...batch, _id: batch.batchId });
	}

	async updateBatch(batchId: string, fields: Partial<BatchDoc>): Promise<void> {
		await this.batches.updateOne({ _id: batchId }, { $set: fields });
	}

	pendingBatches(runId: string): Promise<BatchDoc[]> {
		return this.batches.find({ runId, status: "pending" }).sort({ batchId: 1 }).toArray();
	}

	async batchSummary(runId: string): Promise<BatchSummary> {
		const byStatus: Partial<Record<BatchStatus, number>> = {};
		let total = 0;
		for await (const group of this.batches.aggregate<{ _id: BatchStatus; n: number }>([
			{ $match: { runId } },
			{ $group: { _id: "$status", n: { $sum: 1 } } },
		])) {
			byStatus[group._id] = group.n;
			total += group.n;
		}
		const [signed] = await this.batches
			.aggregate<{ stored: number; duplicates: number; keys: string[] }>([
				{ $match: { runId, status: { $in: ["signed", "partial"] } } },
				{
					$group: {
						_id: null,
						stored: { $sum: "$stored" },
						duplicates: { $sum: "$duplicates" },
						keys: { $addToSet: "$keyId" },
					},
				},
			])
			.toArray();
		return {
			total,
			byStatus,
			stored: signed?.stored ?? 0,
			duplicates: signed?.duplicates ?? 0,
			keysUsed: signed?.keys.length ?? 0,
		};
	}

	async page(
		collection: "runs" | "batches",
		after: string | undefined,
		limit: number,
	): Promise<Page> {
		return collection === "runs"
			? pageById(this.runs, after, limit)
			: pageById(this.batches, after, limit);
	}

	async ping(): Promise<void> {
		await this.connection.db.command({ ping: 1 });
	}

	async close(): Promise<void> {
		await this.connection.close();
	}
}
