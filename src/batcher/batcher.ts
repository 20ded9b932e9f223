/**
 * The batcher's run API, without a broker: a run's life from `start` to its report. A run's
 * batch size is fixed for its whole life; a run left `running` by a crash or a stop resumes
 * on the next start. The parts, each with one job:
 * - run-input.ts: what `start` accepts (batch size, Idempotency-Key), checked before anything is stored;
 * - dispatcher.ts: the dispatch window, signer balancing, counting and settling batches;
 * - flight-watcher.ts: batches in flight checked on with their signers, lost ones given up;
 * - report.ts: how a run ends.
 */
import { DomainError } from "../errors";
import type { Clock } from "../clock";
import type {
	BatcherStatus,
	RunDetails,
	RunDoc,
	RunView,
	StartRunParams,
	StartedRun,
} from "../contract";
import { MAX_SUBMITTED_RECORD_BYTES } from "../records/submission";
import { Wake, whenAvailable, type ActiveRun, type RunContext } from "./active-run";
import { Dispatcher } from "./dispatcher";
import { FlightWatcher } from "./flight-watcher";
import { FollowFeed } from "./follow-feed";
import { BatchPlanner } from "./planner";
import type { BatcherLogger, BatcherStore, Emit, RecordsPort, SignersPort } from "./ports";
import { finishRun } from "./report";
import { checkBatchFits, runView, validateBatchSize, validateIdempotencyKey } from "./run-input";

export { BatchLostError } from "./flight-watcher";
export { BatchTooLargeError, InvalidBatchSizeError, runView, validateBatchSize } from "./run-input";

export interface BatcherOptions {
	/** Batch size of a run started without one. */
	batchSize: number;
	/** Batches in flight; 0 = 4 per available signer node, at least 6. */
	window: number;
	/** Resume a run left `running` when the service starts. */
	resumeOnStart: boolean;
	/** A record's batches may fail this often before the run fails. */
	maxAttempts: number;
	/** How long one `signer.signBatch` may take: a key wait, a lease, and some slack. */
	signTimeoutMs: number;
	/** On stop, how long batches in flight may settle so their documents say how they ended. */
	stopSettleMs: number;
	/** A batch in flight this long is checked on with its signer, and again each time this passes. */
	probeAfterMs: number;
	/** A follow run dispatches a batch smaller than its size once its oldest waiting record waited this long. */
	lingerMs: number;
	/**
	 * What resuming does with an interrupted follow run: go on with it (a long-running node), or
	 * end it and say so (`npm start`, which never follows: it then signs what waits as its own run).
	 */
	interruptedFollow: "resume" | "end";
}

export interface BatcherDeps {
	store: BatcherStore;
	records: RecordsPort;
	signers: SignersPort;
	emit: Emit;
	clock: Clock;
	logger: BatcherLogger;
	/** True once the node is shutting down (its services already unpublished), before `stop()` runs. */
	nodeStopping(): boolean;
}

export class Batcher {
	private active: ActiveRun | null = null;
	private stopping = false;
	private readonly context: RunContext;
	private readonly flights: FlightWatcher;
	private readonly dispatcher: Dispatcher;

	constructor(
		private readonly options: BatcherOptions,
		private readonly deps: BatcherDeps,
	) {
		this.context = {
			clock: deps.clock,
			logger: deps.logger,
			halted: () => this.stopping || deps.nodeStopping(),
		};
		this.flights = new FlightWatcher(deps.signers, this.context, options.probeAfterMs);
		this.dispatcher = new Dispatcher(options, { ...deps, flights: this.flights }, this.context);
	}

	/**
	 * Starts a run over every unsigned record, its batch size fixed for the run. A repeat with
	 * the same idempotency key and request gets the run it started, even after a restart.
	 */
	async start(params: StartRunParams): Promise<StartedRun> {
		const batchSize = validateBatchSize(params.batchSize, this.options.batchSize);
		const idempotencyKey = validateIdempotencyKey(params.idempotencyKey);
		const follow = params.follow === true;
		const fingerprint =
			params.requestFingerprint ??
			JSON.stringify({ batchSize: params.batchSize ?? null, follow });
		if (idempotencyKey) {
			const known = await this.deps.store.runByIdempotencyKey(idempotencyKey);
			if (known) {
				if ((known.requestFingerprint ?? fingerprint) !== fingerprint)
					throw new DomainError(
						"IDEMPOTENCY_KEY_REUSED",
						"This Idempotency-Key was already used with a different request",
						{ field: "Idempotency-Key", runId: known.runId },
					);
				return { ...runView(known), replayed: true };
			}
		}
		if (this.active) {
			const { runId, batchSize: activeSize, follow: following } = this.active.run;
			throw new DomainError(
				"RUN_ACTIVE",
				following
					? `Follow run ${runId} is active (batch size ${activeSize}) and never ends by itself: it signs records as they arrive; cancel it first (POST /api/runs/${runId}/cancel, or cancel in the REPL) to start another`
					: `Run ${runId} is still active (batch size ${activeSize}); a new run can start when it ends`,
				{ runId, batchSize: activeSize },
			);
		}
		await this.checkBatchFits(batchSize, follow);
		await this.checkActiveKeys();
		const now = new Date(this.deps.clock.now()).toISOString();
		const runId = `run-${now.replace(/[-:.TZ]/g, "").slice(0, 17)}-${Math.random().toString(36).slice(2, 6)}`;
		const run: RunDoc = {
			_id: runId,
			runId,
			batchSize,
			status: "running",
			startedAt: now,
			finishedAt: null,
			report: null,
			...(follow ? { follow } : {}),
			...(idempotencyKey ? { idempotencyKey, requestFingerprint: fingerprint } : {}),
		};
		await this.deps.store.insertRun(run);
		await this.launch(run, false);
		return { ...runView(run), replayed: false };
	}

