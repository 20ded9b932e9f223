/**
 * A log's publisher as its owner's service runs it: the key loaded (or made), checkpoints every
 * second while entries arrive (docs/design.md §8.4), the verifier key told in the log.
 */
import type { Context } from "moleculer";
import { logConsistencyParams, type LogConsistencyParams } from "../contract";
import type { TransparencyLog } from "./log";
import type { LogReads } from "./log-reads";
import { loadLogKey, type LogKeySettings } from "./log-key";
import { CheckpointPublisher } from "./publisher";

/** How often a growing log is checkpointed. */
export const CHECKPOINT_EVERY_MS = 1_000;

export function startPublisher(
	log: TransparencyLog | undefined,
	settings: LogKeySettings,
	logger: { info(line: string): void; warn(line: string): void },
): CheckpointPublisher | null {
	if (!log) {
		logger.warn(
			`No transparency log ${settings.name} on this store: no checkpoints are published`,
		);
		return null;
	}
	const signer = loadLogKey(settings, (line) => logger.info(line));
	const publisher = new CheckpointPublisher(log, signer, {
		everyMs: CHECKPOINT_EVERY_MS,
		warn: (line) => logger.warn(line),
	});
	publisher.start();
	logger.info(
		`Log ${signer.name} publishes checkpoints; its verifier key: ${publisher.verifierKey}`,
	);
	return publisher;
}

/** What a log's owner answers the gateway about its log, the same in records and the keyring. */
export function logActions() {
	return {
		/** The log's verifier key and latest checkpoint (docs/design.md §8.4). */
		logCheckpoint: {
			handler(this: { logReads: LogReads }) {
				return this.logReads.checkpoint();
			},
		},
		/** That the log of `from` leaves is a prefix of the one of `to`. */
		logConsistency: {
			params: logConsistencyParams,
			handler(this: { logReads: LogReads }, ctx: Context<LogConsistencyParams>) {
				return this.logReads.consistency(ctx.params.from, ctx.params.to);
			},
		},
	};
}
