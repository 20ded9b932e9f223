/**
 * A keyed sum of a log's (index, leaf hash) pairs, so the audit can tell that the signature rows
 * and the log's leaves are the same set without putting either in order (docs/design.md §9.2,
 * `signature-log`). Each pair is hashed with a key drawn for this audit alone,
 * SHA-256(key || index as 8 bytes big-endian || leaf hash), and the hashes are added lane by
 * lane (eight 32-bit lanes, each modulo 2^32). The audit's threads sum the rows of their ranges
 * as they verify them, and the main thread sums the leaves as it recomputes the tree: equal
 * counts and equal sums mean every row is the leaf at its index.
 *
 * The key is what makes the sum a proof. Unkeyed, whoever edits the store could search for altered
 * rows whose hashes add up to those they replace (a generalized birthday search, cheap against
 * an additive sum); keyed by a secret drawn after the store was written, each pair's hash is
 * unpredictable, and two different sets give equal sums with probability about 2^-240. A
 * difference is not located by the sum: the audit then compares rows and leaves one by one
 * (src/audit/check-logs.ts), which names each.
 *
 * Erasable TypeScript, imported with its `.ts` extension by the audit's threads.
 */
import crypto from "node:crypto";

export const SUM_KEY_BYTES = 32;
const LANES = 8;
const HASH_BYTES = 32;

/** What a thread hands back: plain data. */
export interface LeafSumData {
	count: number;
	lanes: number[];
	/** A row whose index is not a whole number (only an altered store has one). */
	irregular: boolean;
}

export class LeafSum {
	count = 0;
	irregular = false;
	private readonly lanes = new Uint32Array(LANES);
	/** key || index || leaf hash, rewritten for each pair (a thread hashes on one stack). */
	private readonly input = Buffer.alloc(SUM_KEY_BYTES + 8 + HASH_BYTES);

	constructor(key: Uint8Array) {
		if (key.length !== SUM_KEY_BYTES) throw new Error("a leaf sum's key is 32 bytes");
		this.input.set(key, 0);
	}

	/** Adds a pair: its leaf hash as 32 bytes, or as a 32-character latin1 string (src/tlog/merkle.ts). */
	add(index: number, leafHash: Uint8Array | string): void {
		if (!Number.isSafeInteger(index) || index < 0) {
			this.irregular = true;
			return;
		}
		const input = this.input;
		input.writeUInt32BE(Math.floor(index / 2 ** 32), SUM_KEY_BYTES);
		input.writeUInt32BE(index >>> 0, SUM_KEY_BYTES + 4);
		if (typeof leafHash === "string") input.write(leafHash, SUM_KEY_BYTES + 8, "latin1");
		else input.set(leafHash, SUM_KEY_BYTES + 8);
		// As a latin1 string: node:crypto answers one far faster than a Buffer (src/tlog/merkle.ts).
		const hash = crypto.hash("sha256", input, "binary");
		const lanes = this.lanes;
		for (let lane = 0, at = 0; lane < LANES; lane++, at += 4)
			lanes[lane] +=
				hash.charCodeAt(at) |
				(hash.charCodeAt(at + 1) << 8) |
				(hash.charCodeAt(at + 2) << 16) |
				(hash.charCodeAt(at + 3) << 24);
		this.count++;
	}

	/** Another thread's sum, added to this one. */
	merge(other: LeafSumData): void {
		for (let lane = 0; lane < LANES; lane++) this.lanes[lane] += other.lanes[lane];
		this.count += other.count;
		this.irregular ||= other.irregular;
	}

	data(): LeafSumData {
		return { count: this.count, lanes: Array.from(this.lanes), irregular: this.irregular };
	}

	/** The same pairs (with overwhelming probability) as `other`, and no irregular row. */
	equals(other: LeafSum): boolean {
		return (
			!this.irregular &&
			!other.irregular &&
			this.count === other.count &&
			this.lanes.every((lane, i) => lane === other.lanes[i])
		);
	}
}
