/**
 * batcher: owns `runs` and `batches`. `start({ batchSize })` creates a run with a batch size
 * fixed for its whole life, records each batch before dispatching it to a signer with a
 * bounded in-flight window, retries failed batches as new batches, and resumes an
 * interrupted run when it starts again.
 */
import type { Context, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import { DbMixin, type Store } from "../mixins/db.mixin";
import { BatchPlanner, retryDelayMs, type PlannedBatch } from "../src/batcher/planner";
import { appConfig, MAX_BATCH_SIZE } from "../src/config";
import {
	Events,
	type BatchDoc, type BatchFailedEvent, type BatchSignedEvent, type Progress, type RunDoc, type RunReport,
	type RunStartedEvent, type SignBatchResult, type StartRunParams
} from "../src/contract";

interface BatcherSettings {
	batchSize: number;
	window: number;
	resumeOnStart: boolean;
	maxAttempts: number;
	signTimeoutMs: number;
}

interface ActiveRun {
	run: RunDoc;
	planner: BatchPlanner;
	inFlight: Set<Promise<void>>;
	/** Batches in flight per signer node. */
	perSigner: Map<string, number>;
	batchCount: number;
	failure: string | null;
	done: Promise<void>;
}

interface BatcherVars {
	stores: { runs: Store<RunDoc>; batches: Store<BatchDoc> };
	active: ActiveRun | null;
	stopping: boolean;
}

interface BatcherMethods {
	drive(active: ActiveRun): Promise<void>;
	runBatch(active: ActiveRun, planned: PlannedBatch): Promise<void>;
	windowSize(): number;
	pickSigner(active: ActiveRun): string | undefined;
	launch(run: RunDoc, resumed: boolean): Promise<void>;
	finish(active: ActiveRun): Promise<void>;
	publicRun(run: RunDoc): Omit<RunDoc, "_id">;
	[name: string]: (...args: any[]) => any;
}

export class InvalidBatchSizeError extends Errors.MoleculerClientError {
	constructor(value: unknown) {
		super(`batchSize must be an integer from 1 to ${MAX_BATCH_SIZE}, got ${JSON.stringify(value)}`, 422, "INVALID_BATCH_SIZE", { field: "batchSize", min: 1, max: MAX_BATCH_SIZE, value });
	}
}

export function validateBatchSize(value: unknown, fallback: number): number {
	if (value === undefined || value === null) return fallback;
	if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > MAX_BATCH_SIZE) throw new InvalidBatchSizeError(value);
	return value;
}

const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms).unref());

