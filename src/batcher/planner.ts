/**
 * Decides what the batcher dispatches next for one run: fresh pages of unsigned ids in
 * ascending order, then the still-unsigned records of failed batches as new batches.
 * No broker in here; the service feeds it pages and outcomes.
 */
import type { RecordPayload } from "../contract";

export interface PlannedBatch {
	/** Its records with their payloads, ascending ids. */
	records: RecordPayload[];
	attempt: number;
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

	/** A retry comes first, so a failed batch's records are not left to the end. */
	nextRetry(): PlannedBatch | undefined {
		return this.retries.shift();
	}

	/** Records the page read after the cursor; an empty page ends the fresh pages. */
	acceptPage(records: RecordPayload[]): PlannedBatch | undefined {
		if (records.length === 0) {
			this.exhausted = true;
			return undefined;
		}
		this.cursor = records[records.length - 1].id;
		return { records, attempt: 1 };
	}

	get after(): string | undefined {
		return this.cursor;
	}

	/**
	 * A batch failed: its records that are still unsigned go again, split to the batch
	 * size, with a new batch id. Returns false when they have failed too often.
	 */
	failed(batch: PlannedBatch, stillUnsigned: RecordPayload[]): boolean {
		if (stillUnsigned.length === 0) return true;
		if (batch.attempt >= this.maxAttempts) return false;
		for (let i = 0; i < stillUnsigned.length; i += this.batchSize)
			this.retries.push({
				records: stillUnsigned.slice(i, i + this.batchSize),
				attempt: batch.attempt + 1,
			});
		return true;
	}

	/**
	 * A batch failed for want of a keyring, not through its own fault: its records that are still
	 * unsigned go again at the same attempt (a keyring's absence uses up no attempts).
	 */
	requeue(batch: PlannedBatch, stillUnsigned: RecordPayload[]): void {
		for (let i = 0; i < stillUnsigned.length; i += this.batchSize)
			this.retries.push({
				records: stillUnsigned.slice(i, i + this.batchSize),
				attempt: batch.attempt,
			});
	}

	/** Start paging again from the first id (a final sweep for anything still unsigned). */
	rewind(): void {
		this.cursor = undefined;
		this.exhausted = false;
	}
}

/** Exponential backoff before a retry, so a missing signer does not spin the loop. */
export function retryDelayMs(attempt: number): number {
	return Math.min(5_000, 50 * 2 ** Math.max(0, attempt - 2));
}
