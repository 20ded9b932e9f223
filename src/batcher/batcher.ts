/**
 * The batcher's whole behaviour, without a broker: a run's life from `start` to its report.
 * It pages unsigned records, records each batch before dispatching it to the least busy
 * signer within a bounded window, retries a failed batch's still-unsigned records as a new
 * batch, resumes an interrupted run, and reports. The batch size is fixed for the run.
 *
 * A signer's reply is not taken at its word: a batch counts as signed only when records holds
 * a signature under it for every one of its records, under one key and lease. A signer that
 * claimed more than records holds gets no more batches of the run.
 *
 * A batch that ends without its signer's reply (an error, a timeout, a node gone, a request
 * or reply lost in transit), or whose reply records does not bear out, is settled from what is stored: the records service closes it,
 * so no signature lands under it afterwards, and answers what it holds. The batch record then
 * names the key and lease of its signatures and says `signed`, `partial` or `failed`. A batch
 * in flight for a while is checked on: its signer is asked whether it has it, and one it does
 * not have is given up at once instead of waiting out the sign timeout.
 */
import { Errors } from "moleculer";
import type { Clock } from "../clock";
import { MAX_BATCH_SIZE } from "../config";
import type { BatchDoc, BatcherStatus, RunDetails, RunDoc, RunReport, RunView, SignBatchResult, StartRunParams, StartedRun } from "../contract";
import { busChecks } from "../identity/bus-checks";
import { BatchPlanner, retryDelayMs, type PlannedBatch } from "./planner";
import type { BatcherLogger, BatcherStore, Emit, RecordsPort, SignersPort } from "./ports";

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

/** A batch sent to a signer whose reply has not come yet. */
interface Flight {
	batchId: string;
	signer: string | undefined;
	sentAt: number;
	probedAt: number;
	abort: AbortController;
}

interface ActiveRun {
	run: RunDoc;
	planner: BatchPlanner;
	inFlight: Set<Promise<void>>;
	flights: Map<string, Flight>;
	/** Batches in flight per signer node. */
	perSigner: Map<string, number>;
	batchCount: number;
	failure: string | null;
	/** batcher.cancel asked it to stop: no new batch goes out; the ones in flight end as usual. */
	cancelled: boolean;
	/** Signer nodes whose reply claimed signatures records does not hold: sent nothing more. */
	distrusted: Set<string>;
	done: Promise<void>;
}

/** The signer asked does not have the batch: its request or its reply was lost in transit. */
export class BatchLostError extends Error {
	constructor(batchId: string, signer: string, ageMs: number) {
		super(`signer ${signer} does not have batch ${batchId}, sent ${(ageMs / 1000).toFixed(1)} s ago: its request or its reply was lost`);
		this.name = "BatchLostError";
	}
}

export class InvalidBatchSizeError extends Errors.MoleculerClientError {
	constructor(value: unknown) {
		super(`batchSize must be an integer from 1 to ${MAX_BATCH_SIZE}, got ${JSON.stringify(value)}`, 422, "INVALID_BATCH_SIZE", { field: "batchSize", min: 1, max: MAX_BATCH_SIZE, value });
	}
}

/** JSON around each record of a batch (`{"id":"","data":""},`) and around the batch itself. */
const BYTES_PER_RECORD = 24;
const BYTES_PER_BATCH = 1024;

export class BatchTooLargeError extends Errors.MoleculerClientError {
	constructor(batchSize: number, bytes: number, limit: number, largest: number) {
		super(
			`batchSize ${batchSize} does not fit one message to a signer: a batch of ${batchSize} records takes about ${Math.ceil(bytes / 1024)} KB, and the NATS server takes at most ${Math.floor(limit / 1024)} KB (its max_payload). ` +
				`Use a batch size of at most ${largest}, or raise the server's max_payload.`,
			422, "BATCH_TOO_LARGE", { field: "batchSize", value: batchSize, max: largest, maxPayload: limit }
		);
	}
}

export function validateBatchSize(value: unknown, fallback: number): number {
	// Left out, the default; given, it must be a valid size (null included: it is not "left out").
	if (value === undefined) return fallback;
	if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > MAX_BATCH_SIZE) throw new InvalidBatchSizeError(value);
	return value;
}

