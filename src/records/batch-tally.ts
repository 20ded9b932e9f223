/**
 * What this records process stored under each recent batch, by key and lease: how
 * `records.signedUnder` answers the batcher without a query per batch. It counts only rows this
 * process inserted, so it never claims more than the store holds; a batch it has not seen (or
 * saw only in part, across a restart) is answered from the store, and a short count only sends
 * the batch to be settled from the store. The records service runs as a single instance.
 */
import type { ClosedBatch } from "../contract";

type Groups = ClosedBatch["signed"];

/** Batches remembered: far more than any window of batches in flight. */
const REMEMBERED = 20_000;

export class BatchTally {
	private readonly batches = new Map<string, Groups>();

	/** `stored` new signatures landed under the batch, with its key and lease. */
	add(batchId: string, keyId: string, leaseId: string, stored: number): void {
		if (stored <= 0) return;
		let groups = this.batches.get(batchId);
		if (!groups) {
			if (this.batches.size >= REMEMBERED)
				this.batches.delete(this.batches.keys().next().value!);
			this.batches.set(batchId, (groups = []));
		}
		const group = groups.find((g) => g.keyId === keyId && g.leaseId === leaseId);
		if (group) group.count += stored;
		else groups.push({ keyId, leaseId, count: stored });
	}

	/** What this process stored under the batch, or null when it does not know the batch. */
	get(batchId: string): Groups | null {
		const groups = this.batches.get(batchId);
		return groups ? groups.map((g) => ({ ...g })) : null;
	}
}
