/**
 * The transparency logs' tables on an audit connection (docs/design.md §8.4): the store's own, or
 * an import's copy of an export's log files (src/audit/import.ts), read the same way.
 */
import type { DatabaseSync } from "node:sqlite";
import type { LogName } from "../contract";
import { HASH_BYTES } from "../tlog/merkle";
import { TILE_LEAVES } from "../tlog/tree-builder";

/** Each log's tables' prefix on the audit connection. */
export const LOG_TABLES: Record<LogName, string> = {
	signatures: "rec.signature_log",
	leases: "kr.lease_log",
};

/** Whether the source holds `log` (a store written before the logs, or MongoDB, does not). */
export function holdsLog(sql: DatabaseSync, log: LogName): boolean {
	const [schema, prefix] = LOG_TABLES[log].split(".");
	return (
		sql
			.prepare(`SELECT 1 FROM ${schema}.sqlite_master WHERE type = 'table' AND name = ?`)
			.get(`${prefix}_tiles`) !== undefined
	);
}

/** The log's tiles in order, as stored; a tile out of place or of a bad length ends the log there. */
function* tiles(
	sql: DatabaseSync,
	log: LogName,
	onBadTile: (tile: number) => void,
): Generator<Buffer> {
	let index = 0;
	for (const row of sql
		.prepare(`SELECT tile, hashes FROM ${LOG_TABLES[log]}_tiles ORDER BY tile`)
		.iterate()) {
		const blob = Buffer.from(row.hashes as Uint8Array);
		if (Number(row.tile) * TILE_LEAVES !== index || blob.length % HASH_BYTES !== 0) {
			onBadTile(Number(row.tile));
			return;
		}
		index += blob.length / HASH_BYTES;
		yield blob;
	}
}

/** The log's leaf hashes in order, from its tiles; a tile out of place or of a bad length ends the log there. */
export function* leafHashes(
	sql: DatabaseSync,
	log: LogName,
	onBadTile: (tile: number) => void = () => undefined,
): Generator<Buffer> {
	for (const blob of tiles(sql, log, onBadTile))
		for (let at = 0; at < blob.length; at += HASH_BYTES)
			yield blob.subarray(at, at + HASH_BYTES);
}

/** The same, each as a 32-character latin1 string (src/tlog/merkle.ts): what the tree's pass hashes fastest. */
export function* leafHashTexts(
	sql: DatabaseSync,
	log: LogName,
	onBadTile: (tile: number) => void = () => undefined,
): Generator<string> {
	for (const blob of tiles(sql, log, onBadTile)) {
		const text = blob.toString("latin1");
		for (let at = 0; at < text.length; at += HASH_BYTES) yield text.slice(at, at + HASH_BYTES);
	}
}

/** The leaves the log's last tile ends at: its size, if its tiles are sound (the tree's pass finds out). */
export function storedLeafCount(sql: DatabaseSync, log: LogName): number {
	const last = sql
		.prepare(
			`SELECT tile, length(hashes) AS bytes FROM ${LOG_TABLES[log]}_tiles ORDER BY tile DESC LIMIT 1`,
		)
		.get();
	return last ? Number(last.tile) * TILE_LEAVES + Math.floor(Number(last.bytes) / HASH_BYTES) : 0;
}

/** The checkpoints the source holds for `log`, by size. */
export function storedCheckpoints(
	sql: DatabaseSync,
	log: LogName,
): Array<{ size: number; note: string; publishedAt: string }> {
	return sql
		.prepare(`SELECT size, note, publishedAt FROM ${LOG_TABLES[log]}_checkpoints ORDER BY size`)
		.all()
		.map((row) => ({
			size: Number(row.size),
			note: String(row.note),
			publishedAt: String(row.publishedAt),
		}));
}