/** Printable ASCII, as in the IETF httpapi Idempotency-Key draft; bounded so it cannot bloat the store. */
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

function validateIdempotencyKey(key: unknown): string | undefined {
	if (key === undefined || key === null) return undefined;
	if (typeof key !== "string" || !IDEMPOTENCY_KEY.test(key))
		throw new Errors.MoleculerClientError("Idempotency-Key must be 1 to 255 printable ASCII characters", 422, "INVALID_IDEMPOTENCY_KEY", { field: "Idempotency-Key", rule: "1-255 printable ASCII characters" });
	return key;
}

/** What the stored run shows a caller: no storage id, and not the caller's Idempotency-Key (public reads show runs). */
export function runView(run: RunDoc): RunView {
	const { _id, idempotencyKey: _key, requestFingerprint: _fingerprint, ...view } = run;
	return view;
}

export class Batcher {
	private active: ActiveRun | null = null;
	private stopping = false;

	constructor(private readonly options: BatcherOptions, private readonly deps: BatcherDeps) {}

	/**
	 * Starts a run over every unsigned record, its batch size fixed for the run. A repeat with
	 * the same idempotency key and request gets the run it started, even after a restart.
	 */
	async start(params: StartRunParams): Promise<StartedRun> {
		const batchSize = validateBatchSize(params.batchSize, this.options.batchSize);
		const idempotencyKey = validateIdempotencyKey(params.idempotencyKey);
		const fingerprint = params.requestFingerprint ?? JSON.stringify({ batchSize: params.batchSize ?? null });
		if (idempotencyKey) {
			const known = await this.deps.store.runByIdempotencyKey(idempotencyKey);
			if (known) {
				if ((known.requestFingerprint ?? fingerprint) !== fingerprint)
					throw new Errors.MoleculerClientError("This Idempotency-Key was already used with a different request", 422, "IDEMPOTENCY_KEY_REUSED", { field: "Idempotency-Key", runId: known.runId });
				return { ...runView(known), replayed: true };
			}
		}
		if (this.active) {
			const { runId, batchSize: activeSize } = this.active.run;
			throw new Errors.MoleculerClientError(`Run ${runId} is still active (batch size ${activeSize}); a new run can start when it ends`, 409, "RUN_ACTIVE", { runId, batchSize: activeSize });
		}
		await this.checkBatchFits(batchSize);
		const now = new Date(this.deps.clock.now()).toISOString();
		const runId = `run-${now.replace(/[-:.TZ]/g, "").slice(0, 17)}-${Math.random().toString(36).slice(2, 6)}`;
		const run: RunDoc = {
			_id: runId, runId, batchSize, status: "running", startedAt: now, finishedAt: null, report: null,
			...(idempotencyKey ? { idempotencyKey, requestFingerprint: fingerprint } : {})
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
		await this.launch(interrupted, true);
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
			const run = runId !== undefined ? await this.deps.store.getRun(runId) : (await this.deps.store.listRuns())[0];
			if (runId !== undefined && !run) throw new Errors.MoleculerClientError(`Run "${runId}" not found`, 404, "RUN_NOT_FOUND", { runId });
			throw new Errors.MoleculerClientError(run ? `Run ${run.runId} is not running (it is ${run.status}): nothing to cancel` : "No run is active: nothing to cancel", 409, "RUN_NOT_ACTIVE", { runId: run?.runId ?? null, status: run?.status ?? null });
		}
		if (!active.cancelled) {
			active.cancelled = true;
			active.run.cancelRequestedAt = new Date(this.deps.clock.now()).toISOString();
			await this.whenAvailable("the batcher's store", () => this.deps.store.updateRun(active.run.runId, { cancelRequestedAt: active.run.cancelRequestedAt }));
			this.deps.logger.info(`Run ${active.run.runId} cancelled: no new batch goes out; ${active.inFlight.size} in flight finish first`);
		}
		return runView(active.run);
	}

	/** The active run with its progress, or the last run. */
	async status(): Promise<BatcherStatus> {
		const progress = await this.deps.records.progress();
		if (this.active) return { active: true, run: runView(this.active.run), progress, inFlight: this.active.inFlight.size };
		const [last] = await this.deps.store.listRuns();
		return { active: false, run: last ? runView(last) : null, progress, inFlight: 0 };
	}

