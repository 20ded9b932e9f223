/**
 * How a run ends: its report, counted by the store from its batches (signatures stored, keys
 * used, duplicates), its status (`completed`, `cancelled`, or `failed` with why), stored on the
 * run, logged, and announced as `run.completed`. A run interrupted by the node stopping is left
 * `running`: it resumes on the next start.
 */
import type { RunReport } from "../contract";
import { whenAvailable, type ActiveRun, type RunContext } from "./active-run";
import type { BatcherStore, Emit, RecordsPort } from "./ports";

export async function finishRun(
	active: ActiveRun,
	deps: { store: BatcherStore; records: RecordsPort; emit: Emit },
	context: RunContext,
): Promise<void> {
	const { run } = active;
	const { logger } = context;
	if (context.halted()) {
		logger.info(`Run ${run.runId} interrupted by shutdown; it resumes on the next start`);
		return;
	}
	const finishedAt = new Date(context.clock.now());
	const summary = await whenAvailable(context, "the batcher's store", () =>
		deps.store.batchSummary(run.runId),
	);
	const progress = await deps.records.progress().catch(() => ({ records: 0, signed: 0 }));
	const seconds = (finishedAt.getTime() - Date.parse(run.startedAt)) / 1000;
	const report: RunReport = {
		runId: run.runId,
		batchSize: run.batchSize,
		records: progress.records,
		signedThisRun: summary.stored,
		batches: summary.total,
		failedBatches: summary.byStatus.failed ?? 0,
		keysUsed: summary.keysUsed,
		duplicates: summary.duplicates,
		seconds,
		recordsPerSecond: seconds > 0 ? Math.round(summary.stored / seconds) : 0,
		...(active.resumedAt !== null
			? { resumedAt: new Date(active.resumedAt).toISOString() }
			: {}),
	};
	const status = active.failure ? "failed" : active.cancelled ? "cancelled" : "completed";
	await whenAvailable(context, "the batcher's store", () =>
		deps.store.updateRun(run.runId, {
			status,
			finishedAt: finishedAt.toISOString(),
			report,
			...(active.failure ? { error: active.failure } : {}),
		}),
	);
	Object.assign(run, { status, finishedAt: finishedAt.toISOString(), report });
	if (active.failure) logger.error(`Run ${run.runId} failed: ${active.failure}`);
	else if (active.cancelled)
		logger.info(
			`Run ${run.runId} cancelled: ${summary.stored} records signed in ${seconds.toFixed(1)} s, ${progress.records - progress.signed} left for a later run`,
		);
	else
		logger.info(
			`Run ${run.runId} completed: ${summary.stored} records in ${seconds.toFixed(1)} s`,
		);
	deps.emit("run.completed", { report, status, error: active.failure });
}
