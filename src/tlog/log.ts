/**
 * What a transparency log offers its owner's service, whatever stores it (docs/design.md §8.4):
 * its size and roots, proofs from its stored subtree hashes, and the checkpoints it published.
 */

/** A checkpoint as the log keeps it: the signed note (src/tlog/checkpoint.ts) and when it was made. */
export interface StoredCheckpoint {
	size: number;
	note: string;
	publishedAt: string;
}

export interface TransparencyLog {
	/** Resolves once every entry committed so far is in the tree (one hashed elsewhere lags its rows). */
	settle?(): Promise<void>;
	size(): Promise<number>;
	/** The root of the tree of the first `size` leaves. */
	root(size: number): Promise<Buffer>;
	inclusionProof(index: number, size: number): Promise<Buffer[]>;
	consistencyProof(older: number, newer: number): Promise<Buffer[]>;
	latestCheckpoint(): Promise<StoredCheckpoint | null>;
	/** The checkpoints of more than `after` leaves, by size, at most `limit`. */
	checkpoints(after: number, limit: number): Promise<StoredCheckpoint[]>;
	saveCheckpoint(checkpoint: StoredCheckpoint): Promise<void>;
}