const BatcherService: ServiceSchema<BatcherSettings, BatcherMethods, BatcherVars> = {
	name: "batcher",
	dependencies: ["records"],
	mixins: [DbMixin({ runs: { uniqueIndexes: ["runId"] }, batches: { uniqueIndexes: ["batchId"], indexes: ["runId"] } })],
	settings: {
		batchSize: appConfig().batchSize,
		window: appConfig().window,
		resumeOnStart: true,
		maxAttempts: 10,
		signTimeoutMs: appConfig().acquireWaitMs + appConfig().leaseTtlMs + 10_000
	},
	actions: {
		/** Starts a run over every unsigned record. The batch size is fixed for the run. */
		start: {
			params: { batchSize: { type: "any", optional: true }, idempotencyKey: { type: "string", min: 1, max: 255, optional: true } },
			async handler(ctx: Context<StartRunParams>) {
				const batchSize = validateBatchSize(ctx.params.batchSize, this.settings.batchSize);
				const { idempotencyKey } = ctx.params;
				// A retried request (same key) gets the run it already started, even after a restart.
				const known = idempotencyKey ? await this.stores.runs.findOne({ idempotencyKey }) : null;
				if (known) return this.publicRun(known);
				if (this.active) {
					const { runId, batchSize: activeSize } = this.active.run;
					throw new Errors.MoleculerClientError(`Run ${runId} is still active (batch size ${activeSize}); a new run can start when it ends`, 409, "RUN_ACTIVE", { runId, batchSize: activeSize });
				}
				const now = new Date().toISOString();
				const runId = `run-${now.replace(/[-:.TZ]/g, "").slice(0, 17)}-${Math.random().toString(36).slice(2, 6)}`;
				const run: RunDoc = { _id: runId, runId, batchSize, status: "running", startedAt: now, finishedAt: null, report: null, ...(idempotencyKey ? { idempotencyKey } : {}) };
				await this.stores.runs.insert(run);
				await this.launch(run, false);
				return this.publicRun(run);
			}
		},
		/** The active run with its progress, or the last run. */
		status: {
			async handler(ctx: Context) {
				const progress = await ctx.call<Progress>("records.progress");
				if (this.active) return { active: true, run: this.publicRun(this.active.run), progress, inFlight: this.active.inFlight.size };
				const [last] = await this.stores.runs.find({}, { sort: { startedAt: -1 }, limit: 1 });
				return { active: false, run: last ? this.publicRun(last) : null, progress, inFlight: 0 };
			}
		},
		runs: {
			async handler() {
				return (await this.stores.runs.find({}, { sort: { startedAt: -1 } })).map(run => this.publicRun(run));
			}
		},
		/** One run with its batch counts and, once finished, its report. */
		get: {
			params: { runId: { type: "string", min: 1 } },
			async handler(ctx: Context<{ runId: string }>) {
				const run = await this.stores.runs.findOne({ runId: ctx.params.runId });
				if (!run) throw new Errors.MoleculerClientError(`Run "${ctx.params.runId}" not found`, 404, "RUN_NOT_FOUND", { runId: ctx.params.runId });
				const batches = await this.stores.batches.find({ runId: run.runId }, { projection: { status: 1, recordIds: 1 } });
				const byStatus: Record<string, number> = {};
				for (const batch of batches) byStatus[batch.status] = (byStatus[batch.status] ?? 0) + 1;
				return { ...this.publicRun(run), batches: { total: batches.length, ...byStatus }, inFlight: this.active?.run.runId === run.runId ? this.active.inFlight.size : 0 };
			}
		}
	},
	methods: {
		publicRun(run: RunDoc) {
			const { _id, ...rest } = run;
			return rest;
		},

		async launch(run: RunDoc, resumed: boolean) {
			const batchCount = await this.stores.batches.count({ runId: run.runId });
			const active: ActiveRun = { run, planner: new BatchPlanner(run.batchSize, this.settings.maxAttempts), inFlight: new Set(), perSigner: new Map(), batchCount, failure: null, done: Promise.resolve() };
			this.active = active;
			const progress = await this.broker.call<Progress>("records.progress");
			this.broker.emit<RunStartedEvent>(Events.runStarted, { runId: run.runId, batchSize: run.batchSize, records: progress.records, alreadySigned: progress.signed, resumed });
			this.logger.info(`${resumed ? "Resuming" : "Starting"} run ${run.runId}: batch size ${run.batchSize}, ${progress.records - progress.signed} of ${progress.records} records unsigned`);
			active.done = this.drive(active).catch(err => {
				active.failure = (err as Error).message;
			}).then(() => this.finish(active));
		},

		windowSize(): number {
			if (this.settings.window > 0) return this.settings.window;
			// Enough batches to keep every signer node busy while others wait on storage.
			const signerNodes = this.broker.registry.getServiceList({ onlyAvailable: true }).filter(s => s.name === "signer").length;
			return Math.max(6, 4 * signerNodes);
		},

		/**
		 * The available signer node with the fewest batches in flight. A node that died keeps
		 * only its share of the window until its heartbeats are missed, instead of collecting
		 * every batch round-robin sends it meanwhile (the whole window, and a stalled run).
		 */
		pickSigner(active: ActiveRun): string | undefined {
			let best: string | undefined;
			let bestLoad = Infinity;
			for (const service of this.broker.registry.getServiceList({ onlyAvailable: true })) {
				if (service.name !== "signer" || !service.nodeID) continue;
				const load = active.perSigner.get(service.nodeID) ?? 0;
				if (load < bestLoad) [best, bestLoad] = [service.nodeID, load];
			}
			return best;
		},

		async drive(active: ActiveRun) {
			const { planner } = active;
			let sweeps = 0;
			// broker.stopping: the node is shutting down (its services already unpublished) before stopped() runs.
			while (!this.stopping && !this.broker.stopping && !active.failure) {
				// No signer yet (cluster starting, or every signer gone): wait rather than fail batches.
				if (!this.broker.registry.getActionEndpoints("signer.signBatch")?.hasAvailable()) {
					await this.broker.waitForServices("signer", 1_000).catch(() => undefined);
					continue;
				}
				while (active.inFlight.size < this.windowSize() && !this.stopping && !this.broker.stopping && !active.failure) {
					let planned = planner.nextRetry();
					if (!planned && planner.paging) {
						const { ids } = await this.broker.call<{ ids: string[] }, object>("records.unsignedIds", { after: planner.after, limit: active.run.batchSize });
						planned = planner.acceptPage(ids);
					}
					if (!planned) break;
					const task: Promise<void> = this.runBatch(active, planned).finally(() => active.inFlight.delete(task));
					active.inFlight.add(task);
				}
				if (active.inFlight.size > 0) {
					await Promise.race(active.inFlight);
					continue;
				}
				if (planner.pendingRetries > 0) continue;
				const progress = await this.broker.call<Progress>("records.progress");
				if (progress.signed >= progress.records) return;
				// Pages are read while batches are in flight; one more pass picks up any stragglers.
				if (++sweeps > 3) throw new Error(`${progress.records - progress.signed} records are still unsigned after ${sweeps} passes`);
				planner.rewind();
			}
		},

		async runBatch(active: ActiveRun, planned: PlannedBatch) {
			const { run } = active;
			const batchId = `${run.runId}-b${String(++active.batchCount).padStart(6, "0")}`;
			const startedAt = Date.now();
			// Recorded before dispatch: after a crash the store knows every batch that may have run.
			await this.stores.batches.insert({ _id: batchId, batchId, runId: run.runId, keyId: null, leaseId: null, recordIds: planned.recordIds, attempt: planned.attempt, status: "pending", startedAt: new Date(startedAt).toISOString(), finishedAt: null, signer: null, error: null });
			const signer = this.pickSigner(active);
			if (signer) active.perSigner.set(signer, (active.perSigner.get(signer) ?? 0) + 1);
			try {
				const result = await this.broker.call<SignBatchResult, object>("signer.signBatch", { batchId, runId: run.runId, recordIds: planned.recordIds }, { timeout: this.settings.signTimeoutMs, ...(signer ? { nodeID: signer } : {}) })
					.finally(() => { if (signer) active.perSigner.set(signer, active.perSigner.get(signer)! - 1); });
				await this.stores.batches.update({ _id: batchId }, { status: "signed", keyId: result.keyId, leaseId: result.leaseId, signer: result.signer, stored: result.stored, duplicates: result.duplicates, finishedAt: new Date().toISOString() });
				this.broker.emit<BatchSignedEvent>(Events.batchSigned, { runId: run.runId, batchId, keyId: result.keyId, signer: result.signer, size: planned.recordIds.length, stored: result.stored, duplicates: result.duplicates, latencyMs: Date.now() - startedAt, leaseWaitMs: result.leaseWaitMs });
			} catch (err) {
				const error = (err as Error).message;
				this.logger.warn(`Batch ${batchId} (attempt ${planned.attempt}) failed: ${error}`);
				await this.stores.batches.update({ _id: batchId }, { status: "failed", error, finishedAt: new Date().toISOString() });
				this.broker.emit<BatchFailedEvent>(Events.batchFailed, { runId: run.runId, batchId, size: planned.recordIds.length, error });
				// Failed by the shutdown itself: not an attempt against the run; its records are paged again on resume.
				if (this.stopping || this.broker.stopping) return;
				const unsigned = await this.broker.call<{ ids: string[] }, object>("records.filterUnsigned", { ids: planned.recordIds })
					.then(r => r.ids, () => planned.recordIds);
				if (!active.planner.failed(planned, unsigned))
					active.failure = `records of batch ${batchId} failed ${planned.attempt} times; last error: ${error}`;
				await sleep(retryDelayMs(planned.attempt));
			}
		},

		async finish(active: ActiveRun) {
			if (this.active === active) this.active = null;
			if (this.stopping || this.broker.stopping) {
				this.logger.info(`Run ${active.run.runId} interrupted by shutdown; it resumes on the next start`);
				return;
			}
			const { run } = active;
			const finishedAt = new Date();
			const batches = await this.stores.batches.find({ runId: run.runId });
			const progress = await this.broker.call<Progress>("records.progress").catch(() => ({ records: 0, signed: 0 }));
			const signedBatches = batches.filter(b => b.status === "signed");
			const seconds = (finishedAt.getTime() - Date.parse(run.startedAt)) / 1000;
			const signedThisRun = signedBatches.reduce((sum, b) => sum + (b.stored ?? 0), 0);
			const report: RunReport = {
				runId: run.runId,
				batchSize: run.batchSize,
				records: progress.records,
				signedThisRun,
				batches: batches.length,
				failedBatches: batches.filter(b => b.status === "failed").length,
				keysUsed: new Set(signedBatches.map(b => b.keyId)).size,
				duplicates: signedBatches.reduce((sum, b) => sum + (b.duplicates ?? 0), 0),
				seconds,
				recordsPerSecond: seconds > 0 ? Math.round(signedThisRun / seconds) : 0
			};
			const status = active.failure ? "failed" : "completed";
			await this.stores.runs.update({ runId: run.runId }, { status, finishedAt: finishedAt.toISOString(), report, ...(active.failure ? { error: active.failure } : {}) });
			Object.assign(run, { status, finishedAt: finishedAt.toISOString(), report });
			if (active.failure) this.logger.error(`Run ${run.runId} failed: ${active.failure}`);
			else this.logger.info(`Run ${run.runId} completed: ${signedThisRun} records in ${seconds.toFixed(1)} s`);
			this.broker.emit(Events.runCompleted, { report, status, error: active.failure });
		}
	},
	async started() {
		this.active = null;
		this.stopping = false;
		if (!this.settings.resumeOnStart) return;
		const interrupted = await this.stores.runs.findOne({ status: "running" });
		if (!interrupted) return;
		// Batches left pending by the crash may still finish on a live signer; the unique index
		// makes that harmless, and their records are paged again only if still unsigned.
		await this.stores.batches.update({ runId: interrupted.runId, status: "pending" }, { status: "abandoned", finishedAt: new Date().toISOString() }, { multi: true });
		await this.launch(interrupted, true);
	},
	async stopped() {
		this.stopping = true;
		// Let in-flight batches settle so their documents say how they ended.
		if (this.active) await Promise.race([this.active.done, sleep(10_000)]);
	}
};

export default BatcherService;
