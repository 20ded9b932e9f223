/**
 * A run's dispatch: pages unsigned records, records each batch before sending it to the least
 * busy trusted signer within a bounded window, counts a batch signed from what records holds
 * under it (never from the signer's word), settles a batch that ended otherwise from what is
 * stored, and gives a failed batch's still-unsigned records to the planner as a new batch.
 *
 * A batch that ends without its signer's reply (an error, a timeout, a node gone, a request
 * or reply lost in transit), or whose reply records does not bear out, is settled: the records
 * service closes it, so no signature lands under it afterwards, and answers what it holds. The
 * batch record then names the key and lease of its signatures and says `signed`, `partial` or
 * `failed`. A signer whose reply claimed more than records holds gets no more batches of the run.
 */
import type { BatchDoc, RecordPayload, SignBatchResult } from "../contract";
import { busChecks } from "../identity/bus-checks";
import { whenAvailable, type ActiveRun, type RunContext } from "./active-run";
import type { FlightWatcher } from "./flight-watcher";
import { retryDelayMs, type PlannedBatch } from "./planner";
import type { BatcherStore, Emit, RecordsPort, SignersPort } from "./ports";

export interface DispatchOptions {
	/** Batches in flight; 0 = 4 per available signer node, at least 6. */
	window: number;
	/** How long one `signer.signBatch` may take. */
	signTimeoutMs: number;
}

/** A follow run with nothing to dispatch looks for records at least this often, in case a `records.arrived` was missed. */
const FOLLOW_POLL_MS = 1_000;

export interface DispatchDeps {
	store: BatcherStore;
	records: RecordsPort;
	signers: SignersPort;
	emit: Emit;
	flights: FlightWatcher;
}

/** While no keyring answers: how often the batcher looks, and how long before a batch tries anyway. */
const KEYRING_POLL_MS = 100;
const KEYRING_RECHECK_MS = 1_000;
/**
 * How long dispatch pauses when a signer reached no records service: Moleculer tells the other
 * nodes of a node's services one second after the last one starts.
 */
const RECORDS_PAUSE_MS = 1_000;
/** Tries at settling a batch records refuses to close while the node runs, a second apart. */
const SETTLE_TRIES = 3;

/** How Moleculer says no node offers an action (not yet, or no longer). */
const NOT_OFFERED = new Set(["SERVICE_NOT_FOUND", "SERVICE_NOT_AVAILABLE"]);
/** ... or that none answered in time, or the node that had the request is gone (src/broker/lost-requests.ts). */
const NO_ANSWER = new Set([...NOT_OFFERED, "REQUEST_TIMEOUT", "REQUEST_REJECTED"]);

/**
 * Which service a signer's failure says it could not reach, if any: the keyring (no node offers
 * its actions, not even registered yet as on a node whose keyring is still being elected; none
 * answered in time; or the keyring that had the request is gone), or records (the signer has
 * not yet heard of a records node that has just started). Neither is the batch's fault. The
 * error as Moleculer carries it.
 */
function unreachableService(err: unknown): "keyring" | "records" | null {
	const { type, data } = (err ?? {}) as { type?: unknown; data?: { action?: unknown } };
	if (typeof data?.action !== "string") return null;
	if (data.action.startsWith("keyring.") && NO_ANSWER.has(String(type))) return "keyring";
	// A timeout may be records at work on a large piece: only a records the signer cannot see.
	if (data.action.startsWith("records.") && NOT_OFFERED.has(String(type))) return "records";
	return null;
}

export class Dispatcher {
	constructor(
		private readonly options: DispatchOptions,
		private readonly deps: DispatchDeps,
		private readonly context: RunContext,
	) {}

	/** Dispatches until every record is signed, the run is cancelled or fails, or the node stops. */
	async drive(active: ActiveRun): Promise<void> {
		const { planner } = active;
		let sweeps = 0;
		while (!this.context.halted() && !active.failure) {
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
			// A batch found no keyring: wait until one answers rather than fail batches.
			if (active.keyringLostAt !== null && !(await this.keyringBack(active))) continue;
			// A signer reached no records service: give the bus a moment to announce it.
			const paused = active.pausedUntil - this.context.clock.now();
			if (paused > 0) {
				await this.landingOr(active, paused);
				continue;
			}
			while (
				active.inFlight.size < this.windowSize(active) &&
				!this.context.halted() &&
				!active.failure &&
				!active.cancelled
			) {
				let planned = planner.nextRetry(this.context.clock.now());
				if (!planned && active.follow) planned = await this.nextArrivals(active);
				else if (!planned && planner.paging) {
					const after = planner.after;
					planned = planner.acceptPage(
						await whenAvailable(this.context, "records.unsignedPage", () =>
							this.deps.records.unsignedPage(after, active.run.batchSize),
						),
					);
				}
				if (!planned) break;
				const task: Promise<void> = this.runBatch(active, planned).finally(() =>
					active.inFlight.delete(task),
				);
				active.inFlight.add(task);
			}
			if (active.follow) {
				await this.awaitArrivals(active);
				continue;
			}
			if (active.inFlight.size > 0 || planner.pendingRetries > 0) {
				await this.landingOrRetryDue(active);
				continue;
			}
			const progress = await whenAvailable(this.context, "records.progress", () =>
				this.deps.records.progress(),
			);
			if (progress.signed >= progress.records) return;
			// Records submitted since the run started do not keep it going: it is done once what the store held then is signed.
			const [oldest] = await whenAvailable(this.context, "records.unsignedArrivals", () =>
				this.deps.records.unsignedArrivals(0, 1),
			);
			if (!oldest || oldest.seq > active.untilSeq) return;
			// Pages are read while batches are in flight; one more pass picks up any stragglers.
			if (++sweeps > 3)
				throw new Error(
					`${progress.records - progress.signed} records are still unsigned after ${sweeps} passes`,
				);
			planner.rewind();
		}
	}

