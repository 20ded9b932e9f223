/**
 * One run while it is active: its stored document, its planner, its batches in flight (with
 * their signers), and how it is to end. The dispatcher, the flight watcher and the report
 * share it; the batcher holds at most one.
 */
import { Errors } from "moleculer";
import type { Clock } from "../clock";
import { DomainError } from "../errors";
import type { RunDoc } from "../contract";
import type { FollowFeed } from "./follow-feed";
import type { BatchPlanner } from "./planner";
import type { BatcherLogger } from "./ports";

/** A batch sent to a signer whose reply has not come yet. */
export interface Flight {
	batchId: string;
	signer: string | undefined;
	sentAt: number;
	probedAt: number;
	abort: AbortController;
}

export interface ActiveRun {
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
	/** Since when (ms) a batch failed for want of a keyring: no new batch goes out until one answers. */
	keyringLostAt: number | null;
	/**
	 * Until when (ms) no batch goes out because a signer reached no records service: a node that
	 * has just started is announced to the others up to a second late. 0 when not paused.
	 */
	pausedUntil: number;
	/** When this process resumed the run (ms), or null for a run it started. */
	resumedAt: number | null;
	/** A follow run's records waiting in arrival order (docs/design.md §7.7); null for a run over the store as it is. */
	follow: FollowFeed | null;
	/**
	 * A run over the store as it is: the last arrival (`seq`) when it started or resumed. It is
	 * done once every record up to it is signed, whatever arrives meanwhile (docs/design.md §7.5).
	 */
	untilSeq: number;
	/** Wakes a follow run waiting for records: some arrived, or it was cancelled. */
	wake: Wake;
	done: Promise<void>;
}

/** A follow run's wait for records: over when `notify` is called, or after the wait's time. */
export class Wake {
	private waiting: (() => void) | null = null;
	private cancelTimer: () => void = () => undefined;
	/** A notice that came while nobody waited: the next wait ends at once (the loop looks again). */
	private noticed = false;

	notify(): void {
		const resolve = this.waiting;
		this.waiting = null;
		if (resolve) resolve();
		else this.noticed = true;
	}

	/** Resolves at `notify` (or at once, after an unheard one), or after `ms` on `clock`. */
	wait(clock: Clock, ms: number): Promise<void> {
		if (this.noticed) {
			this.noticed = false;
			return Promise.resolve();
		}
		this.cancelTimer();
		return new Promise<void>((resolve) => {
			this.cancelTimer = clock.after(Math.max(0, ms), () => this.notify());
			this.waiting = () => {
				this.cancelTimer();
				resolve();
			};
		});
	}
}

/** What the parts of a run share: the clock, the log, and whether the node is stopping. */
export interface RunContext {
	clock: Clock;
	logger: BatcherLogger;
	/** True once the batcher or its node is stopping. */
	halted(): boolean;
}

/**
 * Runs `work` (a store write, a page from the records service) until it answers: an outage
 * pauses dispatch instead of failing the run. A client error (a bug, bad input) is not an
 * outage and is thrown at once, as is anything once the node stops.
 */
export async function whenAvailable<T>(
	context: RunContext,
	what: string,
	work: () => Promise<T>,
): Promise<T> {
	for (let attempt = 0; ; attempt++) {
		try {
			const result = await work();
			if (attempt > 0)
				context.logger.info(
					`${what} answers again after ${attempt} tries: dispatch goes on`,
				);
			return result;
		} catch (err) {
			if (
				context.halted() ||
				err instanceof Errors.MoleculerClientError ||
				(err instanceof DomainError && !err.retryable)
			)
				throw err;
			if (attempt === 0)
				context.logger.warn(
					`${what} failed (${(err as Error).message}): dispatch pauses and tries again until it answers`,
				);
			await context.clock.sleep(Math.min(5_000, 100 * 2 ** attempt));
		}
	}
}
