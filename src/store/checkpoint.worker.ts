/**
 * The embedded stores' checkpointer thread: copies each store's write-ahead log into its
 * database file (`PRAGMA wal_checkpoint(PASSIVE)`), with its own connections, so the owners'
 * writes on the event loop never wait for that copy or its fsync. Erasable TypeScript, loaded
 * from the sources under jest and from dist/ otherwise.
 */
import { DatabaseSync } from "node:sqlite";
import { parentPort } from "node:worker_threads";

export type CheckpointMessage = { add: string } | { remove: string } | { every: number };

const connections = new Map<string, DatabaseSync>();
let timer: NodeJS.Timeout | null = null;

function checkpointAll(): void {
	for (const [file, db] of connections) {
		try {
			db.exec("PRAGMA wal_checkpoint(PASSIVE)");
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
