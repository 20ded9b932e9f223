/**
 * Beginning a write transaction on an embedded store (src/store/sqlite.ts), for every writer of
 * one: the owners' transactions, the keyring's write groups, the import of an earlier store.
 */
import type { DatabaseSync } from "node:sqlite";
import { sleepSync } from "../sleep-sync";

/** How long, from its first try, a write transaction may wait to begin (the busy_timeout). */
const BEGIN_WAIT_MS = 5_000;

/**
 * `BEGIN IMMEDIATE`, tried again while SQLite answers SQLITE_BUSY sooner than the busy timeout.
 * SQLite waits out another writer for up to the busy timeout (BEGIN_WAIT_MS), yet it can also
 * answer busy without waiting that long: seeding 1M records failed so, in about one try of
 * five under a profiler, 66 ms into its wait (the other connection to the file is the
 * checkpointer thread's). Beginning has no effect until it succeeds, so it is safe to repeat,
 * and the whole wait stays within BEGIN_WAIT_MS.
 */
export function beginImmediate(db: DatabaseSync, waitMs = BEGIN_WAIT_MS): void {
	const started = performance.now();
	for (let pause = 1; ; pause = Math.min(2 * pause, 100)) {
		try {
			db.exec("BEGIN IMMEDIATE");
			return;
		} catch (err) {
			const busy = (err as { errcode?: number }).errcode === 5; // SQLITE_BUSY
			if (!busy || performance.now() - started + pause > waitMs) throw err;
		}
		sleepSync(pause);
	}
}
