/**
 * What a log's owner answers about it (docs/design.md §8.4, served by the gateway, docs/api.md):
 * its verifier key and latest checkpoint, consistency proofs between two tree sizes, and a
 * leaf's inclusion proof against a checkpoint. Proofs are read from the stored subtree hashes
 * (src/tlog/sqlite-log.ts), never by rehashing the log. Sizes go no further than the latest
 * checkpoint: a proof is worth something only against a root someone signed.
 */
import type { ConsistencyProofView, LogCheckpoint, LogCheckpointDoc } from "../contract";
import { DomainError } from "../errors";
import type { TransparencyLog } from "./log";
import type { CheckpointPublisher } from "./publisher";

const base64 = (hashes: Buffer[]) => hashes.map((hash) => hash.toString("base64"));

/** A leaf's proof, before its owner names the entry. */
export interface LeafInclusion {
	origin: string;
	logIndex: number;
	treeSize: number;
	proof: string[];
	checkpoint: string | null;
}

export class LogReads {
	constructor(
		private readonly log: TransparencyLog,
		private readonly publisher: CheckpointPublisher,
		/** The log's name in messages (`signatures`, `leases`). */
		private readonly name: string,
	) {}

	async checkpoint(): Promise<LogCheckpoint> {
		const { log, publisher } = this;
		return {
			origin: publisher.origin,
			verifierKey: publisher.verifierKey,
			checkpoint: await log.latestCheckpoint(),
		};
	}

	/** The latest checkpoint; a log that has none yet has nothing to prove against. */
	private async latest(): Promise<LogCheckpointDoc> {
		const latest = await this.log.latestCheckpoint();
		if (!latest)
			throw new DomainError(
				"NO_CHECKPOINT",
				`The ${this.name} log has no checkpoint yet; one is published within a second of its first entry`,
				{ log: this.name },
			);
		return latest;
	}

	async consistency(from: number, to?: number): Promise<ConsistencyProofView> {
		const latest = await this.latest();
		const newer = checkpointed("to", to, latest);
		if (from > newer) throw treeSizeError("from", from, `at most to (${newer})`);
		return {
			origin: this.publisher.origin,
			from,
			to: newer,
			proof: base64(await this.log.consistencyProof(from, newer)),
		};
	}

	/** The proof of leaf `logIndex` in the tree of `size` leaves (default: the latest checkpoint's). */
	async inclusion(logIndex: number, size?: number): Promise<LeafInclusion> {
		const latest = await this.latest();
		if (size === undefined && logIndex >= latest.size)
			throw new DomainError(
				"NOT_YET_CHECKPOINTED",
				`Leaf ${logIndex} of the ${this.name} log is not in its latest checkpoint (${latest.size} leaves) yet; retry in a second`,
				{ log: this.name, logIndex, checkpointSize: latest.size },
			);
		const treeSize = checkpointed("size", size, latest);
		if (logIndex >= treeSize)
			throw treeSizeError("size", treeSize, `more than the leaf's index ${logIndex}`);
		const { log, publisher } = this;
		const checkpoint =
			treeSize === latest.size ? latest : (await log.checkpoints(treeSize - 1, 1))[0];
		return {
			origin: publisher.origin,
			logIndex,
			treeSize,
			proof: base64(await log.inclusionProof(logIndex, treeSize)),
			checkpoint: checkpoint?.size === treeSize ? checkpoint.note : null,
		};
	}
}

/** A tree size asked for (default: the latest checkpoint's), no larger than the latest checkpoint's. */
function checkpointed(field: string, size: number | undefined, latest: LogCheckpointDoc): number {
	if (size !== undefined && size > latest.size)
		throw treeSizeError(field, size, `at most ${latest.size}, the latest checkpoint's size`);
	return size ?? latest.size;
}

function treeSizeError(field: string, value: number, rule: string): DomainError {
	return new DomainError("INVALID_TREE_SIZE", `${field} ${value} is out of range: ${rule}`, {
		field,
		value,
	});
}
