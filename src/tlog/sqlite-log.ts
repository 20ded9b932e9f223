/**
 * An append-only RFC 6962 log in an owner's SQLite file (docs/design.md §8.4), in tables named
 * after it:
 *
 * - `<log>_tiles` (tile, hashes): the leaf hashes in log order, TILE_LEAVES to a row (the last
 *   row holds fewer until it fills), so an append writes one row per 16 leaves, not one a leaf.
 * - `<log>_nodes` (level, idx, hash): the hash of every complete subtree whose level is a
 *   multiple of STORED_LEVEL_STEP. A subtree between two stored levels is hashed from at most
 *   2^(STEP-1) stored ones below it, so any proof reads a few dozen short ranges, never the log.
 * - `<log>_checkpoints` (size, note, publishedAt): the signed checkpoints, by size.
 * - `<log>_entries` (idx, entry), only for an owner that keeps no leaf index in its own rows
 *   (the lease log): each leaf's entry name, in log order. Not indexed by name: the owner logs
 *   each entry once by construction (the lease log a grant with its row's insert, an end with the
 *   update that ends it), the audit names a name logged twice, and a unique index on random
 *   names cost as much as the lease row itself. The signature log's index is a column of the
 *   signature row itself (`signatures.logIndex`).
 *
 * The right edge of the tree (the complete subtrees that make up the whole log) and the last
 * tile's leaf hashes are kept in memory, so an append hashes each new leaf and the subtrees it
 * completes and writes the tiles and the stored-level subtrees in one statement each, inside
 * the caller's write transaction. This process is the file's only writer (docs/design.md §4.1).
 */
import type { DatabaseSync } from "node:sqlite";
import { Statements, transaction } from "../store/sqlite";
import { completeSubtrees, HASH_BYTES, type NodeId } from "./merkle";
import type { StoredCheckpoint, TransparencyLog } from "./log";
import {
	STORED_LEVEL_STEP,
	TILE_BYTES,
	TILE_LEAVES,
	TreeBuilder,
	TreeProofs,
	foldLayer,
	hashesOfTiles,
	storedBelow,
	type TreeState,
	type TreeUpdate,
} from "./tree-builder";

export { STORED_LEVEL_STEP, TILE_LEAVES };

export interface SqliteLogOptions {
	/** Keep each leaf's entry name in `<log>_entries` (for an owner whose rows hold no index). */
	entries?: boolean;
}

/** The tables of the log `name` (fixed names from the code, never input). */
export function logSchema(name: string, { entries = false }: SqliteLogOptions = {}): string {
	const entriesTable = `
CREATE TABLE IF NOT EXISTS ${name}_entries (
	idx INTEGER PRIMARY KEY,
	entry TEXT NOT NULL
);`;
	return `
CREATE TABLE IF NOT EXISTS ${name}_tiles (
	tile INTEGER PRIMARY KEY,
	hashes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS ${name}_nodes (
	level INTEGER NOT NULL,
	idx INTEGER NOT NULL,
	hash BLOB NOT NULL,
	PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ${name}_checkpoints (
	size INTEGER PRIMARY KEY,
	note TEXT NOT NULL,
	publishedAt TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ${name}_state (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	migratedAt TEXT NOT NULL,
	migrated INTEGER NOT NULL
);${entries ? entriesTable : ""}
`;
}

/** `[0,0,...]` of n elements: json_each over it numbers the rows of one bulk insert. */
const rowsOf = (n: number) => `[${"0,".repeat(n - 1)}0]`;

export class SqliteLog implements TransparencyLog {
	private readonly statements: Statements;
	private readonly sql: Record<string, string>;
	private state: TreeState = { size: 0, edge: [], tail: "" };
	/** Its roots and proofs, from the state above and its stored subtrees. */
	private readonly proofs: TreeProofs;
	private builder = new TreeBuilder(this.state);