	/** A follow run's next batch: the records waiting, topped up in arrival order, once a batch is full or lingered. */
	private async nextArrivals(active: ActiveRun): Promise<PlannedBatch | undefined> {
		const feed = active.follow!;
		if (feed.room > 0) {
			const after = feed.after;
			feed.accept(
				await whenAvailable(this.context, "records.unsignedArrivals", () =>
					this.deps.records.unsignedArrivals(after, feed.room),
				),
			);
		}
		return feed.take(this.context.clock.now());
	}

	/**
	 * Waits for whichever comes first: a batch in flight landing, or (with room in the window) the
	 * end of the next retry's backoff.
	 */
	private landingOrRetryDue(active: ActiveRun): Promise<void> {
		const retryAt = active.planner.nextRetryAt;
		return this.landingOr(
			active,
			retryAt !== null && active.inFlight.size < this.windowSize(active)
				? retryAt - this.context.clock.now()
				: null,
		);
	}

	/** Waits for a batch in flight to land, or for `ms` to pass (null: no time limit). */
	private async landingOr(active: ActiveRun, ms: number | null): Promise<void> {
		let cancel = () => undefined as void;
		const timer =
			ms === null
				? []
				: [
						new Promise<void>((resolve) => {
							cancel = this.context.clock.after(Math.max(0, ms), resolve);
						}),
					];
		try {
			await Promise.race([...active.inFlight, ...timer]);
		} finally {
			cancel();
		}
	}

	/**
	 * A follow run with nothing to send now waits for whichever comes first: a batch landing (a
	 * place in the window), a retry's backoff ending, the oldest waiting record's linger, records
	 * arriving, a cancel, or the poll.
	 */
	private async awaitArrivals(active: ActiveRun): Promise<void> {
		const { clock } = this.context;
		const feed = active.follow!;
		const now = clock.now();
		const retryAt = active.planner.nextRetryAt;
		const windowFull = active.inFlight.size >= this.windowSize(active);
		if (retryAt !== null && retryAt <= now && !windowFull) return;
		const due = feed.dueAt();
		// With the window full nothing goes out before a batch lands, whatever else happens.
		const waitMs = windowFull
			? this.options.signTimeoutMs
			: Math.min(
					FOLLOW_POLL_MS,
					due === null ? Infinity : due - now,
					retryAt === null ? Infinity : retryAt - now,
				);
		await Promise.race([...active.inFlight, active.wake.wait(clock, waitMs)]);
	}

	/**
	 * Whether the keyring a batch found gone is back: available again on this node's registry, or
	 * a while since (this node may not have seen it go: a batch then finds out). Otherwise waits a
	 * little first.
	 */
	private async keyringBack(active: ActiveRun): Promise<boolean> {
		const { clock, logger } = this.context;
		const since = active.keyringLostAt ?? clock.now();
		const available = this.deps.signers.keyringAvailable();
		if (available || clock.now() - since >= KEYRING_RECHECK_MS) {
			if (available)
				logger.info(
					`A keyring answers again after ${clock.now() - since} ms: run ${active.run.runId} goes on`,
				);
			active.keyringLostAt = null;
			return true;
		}
		await clock.sleep(KEYRING_POLL_MS);
		return false;
	}

	/** The signer nodes batches may go to: those available, less the ones this run stopped trusting. */
	private signersFor(active: ActiveRun): string[] {
		const available = this.deps.signers.available();
		return active.distrusted.size
			? available.filter((node) => !active.distrusted.has(node))
			: available;
	}

	private windowSize(active: ActiveRun): number {
		if (this.options.window > 0) return this.options.window;
		// Enough batches to keep every signer node busy while others wait on storage.
		return Math.max(6, 4 * this.signersFor(active).length);
	}

