/**
 * The embedded stores' checkpointer thread: copies each store's write-ahead log into its
 * database file (`PRAGMA wal_checkpoint(PASSIVE)`), with its own connections, so the owners'
 * writes on the event loop never wait for that copy or its fsync. Erasable TypeScript, loaded
 * from the sources under jest and from dist/ otherwise.
 *
 * A passive checkpoint never starts the log over while an owner writes on: SQLite restarts a
 * log only when a writer finds it wholly copied, and under a steady run a commit always lands
 * while the copy is under way, so the log grew with the run (200 MB at 300,000 records, some
 * 6.7 GB at 10 million). Once a log is past `restartAbove` bytes, the thread copies it passively
 * until little is left, then asks for a RESTART checkpoint: that copies the rest and has the
 * next commit write the log from its start, so it stops growing. A RESTART holds the owner's
 * next commit back while it copies what is left (a few milliseconds) and gives up at once,
 * until the next tick, when a reader or writer is busy: it never waits on them (so an owner
 * whose commits leave no millisecond between them keeps its log growing until they do).
 */
import fs from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { parentPort } from "node:worker_threads";

export type CheckpointMessage =
	{ add: string } | { remove: string } | { every: number; restartAbove: number };

const connections = new Map<string, DatabaseSync>();
let timer: NodeJS.Timeout | null = null;
let restartAbove = Infinity;

/** Frames left uncopied below which a RESTART checkpoint is asked for (4 MB of 4 KB pages). */
const RESTART_WHEN_LEFT = 1_000;
/** How long the RESTART may wait on a reader or writer: hardly, it is tried again next tick. */
const RESTART_WAIT_MS = 5;

interface CheckpointResult {
	busy: number;
	log: number;
	checkpointed: number;
}

function checkpoint(db: DatabaseSync, mode: "PASSIVE" | "RESTART"): CheckpointResult {
	return db.prepare(`PRAGMA wal_checkpoint(${mode})`).get() as unknown as CheckpointResult;
}

function walBytes(file: string): number {
	try {
		return fs.statSync(`${file}-wal`).size;
	} catch {
		return 0;
	}
}

function checkpointAll(): void {
	for (const [file, db] of connections) {
		try {
			let result = checkpoint(db, "PASSIVE");
			if (walBytes(file) <= restartAbove) continue;
			for (let i = 0; i < 4 && result.log - result.checkpointed > RESTART_WHEN_LEFT; i++)
				result = checkpoint(db, "PASSIVE");
			if (result.log - result.checkpointed > RESTART_WHEN_LEFT) continue;
			db.exec(`PRAGMA busy_timeout = ${RESTART_WAIT_MS}`);
			try {
				checkpoint(db, "RESTART");
			} finally {
				db.exec("PRAGMA busy_timeout = 1000");
			}
		} catch (err) {
			// A busy or vanished file is tried again at the next tick; the owner loses nothing meanwhile.
			if (!/busy|locked/i.test((err as Error).message))
				parentPort?.postMessage({ file, error: (err as Error).message });
		}
	}
}

parentPort?.on("message", (message: CheckpointMessage) => {
	if ("every" in message) {
		if (timer) clearInterval(timer);
		restartAbove = message.restartAbove;
		timer = setInterval(checkpointAll, message.every);
	} else if ("add" in message) {
		if (connections.has(message.add)) return;
		const db = new DatabaseSync(message.add);
		db.exec("PRAGMA busy_timeout = 1000");
		connections.set(message.add, db);
	} else {
		const db = connections.get(message.remove);
		connections.delete(message.remove);
		db?.close();
	}
});