	async runs(): Promise<RunView[]> {
		return (await this.deps.store.listRuns()).map(runView);
	}

	/** One run with its batch counts and, once finished, its report. */
	async get(runId: string): Promise<RunDetails> {
		const run = await this.deps.store.getRun(runId);
		if (!run) throw new Errors.MoleculerClientError(`Run "${runId}" not found`, 404, "RUN_NOT_FOUND", { runId });
		const summary = await this.deps.store.batchSummary(run.runId);
		const inFlight = this.active?.run.runId === run.runId ? this.active.inFlight.size : 0;
		return { ...runView(run), batches: { total: summary.total, ...summary.byStatus }, inFlight };
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
		await Promise.race([active.done, this.deps.clock.sleep(this.options.stopSettleMs)]);
		for (const flight of active.flights.values()) flight.abort.abort(new Error("the batcher is stopping"));
		await Promise.race([active.done, this.deps.clock.sleep(1_000)]);
	}

	/** Refuses at the start, not mid-run, a batch size whose batches cannot reach a signer in one message. */
	private async checkBatchFits(batchSize: number): Promise<void> {
		const limit = this.deps.signers.maxMessageBytes();
		if (limit === null) return;
		const { maxRecordBytes } = await this.deps.records.stats();
		const perRecord = maxRecordBytes + BYTES_PER_RECORD;
		const bytes = batchSize * perRecord + BYTES_PER_BATCH;
		if (bytes > limit) throw new BatchTooLargeError(batchSize, bytes, limit, Math.max(1, Math.floor((limit - BYTES_PER_BATCH) / perRecord)));
	}

	// ------------------------------------------------------------ the run loop

	private get halted(): boolean {
		return this.stopping || this.deps.nodeStopping();
	}

	/**
	 * Runs `work` (a store write, a page from the records service) until it answers: an outage
	 * pauses dispatch instead of failing the run. A client error (a bug, bad input) is not an
	 * outage and is thrown at once, as is anything once the node stops.
	 */
	private async whenAvailable<T>(what: string, work: () => Promise<T>): Promise<T> {
		for (let attempt = 0; ; attempt++) {
			try {
				const result = await work();
				if (attempt > 0) this.deps.logger.info(`${what} answers again after ${attempt} tries: dispatch goes on`);
				return result;
			} catch (err) {
				if (this.halted || err instanceof Errors.MoleculerClientError) throw err;
				if (attempt === 0) this.deps.logger.warn(`${what} failed (${(err as Error).message}): dispatch pauses and tries again until it answers`);
				await this.deps.clock.sleep(Math.min(5_000, 100 * 2 ** attempt));
			}
		}
	}

	private async launch(run: RunDoc, resumed: boolean): Promise<void> {
		const { total: batchCount } = await this.deps.store.batchSummary(run.runId);
		const active: ActiveRun = {
			run, planner: new BatchPlanner(run.batchSize, this.options.maxAttempts), inFlight: new Set(), flights: new Map(), perSigner: new Map(), batchCount, failure: null,
			cancelled: Boolean(run.cancelRequestedAt), distrusted: new Set(), done: Promise.resolve()
		};
		this.active = active;
		const progress = await this.whenAvailable("records.progress", () => this.deps.records.progress());
		this.deps.emit("run.started", { runId: run.runId, batchSize: run.batchSize, records: progress.records, alreadySigned: progress.signed, resumed });
		this.deps.logger.info(`${resumed ? "Resuming" : "Starting"} run ${run.runId}: batch size ${run.batchSize}, ${progress.records - progress.signed} of ${progress.records} records unsigned`);
		const stopProbing = this.deps.clock.every(Math.max(100, Math.floor(this.options.probeAfterMs / 3)), () => this.probeSigners(active));
		active.done = (resumed ? this.settlePending(active) : Promise.resolve())
			.then(() => this.drive(active))
			.catch(err => {
				active.failure = (err as Error).message;
			})
			.finally(stopProbing)
			.then(() => this.finish(active))
			.catch(err => this.deps.logger.error(`Run ${run.runId} could not be finished: ${(err as Error).message}`));
	}