	/**
	 * The signer node with the fewest batches in flight. A node that died keeps only its share
	 * of the window until its heartbeats are missed, instead of collecting every batch
	 * round-robin would send it meanwhile (the whole window, and a stalled run).
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

	private async runBatch(active: ActiveRun, planned: PlannedBatch): Promise<void> {
		const { run } = active;
		const { store } = this.deps;
		const { clock } = this.context;
		const batchId = `${run.runId}-b${String(++active.batchCount).padStart(6, "0")}`;
		const recordIds = planned.records.map((record) => record.id);
		const signer = this.pickSigner(active);
		const batch: BatchDoc = {
			_id: batchId,
			batchId,
			runId: run.runId,
			keyId: null,
			leaseId: null,
			recordIds,
			attempt: planned.attempt,
			status: "pending",
			startedAt: new Date(clock.now()).toISOString(),
			finishedAt: null,
			signer: signer ?? null,
			error: null,
			short: planned.short,
		};
		// Recorded before dispatch, whatever it takes: after a crash the store knows every batch that may have run.
		await whenAvailable(this.context, "the batcher's store", () => store.insertBatch(batch));
		const flight = this.deps.flights.takeOff(active, batchId, signer);
		let result: SignBatchResult | null = null;
		let error = "";
		let unreachable: "keyring" | "records" | null = null;
		try {
			result = await this.deps.signers.signBatch(
				{ batchId, runId: run.runId, records: planned.records },
				{
					nodeID: signer,
					timeoutMs: this.options.signTimeoutMs,
					signal: flight.abort.signal,
				},
			);
		} catch (err) {
			error = (err as Error).message;
			unreachable = unreachableService(err);
		} finally {
			this.deps.flights.land(active, flight);
		}
		if (result) {
			const counted = await this.countFromStore(
				active,
				batch,
				result,
				flight.sentAt,
				planned.oldestArrivedAt ?? null,
			);
			if (counted === true) return;
			error = counted;
		}

		this.context.logger.warn(
			`Batch ${batchId} (attempt ${planned.attempt}) ended without ${result ? "a reply records bears out" : "a reply"}: ${error}`,
		);
		let unsigned: RecordPayload[];
		try {
			unsigned = await this.settleOrFail(active, batch, error, flight.sentAt);
		} catch (err) {
			// The node stops, or records refused to close it: the batch stays pending and is settled when the run resumes.
			this.context.logger.warn(
				`Batch ${batchId} stays pending until the run resumes: ${(err as Error).message}`,
			);
			return;
		}
		// Ended by the shutdown itself: not an attempt against the run; its records are paged again on resume.
		// Ended in a cancelled run: its records wait for the next run.
		if (this.context.halted() || active.cancelled || unsigned.length === 0) return;
		if (unreachable === "keyring") {
			// Not the batch's fault: it goes again at the same attempt, once a keyring answers.
			if (active.keyringLostAt === null) {
				active.keyringLostAt = clock.now();
				this.context.logger.warn(
					`No keyring answers: run ${active.run.runId} sends no batch until one does`,
				);
			}
			active.planner.requeue(planned, unsigned);
			return;
		}
		if (unreachable === "records") {
			// Nor this: it goes again at the same attempt, after a pause.
			if (active.pausedUntil <= clock.now())
				this.context.logger.warn(
					`A signer reached no records service (a node that has just started is announced within a second): run ${active.run.runId} sends no batch for ${RECORDS_PAUSE_MS} ms`,
				);
			active.pausedUntil = clock.now() + RECORDS_PAUSE_MS;
			active.planner.requeue(planned, unsigned);
			return;
		}
		if (!active.planner.failed(planned, unsigned, clock.now()))
			active.failure = `records of batch ${batchId} failed ${planned.attempt} times; last error: ${error}`;
		await clock.sleep(retryDelayMs(planned.attempt));
	}

	/**
	 * A signer answered: the batch is recorded signed when records holds a signature under it for
	 * each of its records, under one key and lease (true). Otherwise, why not; a signer that
	 * claimed more than records holds is trusted with no more batches of the run.
	 */
	private async countFromStore(
		active: ActiveRun,
		batch: BatchDoc,
		result: SignBatchResult,
		sentAt: number,
		oldestArrivedAt: number | null,
	): Promise<true | string> {
		const { batchId, recordIds } = batch;
		const { clock } = this.context;
		// The benchmark's run without the bus checks takes the word, to measure what this costs.
		const groups = busChecks.on
			? await whenAvailable(this.context, "records.signedUnder", () =>
					this.deps.records.signedUnder(batchId),
				)
			: [{ keyId: result.keyId, leaseId: result.leaseId, count: result.stored }];
		const stored = groups.reduce((sum, group) => sum + group.count, 0);
		const signer = batch.signer ?? result.signer;
		if (groups.length === 1 && stored === recordIds.length) {
			const [{ keyId, leaseId }] = groups;
			const finishedAt = new Date(clock.now()).toISOString();
			await whenAvailable(this.context, "the batcher's store", () =>
				this.deps.store.updateBatch(batchId, {
					status: "signed",
					keyId,
					leaseId,
					signer,
					stored,
					duplicates: 0,
					unsigned: 0,
					finishedAt,
				}),
			);
			this.deps.emit("batch.signed", {
				runId: active.run.runId,
				batchId,
				keyId,
				signer,
				size: recordIds.length,
				stored,
				duplicates: 0,
				latencyMs: clock.now() - sentAt,
				leaseWaitMs: result.leaseWaitMs,
				...(oldestArrivedAt === null ? {} : { lagMs: clock.now() - oldestArrivedAt }),
			});
			return true;
		}
		const why = `signer ${signer} answered ${result.stored} signature(s) stored; records holds ${stored} under the batch`;
		if (result.stored > stored && batch.signer) {
			active.distrusted.add(batch.signer);
			this.context.logger.error(
				`Batch ${batchId}: ${why}. Signer ${batch.signer} gets no more batches of run ${active.run.runId}`,
			);
		}
		return why;
	}