	/**
	 * On start: a run left `running` by a crash or a stop goes on with its own batch size. Its
	 * batches left pending are settled from their stored signatures first (a live signer's late
	 * signatures for them are refused from then on), then unsigned records are paged again.
	 */
	async resumeInterrupted(): Promise<void> {
		if (!this.options.resumeOnStart) return;
		const interrupted = await this.deps.store.interruptedRun();
		if (!interrupted) return;
		if (interrupted.follow && this.options.interruptedFollow === "end") {
			await this.endInterruptedFollow(interrupted);
			return;
		}
		await this.launch(interrupted, true);
	}

	/**
	 * A follow run interrupted, found by a process that does not follow (`npm start`): it is
	 * said, its batches left pending are settled from what is stored, and it is stored
	 * `cancelled` with its report; the records waiting go to a run of the caller's own.
	 */
	private async endInterruptedFollow(run: RunDoc): Promise<void> {
		this.deps.logger.warn(
			`Found follow run ${run.runId} interrupted: this process does not follow, so it ends it; the records waiting are signed by a run of its own`,
		);
		run.cancelRequestedAt = new Date(this.deps.clock.now()).toISOString();
		await this.deps.store.updateRun(run.runId, { cancelRequestedAt: run.cancelRequestedAt });
		await this.launch(run, true);
		await this.active?.done;
	}

	/** Records arrived (`records.arrived`): a follow run waiting for them looks now. */
	recordsArrived(): void {
		this.active?.wake.notify();
	}

	/**
	 * Cancels the active run (the one named, if `runId` is given): no new batch goes out, the ones
	 * in flight finish or fail as usual and release their leases, then the run is stored as
	 * `cancelled` with its report. The request is stored first, so a restart finishes the cancel.
	 * Asking again is harmless.
	 */
	async cancel(runId?: string): Promise<RunView> {
		const active = this.active;
		if (!active || (runId !== undefined && active.run.runId !== runId)) {
			const run =
				runId !== undefined
					? await this.deps.store.getRun(runId)
					: (await this.deps.store.listRuns())[0];
			if (runId !== undefined && !run)
				throw new DomainError("RUN_NOT_FOUND", `Run "${runId}" not found`, { runId });
			throw new DomainError(
				"RUN_NOT_ACTIVE",
				run
					? `Run ${run.runId} is not running (it is ${run.status}): nothing to cancel`
					: "No run is active: nothing to cancel",
				{ runId: run?.runId ?? null, status: run?.status ?? null },
			);
		}
		if (!active.cancelled) {
			active.cancelled = true;
			active.run.cancelRequestedAt = new Date(this.deps.clock.now()).toISOString();
			await whenAvailable(this.context, "the batcher's store", () =>
				this.deps.store.updateRun(active.run.runId, {
					cancelRequestedAt: active.run.cancelRequestedAt,
				}),
			);
			this.deps.logger.info(
				`Run ${active.run.runId} cancelled: no new batch goes out; ${active.inFlight.size} in flight finish first`,
			);
			active.wake.notify();
		}
		return runView(active.run);
	}

	/** The active run with its progress, or the last run. */
	async status(): Promise<BatcherStatus> {
		const progress = await this.deps.records.progress();
		if (this.active)
			return {
				active: true,
				run: runView(this.active.run),
				progress,
				inFlight: this.active.inFlight.size,
			};
		const [last] = await this.deps.store.listRuns();
		return { active: false, run: last ? runView(last) : null, progress, inFlight: 0 };
	}

	async runs(): Promise<RunView[]> {
		return (await this.deps.store.listRuns()).map(runView);
	}

	/** One run with its batch counts and, once finished, its report. */
	async get(runId: string): Promise<RunDetails> {
		const run = await this.deps.store.getRun(runId);
		if (!run) throw new DomainError("RUN_NOT_FOUND", `Run "${runId}" not found`, { runId });
		const summary = await this.deps.store.batchSummary(run.runId);
		const inFlight = this.active?.run.runId === run.runId ? this.active.inFlight.size : 0;
		return {
			...runView(run),
			batches: { total: summary.total, ...summary.byStatus },
			inFlight,
		};
	}