	/** A resumed run's batches left pending by the crash or stop: settled from what is stored before anything is dispatched. */
	private async settlePending(active: ActiveRun): Promise<void> {
		const pending = await this.whenAvailable("the batcher's store", () => this.deps.store.pendingBatches(active.run.runId));
		for (const batch of pending) await this.settle(active, batch, "the batcher stopped before this batch's reply");
		if (pending.length) this.deps.logger.info(`Settled ${pending.length} batch(es) left pending from their stored signatures`);
	}

	/**
	 * A signer node reconnected to NATS (or, with no node given, this one did): requests sent
	 * to it meanwhile, or replies from it, may be lost. Its batches in flight are checked on now.
	 */
	transportReconnected(nodeID?: string): void {
		if (this.active) this.probeSigners(this.active, nodeID ?? true);
	}

	/**
	 * Asks each signer that has had a batch for `probeAfterMs` (or, when `now` says so, every
	 * signer or that one, whatever their batches' age) which batches it is working on. One that
	 * does not have a batch sent to it lost the request or the reply: the batch is given up now
	 * and settled. A signer that does not answer is left to its heartbeats (the broker fails its
	 * requests when it is declared gone) and to the next check.
	 */
	/** Signers with a check on the way (one sent before a reconnect may be lost: a forced check goes anyway). */
	private readonly probing = new Set<string>();
	private probeSigners(active: ActiveRun, now: boolean | string = false): void {
		const at = this.deps.clock.now();
		const due = new Map<string, Flight[]>();
		for (const flight of active.flights.values()) {
			if (!flight.signer) continue;
			const forced = now === true || now === flight.signer;
			if (!forced && (this.probing.has(flight.signer) || at - flight.sentAt < this.options.probeAfterMs || at - flight.probedAt < this.options.probeAfterMs)) continue;
			flight.probedAt = at;
			due.set(flight.signer, [...(due.get(flight.signer) ?? []), flight]);
		}
		for (const [signer, flights] of due) {
			this.probing.add(signer);
			this.deps.signers
				.inFlight(signer, Math.min(2_000, this.options.probeAfterMs))
				.then(
					batchIds => {
						const known = new Set(batchIds);
						for (const flight of flights)
							if (active.flights.get(flight.batchId) === flight && !known.has(flight.batchId)) flight.abort.abort(new BatchLostError(flight.batchId, signer, at - flight.sentAt));
					},
					() => undefined
				)
				.finally(() => this.probing.delete(signer));
		}
	}

	/** The signer nodes batches may go to: those available, less the ones this run stopped trusting. */
	private signersFor(active: ActiveRun): string[] {
		const available = this.deps.signers.available();
		return active.distrusted.size ? available.filter(node => !active.distrusted.has(node)) : available;
	}

	private windowSize(active: ActiveRun): number {
		if (this.options.window > 0) return this.options.window;
		// Enough batches to keep every signer node busy while others wait on storage.
		return Math.max(6, 4 * this.signersFor(active).length);
	}

	/**
	 * The available signer node with the fewest batches in flight. A node that died keeps
	 * only its share of the window until its heartbeats are missed, instead of collecting
	 * every batch round-robin would send it meanwhile (the whole window, and a stalled run).
	 */
	private pickSigner(active: ActiveRun): string | undefined {
		let best: string | undefined;
		let bestLoad = Infinity;
		for (const nodeID of this.signersFor(active)) {
			const load = active.perSigner.get(nodeID) ?? 0;
			if (load < bestLoad) [best, bestLoad] = [nodeID, load];
		}
		return best;
	}