	constructor(
		private readonly db: DatabaseSync,
		readonly name: string,
		private readonly options: SqliteLogOptions = {},
	) {
		this.proofs = new TreeProofs(
			name,
			() => this.state,
			(nodes) => this.readNodes(nodes),
		);
		this.statements = new Statements(db);
		this.sql = {
			writeTiles: `INSERT INTO ${name}_tiles (tile, hashes) SELECT ?1 + j.key, substr(?2, j.key * ${TILE_BYTES} + 1, ${TILE_BYTES}) FROM json_each(?3) j WHERE true ON CONFLICT(tile) DO UPDATE SET hashes = excluded.hashes`,
			writeNodes: `INSERT INTO ${name}_nodes (level, idx, hash) SELECT j.value->>0, j.value->>1, substr(?2, j.key * ${HASH_BYTES} + 1, ${HASH_BYTES}) FROM json_each(?1) j`,
			writeEntries: `INSERT INTO ${name}_entries (idx, entry) SELECT ?1 + j.key, j.value FROM json_each(?2) j`,
			lastTile: `SELECT tile, hashes FROM ${name}_tiles ORDER BY tile DESC LIMIT 1`,
			tiles: `SELECT tile, hashes FROM ${name}_tiles WHERE tile >= ? AND tile < ? ORDER BY tile`,
			nodes: `SELECT hash FROM ${name}_nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx`,
			latest: `SELECT size, note, publishedAt FROM ${name}_checkpoints ORDER BY size DESC LIMIT 1`,
			checkpoints: `SELECT size, note, publishedAt FROM ${name}_checkpoints WHERE size > ? ORDER BY size LIMIT ?`,
			save: `INSERT INTO ${name}_checkpoints (size, note, publishedAt) VALUES (?, ?, ?)`,
			migrated: `SELECT migrated FROM ${name}_state WHERE id = 1`,
			markMigrated: `INSERT INTO ${name}_state (id, migratedAt, migrated) VALUES (1, ?, ?)`,
		};
		db.exec(logSchema(name, options));
		if (options.entries) this.dropEntryUniqueness();
		this.reload();
	}

	/**
	 * A file from before the entry names lost their unique index (docs/design.md §8.4): the table
	 * is copied once into one without it, in one transaction, names and order unchanged.
	 */
	private dropEntryUniqueness(): void {
		const table = `${this.name}_entries`;
		const row = this.db
			.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?")
			.get(table) as { sql: string } | undefined;
		if (!row || !/\bUNIQUE\b/i.test(row.sql)) return;
		transaction(this.db, () =>
			this.db.exec(`
CREATE TABLE ${table}_rebuilt (idx INTEGER PRIMARY KEY, entry TEXT NOT NULL);
INSERT INTO ${table}_rebuilt (idx, entry) SELECT idx, entry FROM ${table} ORDER BY idx;
DROP TABLE ${table};
ALTER TABLE ${table}_rebuilt RENAME TO ${table};`),
		);
	}

	/** Reads the size, the last tile and the right edge back from the file: after a write transaction that rolled back. */
	reload(): void {
		const last = this.statements.get(this.sql.lastTile).get() as
			{ tile: number; hashes: Uint8Array } | undefined;
		const size = last ? Number(last.tile) * TILE_LEAVES + last.hashes.length / HASH_BYTES : 0;
		const tail =
			last && last.hashes.length < TILE_BYTES
				? Buffer.from(last.hashes).toString("latin1")
				: "";
		const nodes = completeSubtrees(0, size);
		const hashes = this.readNodes(nodes);
		this.state = {
			size,
			tail,
			edge: nodes.map((node, i) => ({
				level: node.level,
				hash: hashes[i].toString("latin1"),
			})),
		};
		this.builder = new TreeBuilder(this.state);
	}

	private get count(): number {
		return this.state.size;
	}

	/** The number of leaves hashed into the tree (and appended in this transaction so far). */
	get length(): number {
		return this.count;
	}

	/** Set by an owner that hashes elsewhere (src/tlog/signature-hasher.ts): waits for what is in flight. */
	settleWith: (() => Promise<void>) | null = null;

	async settle(): Promise<void> {
		await this.settleWith?.();
	}

	/** The tree's edge, for a builder on another thread that continues it. */
	get treeState(): TreeState {
		return this.state;
	}

	/**
	 * Appends leaves in the given order and answers the index of the first; `entries` names them
	 * (a log with `<log>_entries` only). Call inside a write transaction, and reload() if it rolls back.
	 */
	append(leaves: string[], entries?: string[]): number {
		const start = this.count;
		if (!leaves.length) return start;
		this.write(this.builder.append(leaves));
		if (this.options.entries)
			this.statements.get(this.sql.writeEntries).run(start, JSON.stringify(entries));
		return start;
	}