	/**
	 * Stops dispatching and lets the batches in flight settle (bounded), so their documents say
	 * how they ended; then gives up the calls still waiting, so none keeps the node from stopping
	 * (their batches stay pending and are settled when the run resumes).
	 */
	async stop(): Promise<void> {
		this.stopping = true;
		const active = this.active;
		if (!active) return;
		// A follow run waiting for records stops waiting.
		active.wake.notify();
		await Promise.race([active.done, this.deps.clock.sleep(this.options.stopSettleMs)]);
		for (const flight of active.flights.values())
			flight.abort.abort(new Error("the batcher is stopping"));
		await Promise.race([active.done, this.deps.clock.sleep(1_000)]);
	}

	/** Refuses at the start, not mid-run, a batch size whose batches cannot reach a signer in one message. */
	private async checkBatchFits(batchSize: number, follow: boolean): Promise<void> {
		const limit = this.deps.signers.maxMessageBytes();
		if (limit === null) return;
		const largest = (await this.deps.records.stats()).maxRecordBytes;
		// A follow run's batches hold records not stored yet: as large as a submission may make them.
		checkBatchFits(
			batchSize,
			follow ? Math.max(largest, MAX_SUBMITTED_RECORD_BYTES) : largest,
			limit,
		);
	}

	/**
	 * Refuses at the start a run no batch of which could be signed: every key of the keyring
	 * retired or revoked. Each batch would wait ACQUIRE_WAIT_MS for a key, ten times, before the
	 * run failed (ten minutes and more by default). A keyring that does not answer now is no
	 * reason to refuse: the run's batches wait for it, as they always did.
	 */
	private async checkActiveKeys(): Promise<void> {
		const keys = await this.deps.signers.keyringKeys();
		if (keys && keys.active === 0)
			throw new DomainError(
				"NO_ACTIVE_KEY",
				`No active key: all ${keys.keys} key(s) of the keyring are retired or revoked, so no batch could be signed. Add keys first (npm run keys -- add --count N), then start the run`,
				{ keys: keys.keys, active: 0 },
			);
	}

	private async launch(run: RunDoc, resumed: boolean): Promise<void> {
		const { total: batchCount } = await this.deps.store.batchSummary(run.runId);
		const active: ActiveRun = {
			run,
			planner: new BatchPlanner(run.batchSize, this.options.maxAttempts),
			inFlight: new Set(),
			flights: new Map(),
			perSigner: new Map(),
			batchCount,
			failure: null,
			cancelled: Boolean(run.cancelRequestedAt),
			distrusted: new Set(),
			keyringLostAt: null,
			pausedUntil: 0,
			resumedAt: resumed ? this.deps.clock.now() : null,
			follow: run.follow ? new FollowFeed(run.batchSize, this.options.lingerMs) : null,
			untilSeq: Infinity,
			wake: new Wake(),
			done: Promise.resolve(),
		};
		this.active = active;
		const progress = await whenAvailable(this.context, "records.progress", () =>
			this.deps.records.progress(),
		);
		if (!run.follow)
			active.untilSeq = (
				await whenAvailable(this.context, "records.stats", () => this.deps.records.stats())
			).lastSeq;
		this.deps.emit("run.started", {
			runId: run.runId,
			batchSize: run.batchSize,
			records: progress.records,
			alreadySigned: progress.signed,
			resumed,
			follow: Boolean(run.follow),
		});
		this.deps.logger.info(
			`${resumed ? "Resuming" : "Starting"} ${run.follow ? "follow run" : "run"} ${run.runId}: batch size ${run.batchSize}, ${progress.records - progress.signed} of ${progress.records} records unsigned${run.follow ? `; then signs records as they arrive, a batch once ${run.batchSize} wait or the oldest waited ${this.options.lingerMs} ms` : ""}`,
		);
		const stopWatching = this.flights.watch(active);
		active.done = (resumed ? this.settlePending(active) : Promise.resolve())
			.then(() => this.dispatcher.drive(active))
			.catch((err) => {
				active.failure = (err as Error).message;
			})
			.finally(stopWatching)
			.then(() => {
				if (this.active === active) this.active = null;
				return finishRun(active, this.deps, this.context);
			})
			.catch((err) =>
				this.deps.logger.error(
					`Run ${run.runId} could not be finished: ${(err as Error).message}`,
				),
			);
	}

	/** A resumed run's batches left pending by the crash or stop: settled from what is stored before anything is dispatched. */
	private async settlePending(active: ActiveRun): Promise<void> {
		const pending = await whenAvailable(this.context, "the batcher's store", () =>
			this.deps.store.pendingBatches(active.run.runId),
		);
		for (const batch of pending)
			await this.dispatcher.settle(
				active,
				batch,
				"the batcher stopped before this batch's reply",
			);
		if (pending.length)
			this.deps.logger.info(
				`Settled ${pending.length} batch(es) left pending from their stored signatures`,
			);
	}

	/**
	 * A signer node reconnected to NATS (or, with no node given, this one did): requests sent
	 * to it meanwhile, or replies from it, may be lost. Its batches in flight are checked on now.
	 */
	transportReconnected(nodeID?: string): void {
		if (this.active) this.flights.probe(this.active, nodeID ?? true);
	}
}