	private async drive(active: ActiveRun): Promise<void> {
		const { planner } = active;
		let sweeps = 0;
		while (!this.halted && !active.failure) {
			if (active.cancelled) {
				// The batches in flight end as usual (signed, or settled), then the run ends.
				while (active.inFlight.size) await Promise.race(active.inFlight);
				return;
			}
			// No signer yet (cluster starting, or every signer gone): wait rather than fail batches.
			if (this.signersFor(active).length === 0) {
				await this.deps.signers.waitForAny(1_000);
				continue;
			}
			while (active.inFlight.size < this.windowSize(active) && !this.halted && !active.failure && !active.cancelled) {
				let planned = planner.nextRetry();
				if (!planned && planner.paging) {
					const after = planner.after;
					planned = planner.acceptPage(await this.whenAvailable("records.unsignedPage", () => this.deps.records.unsignedPage(after, active.run.batchSize)));
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
			const progress = await this.whenAvailable("records.progress", () => this.deps.records.progress());
			if (progress.signed >= progress.records) return;
			// Pages are read while batches are in flight; one more pass picks up any stragglers.
			if (++sweeps > 3) throw new Error(`${progress.records - progress.signed} records are still unsigned after ${sweeps} passes`);
			planner.rewind();
		}
	}

	private async runBatch(active: ActiveRun, planned: PlannedBatch): Promise<void> {
		const { run } = active;
		const { store, clock } = this.deps;
		const batchId = `${run.runId}-b${String(++active.batchCount).padStart(6, "0")}`;
		const recordIds = planned.records.map(record => record.id);
		const signer = this.pickSigner(active);
		const batch: BatchDoc = { _id: batchId, batchId, runId: run.runId, keyId: null, leaseId: null, recordIds, attempt: planned.attempt, status: "pending", startedAt: new Date(clock.now()).toISOString(), finishedAt: null, signer: signer ?? null, error: null };
		// Recorded before dispatch, whatever it takes: after a crash the store knows every batch that may have run.
		await this.whenAvailable("the batcher's store", () => store.insertBatch(batch));
		const startedAt = clock.now();
		const flight: Flight = { batchId, signer, sentAt: startedAt, probedAt: 0, abort: new AbortController() };
		active.flights.set(batchId, flight);
		if (signer) active.perSigner.set(signer, (active.perSigner.get(signer) ?? 0) + 1);
		let result: SignBatchResult | null = null;
		let error = "";
		try {
			result = await this.deps.signers.signBatch({ batchId, runId: run.runId, records: planned.records }, { nodeID: signer, timeoutMs: this.options.signTimeoutMs, signal: flight.abort.signal });
		} catch (err) {
			error = (err as Error).message;
		} finally {
			active.flights.delete(batchId);
			if (signer) active.perSigner.set(signer, active.perSigner.get(signer)! - 1);
		}
		if (result) {
			// Counted from what records holds under the batch, never from the signer's word (the
			// benchmark's run without the bus checks takes the word, to measure what this costs).
			const groups = busChecks.on ? await this.whenAvailable("records.signedUnder", () => this.deps.records.signedUnder(batchId)) : [{ keyId: result.keyId, leaseId: result.leaseId, count: result.stored }];
			const stored = groups.reduce((sum, group) => sum + group.count, 0);
			if (groups.length === 1 && stored === recordIds.length) {
				const [{ keyId, leaseId }] = groups;
				const finishedAt = new Date(clock.now()).toISOString();
				await this.whenAvailable("the batcher's store", () => store.updateBatch(batchId, { status: "signed", keyId, leaseId, signer: signer ?? result!.signer, stored, duplicates: 0, unsigned: 0, finishedAt }));
				this.deps.emit("batch.signed", { runId: run.runId, batchId, keyId, signer: signer ?? result.signer, size: recordIds.length, stored, duplicates: 0, latencyMs: clock.now() - startedAt, leaseWaitMs: result.leaseWaitMs });
				return;
			}
			error = `signer ${signer ?? result.signer} answered ${result.stored} signature(s) stored; records holds ${stored} under the batch`;
			if (result.stored > stored && signer) {
				active.distrusted.add(signer);
				this.deps.logger.error(`Batch ${batchId}: ${error}. Signer ${signer} gets no more batches of run ${run.runId}`);
			}
		}

		this.deps.logger.warn(`Batch ${batchId} (attempt ${planned.attempt}) ended without ${result ? "a reply records bears out" : "a reply"}: ${error}`);
		let unsigned;
		try {
			unsigned = await this.settle(active, batch, error, startedAt);
		} catch (err) {
			// Only once the node stops: the batch stays pending and is settled when the run resumes.
			this.deps.logger.warn(`Batch ${batchId} stays pending until the run resumes: ${(err as Error).message}`);
			return;
		}
		// Ended by the shutdown itself: not an attempt against the run; its records are paged again on resume.
		// Ended in a cancelled run: its records wait for the next run.
		if (this.halted || active.cancelled || unsigned.length === 0) return;
		if (!active.planner.failed(planned, unsigned)) active.failure = `records of batch ${batchId} failed ${planned.attempt} times; last error: ${error}`;
		await clock.sleep(retryDelayMs(planned.attempt));
	}

	/**
	 * Settles a batch that ended without its signer's reply from what is stored: closes it at
	 * the records service (no signature lands under it afterwards), then records the key and
	 * lease of its signatures and whether all, some or none of its records are signed. Returns
	 * its records still unsigned.
	 */
	private async settle(active: ActiveRun, batch: BatchDoc, reason: string, startedAt?: number) {
		const { batchId, recordIds } = batch;
		const closed = await this.whenAvailable("records.closeBatch", () => this.deps.records.closeBatch(batchId, recordIds));
		const stored = closed.signed.reduce((sum, group) => sum + group.count, 0);
		// One group, unless rule 3 broke somewhere: the largest names the batch, the audit reports the rest.
		const [main] = [...closed.signed].sort((a, b) => b.count - a.count);
		if (closed.signed.length > 1) this.deps.logger.error(`Batch ${batchId} has signatures under ${closed.signed.length} leases: ${closed.signed.map(g => `${g.leaseId} (${g.keyId})`).join(", ")}`);
		const unsigned = closed.unsigned.length;
		const status = unsigned === 0 ? "signed" : stored > 0 ? "partial" : "failed";
		const finishedAt = new Date(this.deps.clock.now()).toISOString();
		const signer = stored > 0 ? batch.signer ?? null : null;
		await this.whenAvailable("the batcher's store", () =>
			this.deps.store.updateBatch(batchId, { status, keyId: main?.keyId ?? null, leaseId: main?.leaseId ?? null, signer, stored, duplicates: recordIds.length - stored - unsigned, unsigned, finishedAt, error: reason })
		);
		const { runId } = active.run;
		if (status === "signed" && main) {
			this.deps.logger.info(`Batch ${batchId}: its reply was lost, but all its records are signed (${stored} under ${main.keyId}, lease ${main.leaseId})`);
			this.deps.emit("batch.signed", { runId, batchId, keyId: main.keyId, signer: signer ?? "", size: recordIds.length, stored, duplicates: recordIds.length - stored, latencyMs: startedAt === undefined ? 0 : this.deps.clock.now() - startedAt, leaseWaitMs: null });
		} else {
			if (status === "partial") this.deps.logger.warn(`Batch ${batchId} is partly signed: ${stored} under ${main!.keyId}, ${unsigned} records go in a new batch`);
			this.deps.emit("batch.failed", { runId, batchId, size: recordIds.length, error: reason, stored });
		}
		return closed.unsigned;
	}

	private async finish(active: ActiveRun): Promise<void> {
		if (this.active === active) this.active = null;
		const { run } = active;
		if (this.halted) {
			this.deps.logger.info(`Run ${run.runId} interrupted by shutdown; it resumes on the next start`);
			return;
		}
		const finishedAt = new Date(this.deps.clock.now());
		const summary = await this.whenAvailable("the batcher's store", () => this.deps.store.batchSummary(run.runId));
		const progress = await this.deps.records.progress().catch(() => ({ records: 0, signed: 0 }));
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
			recordsPerSecond: seconds > 0 ? Math.round(summary.stored / seconds) : 0
		};
		const status = active.failure ? "failed" : active.cancelled ? "cancelled" : "completed";
		await this.whenAvailable("the batcher's store", () => this.deps.store.updateRun(run.runId, { status, finishedAt: finishedAt.toISOString(), report, ...(active.failure ? { error: active.failure } : {}) }));
		Object.assign(run, { status, finishedAt: finishedAt.toISOString(), report });
		if (active.failure) this.deps.logger.error(`Run ${run.runId} failed: ${active.failure}`);
		else if (active.cancelled) this.deps.logger.info(`Run ${run.runId} cancelled: ${summary.stored} records signed in ${seconds.toFixed(1)} s, ${progress.records - progress.signed} left for a later run`);
		else this.deps.logger.info(`Run ${run.runId} completed: ${summary.stored} records in ${seconds.toFixed(1)} s`);
		this.deps.emit("run.completed", { report, status, error: active.failure });
	}
}
