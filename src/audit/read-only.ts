/**
 * Attaching a store file read-only: `file:<path>?mode=ro` refuses every write, and the owner
 * may keep writing meanwhile (WAL). Erasable TypeScript, shared with the worker threads.
 */
import type { DatabaseSync } from "node:sqlite";

function sqliteUri(file: string): string {
	return `file:${file.replace(/[%?#]/g, (c) => `%${c.charCodeAt(0).toString(16)}`)}?mode=ro`;
}

export function attachReadOnly(sql: DatabaseSync, file: string, schema: string): void {
	sql.prepare(`ATTACH DATABASE ? AS ${schema}`).run(sqliteUri(file));
}

/** A writer checkpointing holds its file for a moment: wait rather than fail. */
export const BUSY_TIMEOUT_MS = 10_000;