	/** Appends leaves hashed elsewhere (32 bytes each, in order); in a write transaction, reload() if it rolls back. */
	appendLeafHashes(hashes: Uint8Array): number {
		const start = this.count;
		if (hashes.length) this.write(this.builder.appendLeafHashes(hashes));
		return start;
	}

	/** Stores an append hashed elsewhere, continuing this tree (src/tlog/signature-hasher.ts); in a write transaction. */
	applyUpdate(update: TreeUpdate): void {
		if (update.state.size <= this.count) return;
		this.write(update);
		this.builder = new TreeBuilder(update.state);
	}

	private write(update: TreeUpdate): void {
		this.statements
			.get(this.sql.writeTiles)
			.run(update.firstTile, update.tiles, rowsOf(update.tileCount));
		if (update.nodeHashes.length)
			this.statements.get(this.sql.writeNodes).run(update.nodes, update.nodeHashes);
		this.state = update.state;
	}

	/** The leaf hashes of [start, end), from the tiles. */
	leafHashes(start: number, end: number): Buffer[] {
		const rows = this.statements
			.get(this.sql.tiles)
			.all(Math.floor(start / TILE_LEAVES), Math.ceil(end / TILE_LEAVES)) as Array<{
			tile: number;
			hashes: Uint8Array;
		}>;
		const hashes = hashesOfTiles(
			rows.map((row) => ({ tile: Number(row.tile), hashes: row.hashes })),
			start,
			end,
		);
		if (hashes.length !== end - start)
			throw new Error(
				`log ${this.name} lacks leaf hashes in [${start}, ${end}): its tables were altered`,
			);
		return hashes;
	}

	/** The hashes of complete subtrees, from the stored level at or below each. */
	private readNodes(nodes: NodeId[]): Buffer[] {
		return nodes.map((node) => {
			const { base, from, to } = storedBelow(node);
			if (base === 0) return foldLayer(this.leafHashes(from, to));
			const rows = this.statements.get(this.sql.nodes).all(base, from, to) as Array<{
				hash: Uint8Array;
			}>;
			if (rows.length !== to - from)
				throw new Error(
					`log ${this.name} lacks the hashes under level ${node.level} node ${node.index}: its tables were altered`,
				);
			return foldLayer(rows.map((row) => Buffer.from(row.hash)));
		});
	}

	async size(): Promise<number> {
		return this.count;
	}

	/** The root of the whole log, from the right edge in memory. */
	currentRoot(): Buffer {
		return this.proofs.currentRoot();
	}

	root(size: number): Promise<Buffer> {
		return this.proofs.root(size);
	}

	inclusionProof(index: number, size: number): Promise<Buffer[]> {
		return this.proofs.inclusionProof(index, size);
	}

	consistencyProof(older: number, newer: number): Promise<Buffer[]> {
		return this.proofs.consistencyProof(older, newer);
	}

	async latestCheckpoint(): Promise<StoredCheckpoint | null> {
		const row = this.statements.get(this.sql.latest).get() as StoredCheckpoint | undefined;
		return row
			? { size: Number(row.size), note: row.note, publishedAt: row.publishedAt }
			: null;
	}

	/** The checkpoints of more than `after` leaves, by size, at most `limit`. */
	async checkpoints(after: number, limit: number): Promise<StoredCheckpoint[]> {
		const rows = this.statements
			.get(this.sql.checkpoints)
			.all(after, limit) as unknown as StoredCheckpoint[];
		return rows.map((row) => ({
			size: Number(row.size),
			note: row.note,
			publishedAt: row.publishedAt,
		}));
	}

	async saveCheckpoint({ size, note, publishedAt }: StoredCheckpoint): Promise<void> {
		this.statements.get(this.sql.save).run(size, note, publishedAt);
	}

	/** Whether rows stored before the log existed were brought in (docs/design.md §8.4). */
	isMigrated(): boolean {
		return this.statements.get(this.sql.migrated).get() !== undefined;
	}

	/** Marks the migration done: inside the transaction that appended the earlier rows. */
	markMigrated(count: number, at: string): void {
		this.statements.get(this.sql.markMigrated).run(at, count);
	}
}