	/**
	 * settle(), tried again a few times a second apart when records refuses it while the node
	 * runs (records reads a batcher credential just rotated in at most once a second): a run
	 * must not end with one of its batches pending. Still refused, the run fails, naming why.
	 */
	private async settleOrFail(
		active: ActiveRun,
		batch: BatchDoc,
		reason: string,
		startedAt?: number,
	): Promise<RecordPayload[]> {
		for (let attempt = 1; ; attempt++) {
			try {
				return await this.settle(active, batch, reason, startedAt);
			} catch (err) {
				if (this.context.halted()) throw err;
				if (attempt >= SETTLE_TRIES) {
					active.failure ??= `batch ${batch.batchId} could not be settled: ${(err as Error).message}`;
					throw err;
				}
				await this.context.clock.sleep(1_000);
			}
		}
	}

	/**
	 * Settles a batch that ended without its signer's reply (or with one records does not bear
	 * out) from what is stored: closes it at the records service (no signature lands under it
	 * afterwards), then records the key and lease of its signatures and whether all, some or none
	 * of its records are signed. Returns its records still unsigned.
	 */
	async settle(
		active: ActiveRun,
		batch: BatchDoc,
		reason: string,
		startedAt?: number,
	): Promise<RecordPayload[]> {
		const { batchId, recordIds } = batch;
		const { clock, logger } = this.context;
		const closed = await whenAvailable(this.context, "records.closeBatch", () =>
			this.deps.records.closeBatch(batchId, recordIds),
		);
		const stored = closed.signed.reduce((sum, group) => sum + group.count, 0);
		// One group, unless rule 3 broke somewhere: the largest names the batch, the audit reports the rest.
		const [main] = [...closed.signed].sort((a, b) => b.count - a.count);
		if (closed.signed.length > 1)
			logger.error(
				`Batch ${batchId} has signatures under ${closed.signed.length} leases: ${closed.signed.map((g) => `${g.leaseId} (${g.keyId})`).join(", ")}`,
			);
		const unsigned = closed.unsigned.length;
		const status = unsigned === 0 ? "signed" : stored > 0 ? "partial" : "failed";
		const finishedAt = new Date(clock.now()).toISOString();
		const signer = stored > 0 ? (batch.signer ?? null) : null;
		await whenAvailable(this.context, "the batcher's store", () =>
			this.deps.store.updateBatch(batchId, {
				status,
				keyId: main?.keyId ?? null,
				leaseId: main?.leaseId ?? null,
				signer,
				stored,
				duplicates: recordIds.length - stored - unsigned,
				unsigned,
				finishedAt,
				error: reason,
			}),
		);
		const { runId } = active.run;
		if (status === "signed" && main) {
			logger.info(
				`Batch ${batchId}: its reply was lost, but all its records are signed (${stored} under ${main.keyId}, lease ${main.leaseId})`,
			);
			this.deps.emit("batch.signed", {
				runId,
				batchId,
				keyId: main.keyId,
				signer: signer ?? "",
				size: recordIds.length,
				stored,
				duplicates: recordIds.length - stored,
				latencyMs: startedAt === undefined ? 0 : clock.now() - startedAt,
				leaseWaitMs: null,
			});
		} else {
			if (status === "partial")
				logger.warn(
					`Batch ${batchId} is partly signed: ${stored} under ${main!.keyId}, ${unsigned} records go in a new batch`,
				);
			this.deps.emit("batch.failed", {
				runId,
				batchId,
				size: recordIds.length,
				error: reason,
				stored,
			});
		}
		return closed.unsigned;
	}
}
