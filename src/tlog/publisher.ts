/**
 * Publishes a log's checkpoints (docs/design.md §8.4): every `everyMs` while entries arrive, and
 * on demand (the end of a run, the service's stop). A checkpoint is signed only for a larger
 * tree than the last one, and only after a consistency proof from the last one verifies
 * against it: published checkpoints never go back and each is consistent with the one before.
 */
import { parseCheckpointText, signCheckpoint, type Checkpoint } from "./checkpoint";
import type { StoredCheckpoint, TransparencyLog } from "./log";
import { verifyConsistency } from "./merkle";
import { verifierKeyString, type NoteSigner } from "./note";

export interface PublisherOptions {
	everyMs: number;
	/** Told why a checkpoint was refused (once per cause). */
	warn(line: string): void;
	now?: () => Date;
}

/** The checkpoint a stored note holds (whichever key signed it: only its text is needed here). */
export function checkpointOf(stored: StoredCheckpoint): Checkpoint {
	return parseCheckpointText(stored.note.slice(0, stored.note.lastIndexOf("\n\n") + 1));
}

export class CheckpointPublisher {
	private last: Checkpoint | null = null;
	private loaded = false;
	private timer: NodeJS.Timeout | null = null;
	private tail: Promise<unknown> = Promise.resolve();
	private refused: string | null = null;

	constructor(
		private readonly log: TransparencyLog,
		private readonly signer: NoteSigner,
		private readonly options: PublisherOptions,
	) {}

	/** The verifier key anyone checks this log's checkpoints with. */
	get verifierKey(): string {
		return verifierKeyString(this.signer);
	}

	get origin(): string {
		return this.signer.name;
	}

	start(): void {
		this.timer ??= setInterval(
			() => void this.publish().catch(() => undefined),
			this.options.everyMs,
		);
		this.timer.unref();
	}

	/** Stops the timer and publishes what was appended since the last checkpoint. */
	async stop(): Promise<StoredCheckpoint | null> {
		if (this.timer) clearInterval(this.timer);
		this.timer = null;
		return this.publish();
	}

	/** Signs and stores a checkpoint of the whole log if it grew; answers the latest one. One at a time. */
	publish(): Promise<StoredCheckpoint | null> {
		const run = this.tail.then(() => this.publishNow());
		this.tail = run.catch(() => undefined);
		return run;
	}

	private async publishNow(): Promise<StoredCheckpoint | null> {
		const latest = await this.log.latestCheckpoint();
		if (!this.loaded) {
			this.last = latest && checkpointOf(latest);
			this.loaded = true;
		}
		await this.log.settle?.();
		const size = await this.log.size();
		if (this.last && size <= this.last.size) {
			if (size < this.last.size)
				this.refuse(
					`the log holds ${size} entries, fewer than its last checkpoint's ${this.last.size}: no checkpoint is signed`,
				);
			return latest;
		}
		const root = await this.log.root(size);
		if (this.last && this.last.size > 0) {
			const proof = await this.log.consistencyProof(this.last.size, size);
			if (!verifyConsistency(this.last.size, size, proof, this.last.root, root)) {
				this.refuse(
					`the log at ${size} entries is not consistent with its last checkpoint (${this.last.size}): no checkpoint is signed`,
				);
				return latest;
			}
		}
		const checkpoint = { origin: this.signer.name, size, root };
		const stored: StoredCheckpoint = {
			size,
			note: signCheckpoint(checkpoint, this.signer),
			publishedAt: (this.options.now?.() ?? new Date()).toISOString(),
		};
		await this.log.saveCheckpoint(stored);
		this.last = checkpoint;
		this.refused = null;
		return stored;
	}

	private refuse(reason: string): void {
		if (this.refused !== reason) this.options.warn(`Log ${this.signer.name}: ${reason}`);
		this.refused = reason;
	}
}
