/**
 * What a follow run dispatches next (docs/design.md §7.7): unsigned records in arrival order
 * (`records.unsignedArrivals`, after the last `seq` it read), held until `batchSize` of them
 * wait, or the oldest has waited `lingerMs`. A full batch has the run's size; a smaller one only
 * leaves because it lingered, and says so. No broker in here.
 */
import type { Arrival, BatchShort, RecordPayload } from "../contract";

export interface FollowBatch {
	/** `{ id, data }` only: what a signer signs. */
	records: RecordPayload[];
	attempt: 1;
	short: BatchShort | null;
	/** When its oldest record was submitted (ms); null for seeded records: what its signing lag is counted from. */
	oldestArrivedAt: number | null;
}

export class FollowFeed {
	/** The last arrival read: the next page starts after it. */
	private cursor = 0;
	private readonly waiting: Arrival[] = [];
	/** When each waiting record arrived (ms); a seeded record has waited since before the run. */
	private readonly arrivedAt: number[] = [];

	constructor(
		readonly batchSize: number,
		readonly lingerMs: number,
	) {}

	/** Records read and not yet dispatched. */
	get backlog(): number {
		return this.waiting.length;
	}

	/** How many more records a page may bring: never more than one batch waits in here. */
	get room(): number {
		return this.batchSize - this.waiting.length;
	}

	get after(): number {
		return this.cursor;
	}

	/** Takes a page read after `after`, in arrival order. */
	accept(page: Arrival[]): void {
		for (const arrival of page) {
			if (arrival.seq <= this.cursor) continue;
			this.cursor = arrival.seq;
			this.waiting.push(arrival);
			this.arrivedAt.push(
				arrival.submittedAt === null ? -Infinity : Date.parse(arrival.submittedAt),
			);
		}
	}

	/** A full batch when `batchSize` records wait; a smaller one when the oldest has waited `lingerMs` by `now`. */
	take(now: number): FollowBatch | undefined {
		if (this.waiting.length >= this.batchSize) return this.cut(this.batchSize, null);
		const due = this.dueAt();
		if (due !== null && now >= due) return this.cut(this.waiting.length, "lingered");
		return undefined;
	}

	/** When the oldest waiting record will have lingered (ms), or null when none waits. */
	dueAt(): number | null {
		return this.waiting.length ? this.arrivedAt[0] + this.lingerMs : null;
	}

	private cut(count: number, short: BatchShort | null): FollowBatch {
		const taken = this.waiting.splice(0, count);
		const [oldest] = this.arrivedAt.splice(0, count);
		return {
			records: taken.map(({ id, data }) => ({ id, data })),
			attempt: 1,
			short,
			oldestArrivedAt: Number.isFinite(oldest) ? oldest : null,
		};
	}
}
