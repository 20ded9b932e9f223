/**
 * Decides what the batcher dispatches next for one run: fresh pages of unsigned ids in
 * ascending order, then the still-unsigned records of failed batches as new batches.
 * No broker in here; the service feeds it pages and outcomes.
 */
import type { BatchShort, RecordPayload } from "../contract";

export interface PlannedBatch {
	/** Its records with their payloads, ascending ids (arrival order in a follow run). */
	records: RecordPayload[];
	attempt: number;
	/** Why it holds fewer records than the run's batch size; null when it is full (docs/design.md §7.7). */
	short: BatchShort | null;
	/** A follow run's batch: when its oldest record was submitted (ms), for its signing lag. */
	oldestArrivedAt?: number | null;
	/** A retry: not sent before this time (ms on the run's clock), its backoff. */
	notBefore?: number;
}

export class BatchPlanner {
	private cursor: string | undefined;
	private exhausted = false;
	private readonly retries: PlannedBatch[] = [];

	constructor(
		readonly batchSize: number,
		readonly maxAttempts: number,
	) {}

	/** True while fresh pages may remain. */
	get paging(): boolean {
		return !this.exhausted;
	}

	get pendingRetries(): number {
		return this.retries.length;
	}

	/**
	 * A retry whose backoff is over comes first, so a failed batch's records are not left to the
	 * end; one still backing off waits, whatever else is sent meanwhile.
	 */
	nextRetry(now: number): PlannedBatch | undefined {
		const due = this.retries.findIndex((retry) => (retry.notBefore ?? 0) <= now);
		return due < 0 ? undefined : this.retries.splice(due, 1)[0];
	}

	/** When the first waiting retry's backoff ends (ms), or null when none waits. */
	get nextRetryAt(): number | null {
		let first: number | null = null;
		for (const retry of this.retries)
			if (first === null || (retry.notBefore ?? 0) < first) first = retry.notBefore ?? 0;
		return first;
	}

	/** Records the page read after the cursor; an empty page ends the fresh pages. */
	acceptPage(records: RecordPayload[]): PlannedBatch | undefined {
		if (records.length === 0) {
			this.exhausted = true;
			return undefined;
		}
		this.cursor = records[records.length - 1].id;
		// A page cut short is the end of the unsigned records (of this pass).
		return { records, attempt: 1, short: records.length < this.batchSize ? "last" : null };
	}

	get after(): string | undefined {
		return this.cursor;
	}

	/**
	 * A batch failed at `now`: its records that are still unsigned go again, split to the batch
	 * size, with a new batch id, once their backoff is over (retryDelayMs). Returns false when
	 * they have failed too often.
	 */
	failed(batch: PlannedBatch, stillUnsigned: RecordPayload[], now: number): boolean {
		if (stillUnsigned.length === 0) return true;
		if (batch.attempt >= this.maxAttempts) return false;
		this.retry(stillUnsigned, batch.attempt + 1, now + retryDelayMs(batch.attempt));
		return true;
	}

	private retry(records: RecordPayload[], attempt: number, notBefore: number): void {
		for (let i = 0; i < records.length; i += this.batchSize) {
			const slice = records.slice(i, i + this.batchSize);
			this.retries.push({
				records: slice,
				attempt,
				short: slice.length < this.batchSize ? "retry" : null,
				notBefore,
			});
		}
	}

	/**
	 * A batch failed for want of a keyring, not through its own fault: its records that are still
	 * unsigned go again at the same attempt (a keyring's absence uses up no attempts).
	 */
	requeue(batch: PlannedBatch, stillUnsigned: RecordPayload[]): void {
		// No backoff of its own: dispatch waits for a keyring before anything goes out.
		this.retry(stillUnsigned, batch.attempt, 0);
	}

	/** Start paging again from the first id (a final sweep for anything still unsigned). */
	rewind(): void {
		this.cursor = undefined;
		this.exhausted = false;
	}
}

/**
 * Exponential backoff before the retry of a batch that failed at `attempt`: 50, 50, 100, 200 ms
 * ... up to 5 s, about 11 s from the first try to the tenth. A failure that lasts a moment (a
 * signer that does not yet see a records node just started: Moleculer announces a node's
 * services up to a second late) then uses up a few attempts, not all of them.
 */
export function retryDelayMs(attempt: number): number {
	return Math.min(5_000, 50 * 2 ** Math.max(0, attempt - 2));
}
