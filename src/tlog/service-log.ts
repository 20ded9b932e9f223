/**
 * A log's publisher as its owner's service runs it: the key loaded (or made), checkpoints every
 * second while entries arrive (docs/design.md §8.4), the verifier key told in the log.
 */
import type { TransparencyLog } from "./log";
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
