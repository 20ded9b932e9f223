/** The batcher's store (`runs`, `batches`) over the db mixin's document stores. */
import type { Store } from "../../mixins/db.mixin";
import type { BatchDoc, BatchStatus, RunDoc } from "../contract";
import type { BatcherStore, BatchSummary } from "./ports";

export function documentBatcherStore(runs: Store<RunDoc>, batches: Store<BatchDoc>): BatcherStore {
	return {
		insertRun: run => runs.insert(run),
		getRun: runId => runs.findOne({ runId }),
		runByIdempotencyKey: idempotencyKey => runs.findOne({ idempotencyKey }),
		interruptedRun: () => runs.findOne({ status: "running" }),
		listRuns: () => runs.find({}, { sort: { startedAt: -1 } }),
		async updateRun(runId, fields) {
			await runs.update({ runId }, fields);
		},
		insertBatch: batch => batches.insert(batch),
		async updateBatch(batchId, fields) {
			await batches.update({ batchId }, fields);
		},
		abandonPending: (runId, finishedAt) => batches.update({ runId, status: "pending" }, { status: "abandoned", finishedAt }, { multi: true }),
		async batchSummary(runId): Promise<BatchSummary> {
			const docs = await batches.find({ runId }, { projection: { status: 1, keyId: 1, stored: 1, duplicates: 1 } });
			const byStatus: Partial<Record<BatchStatus, number>> = {};
			const keys = new Set<string>();
			let stored = 0;
			let duplicates = 0;
			for (const doc of docs) {
				byStatus[doc.status] = (byStatus[doc.status] ?? 0) + 1;
				if (doc.status !== "signed") continue;
				stored += doc.stored ?? 0;
				duplicates += doc.duplicates ?? 0;
				if (doc.keyId) keys.add(doc.keyId);
			}
			return { total: docs.length, byStatus, stored, duplicates, keysUsed: keys.size };
		}
	};
}
