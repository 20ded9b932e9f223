/**
 * A log as its owner's service runs it (records the signature log, the keyring the lease log):
 * the key loaded (or made), checkpoints every second while entries arrive and at the end of
 * every run (docs/design.md §8.4), the verifier key told in the log, and what the gateway asks.
 */
import type { Context } from "moleculer";
import { logConsistencyParams, type LogConsistencyParams, type LogName } from "../contract";
import type { TransparencyLog } from "./log";
import { LogReads } from "./log-reads";
import { loadLogKey, type LogKeySettings } from "./log-key";
import { CheckpointPublisher } from "./publisher";

/** How often a growing log is checkpointed. */
export const CHECKPOINT_EVERY_MS = 1_000;

interface ServiceLogger {
	info(line: string): void;
	warn(line: string): void;
}

export class ServiceLog {
	/** Its checkpoints and proofs, for the gateway. */
	readonly reads: LogReads;

	private constructor(
		readonly publisher: CheckpointPublisher,
		log: TransparencyLog,
		name: string,
		private readonly logger: ServiceLogger,
	) {
		this.reads = new LogReads(log, publisher, name);
	}

	/** Loads the log's key and starts its checkpoints. */
	static start(
		log: TransparencyLog,
		settings: {
			/** The log's name at the gateway. */
			name: LogName;
			key: LogKeySettings;
			/** How often it is checkpointed while it grows: CHECKPOINT_EVERY_MS but in tests. */
			everyMs: number;
		},
		logger: ServiceLogger,
	): ServiceLog {
		const { name, key: keySettings } = settings;
		const signer = loadLogKey(keySettings, (line) => logger.info(line));
		const publisher = new CheckpointPublisher(log, signer, {
			everyMs: settings.everyMs,
			warn: (line) => logger.warn(line),
		});
		publisher.start();
		logger.info(
			`Log ${signer.name} publishes checkpoints; its verifier key: ${publisher.verifierKey}`,
		);
		return new ServiceLog(publisher, log, name, logger);
	}

	/** A checkpoint of everything logged so far (a run ended); a failure is told, the timer tries again. */
	checkpointNow(): Promise<void> {
		return this.publisher.publish().then(
			() => undefined,
			(err: unknown) =>
				this.logger.warn(`Could not publish a checkpoint: ${(err as Error).message}`),
		);
	}

	/** Stops the timer after a last checkpoint; before the store closes. */
	async stop(): Promise<void> {
		await this.publisher.stop();
	}
}

/** What a log's owner answers the gateway about its log, the same in records and the keyring. */
export function logActions() {
	return {
		/** The log's verifier key and latest checkpoint (docs/design.md §8.4). */
		logCheckpoint: {
			handler(this: { tlog: ServiceLog }) {
				return this.tlog.reads.checkpoint();
			},
		},
		/** That the log of `from` leaves is a prefix of the one of `to`. */
		logConsistency: {
			params: logConsistencyParams,
			handler(this: { tlog: ServiceLog }, ctx: Context<LogConsistencyParams>) {
				return this.tlog.reads.consistency(ctx.params.from, ctx.params.to);
			},
		},
	};
}
