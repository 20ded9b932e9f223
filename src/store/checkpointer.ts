/**
 * One checkpointer thread per process for its embedded stores (src/store/checkpoint.worker.ts):
 * the owners' connections turn SQLite's automatic checkpoint off, and this thread copies the
 * write-ahead log into the database files every half second instead. A store that closes
 * checkpoints itself fully, so its file alone holds everything.
 */
import path from "node:path";
import { Worker } from "node:worker_threads";
import { sourceWorkerExecArgv } from "../worker-threads";
import type { CheckpointMessage } from "./checkpoint.worker";

const EVERY_MS = 500;
/** A log past this size is started over (src/store/checkpoint.worker.ts): it stays about this size on disk. */
export const WAL_RESTART_BYTES = 64 * 1024 * 1024;

let worker: Worker | null = null;
const files = new Set<string>();

function send(message: CheckpointMessage): void {
	worker?.postMessage(message);
}

/** Starts checkpointing `file` in the background (the thread starts with the first file). */
export function checkpointInBackground(file: string): void {
	if (!worker) {
		// Under jest the sources are TypeScript; Node 22 strips the worker's types itself.
		const filename = path.join(__dirname, `checkpoint.worker${path.extname(__filename)}`);
		worker = new Worker(filename, {
			resourceLimits: { maxOldGenerationSizeMb: 16 },
			execArgv: sourceWorkerExecArgv(filename),
		});
		worker.unref();
		worker.on("error", () => {
			// The owners keep working; their logs just grow until the next open checkpoints them.
			worker = null;
		});
		send({ every: EVERY_MS, restartAbove: WAL_RESTART_BYTES });
	}
	files.add(file);
	send({ add: file });
}

/** Stops checkpointing `file`; the thread ends with the last one. */
export async function stopCheckpointing(file: string): Promise<void> {
	if (!files.delete(file)) return;
	send({ remove: file });
	if (files.size === 0 && worker) {
		const ending = worker;
		worker = null;
		await ending.terminate();
	}
}
