/**
 * An append-only RFC 6962 log in an owner's MongoDB database (docs/design.md §8.4), the same
 * tree as src/tlog/sqlite-log.ts keeps in SQLite, in collections named after the log:
 *
 * - `<log>_tiles` ({ _id: tile, hashes }): the leaf hashes in log order, TILE_LEAVES to a
 *   document (the last one holds fewer until it fills).
 * - `<log>_nodes` ({ _id: "level:idx", level, idx, hash }): the hash of every complete subtree
 *   whose level is a multiple of STORED_LEVEL_STEP, indexed by (level, idx).
 * - `<log>_checkpoints` ({ _id: size, note, publishedAt }): the signed checkpoints.
 * - `<log>_entries` ({ _id: entry, idx }), for the lease log: each leaf's entry name (its `_id`,
 *   so nothing enters the log twice), indexed by idx for reading them in log order.
 * - `<log>_state` ({ _id: "migration", migratedAt, migrated }): the rows stored before the log
 *   existed were taken in (once).
 *
 * An append is computed in memory from the right edge of the tree (prepare), written (write:
 * the nodes first, then the tiles, every write an upsert, so writing an update again is
 * harmless and the tiles, which give the log's size, never run ahead of the nodes), and only
 * then adopted as the log's state (adopt): an owner whose write fails or whose transaction
 * runs again prepares again from the state it last adopted. Appends run one at a time
 * (`exclusive`): the owner is the log's only writer, a single instance (docs/design.md §4.3).
 */
import type { AnyBulkWriteOperation, Binary, ClientSession, Collection, Db } from "mongodb";
import type { StoredCheckpoint, TransparencyLog } from "./log";
import { completeSubtrees, HASH_BYTES, type NodeId } from "./merkle";
import {
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

interface TileRow {
	_id: number;
	hashes: Binary | Uint8Array;
}

interface NodeRow {
	_id: string;
	level: number;
	idx: number;
	hash: Binary | Uint8Array;
}

interface CheckpointRow {
	_id: number;
	note: string;
	publishedAt: string;
}

interface EntryRow {
	_id: string;
	idx: number;
}

interface StateRow {
	_id: string;
	migratedAt: string;
	migrated: number;
}

const MIGRATION = "migration";

/** A BSON binary as the driver reads it back (a Binary), or as written (a Buffer). */
export function bytesOf(value: Binary | Uint8Array): Buffer {
	if (value instanceof Uint8Array)
		return Buffer.from(value.buffer, value.byteOffset, value.length);
	return Buffer.from(value.buffer.buffer, value.buffer.byteOffset, value.position);
}

/** The collections of the log `name` (fixed names from the code, never input). */
export function mongoLogCollections(name: string, entries: boolean): string[] {
	const names = ["tiles", "nodes", "checkpoints", "state"].map((c) => `${name}_${c}`);
	return entries ? [...names, `${name}_entries`] : names;
}

export interface MongoLogOptions {
	/** Keep each leaf's entry name in `<log>_entries` (for an owner whose rows hold no index). */
	entries?: boolean;
}

export class MongoLog implements TransparencyLog {
	private state: TreeState = { size: 0, edge: [], tail: "" };
	/** Its roots and proofs, from the state above and its stored subtrees. */
	private readonly proofs: TreeProofs;
	private readonly tiles: Collection<TileRow>;
	private readonly nodes: Collection<NodeRow>;
	private readonly checkpointsOf: Collection<CheckpointRow>;
	private readonly entriesOf: Collection<EntryRow>;
	private readonly stateOf: Collection<StateRow>;
	private tail: Promise<unknown> = Promise.resolve();

	constructor(
		db: Db,
		readonly name: string,
		private readonly options: MongoLogOptions = {},
	) {
		this.proofs = new TreeProofs(
			name,
			() => this.state,
			(nodes) => this.readNodes(nodes),
		);
		this.tiles = db.collection<TileRow>(`${name}_tiles`);
		this.nodes = db.collection<NodeRow>(`${name}_nodes`);
		this.checkpointsOf = db.collection<CheckpointRow>(`${name}_checkpoints`);
		this.entriesOf = db.collection<EntryRow>(`${name}_entries`);
		this.stateOf = db.collection<StateRow>(`${name}_state`);
	}

	/** Creates the indexes (the collections themselves come with the first write, or `ensureCollection`). */
	async createIndexes(): Promise<void> {
		await this.nodes.createIndex({ level: 1, idx: 1 }, { name: `${this.name}_nodes_range` });
		if (this.options.entries)
			await this.entriesOf.createIndex(
				{ idx: 1 },
				{ unique: true, name: `${this.name}_entries_idx` },
			);
	}

	/** Reads the size, the last tile and the right edge back from the database. */
	async reload(): Promise<void> {
		const [last] = await this.tiles.find({}).sort({ _id: -1 }).limit(1).toArray();
		const lastHashes = last ? bytesOf(last.hashes) : Buffer.alloc(0);
		const size = last ? Number(last._id) * TILE_LEAVES + lastHashes.length / HASH_BYTES : 0;
		const nodes = completeSubtrees(0, size);
		const hashes = await this.readNodes(nodes);
		this.state = {
			size,
			tail: lastHashes.length < TILE_BYTES ? lastHashes.toString("latin1") : "",
			edge: nodes.map((node, i) => ({
				level: node.level,
				hash: hashes[i].toString("latin1"),
			})),
		};
	}

	/** The number of leaves in the tree. */
	get length(): number {
		return this.state.size;
	}

	/** Runs `work` after every earlier append of this process: appends never interleave. */
	exclusive<T>(work: () => Promise<T>): Promise<T> {
		const run = this.tail.then(work, work);
		this.tail = run.catch(() => undefined);
		return run;
	}

	/** Waits for the appends in flight (a checkpoint does). */
	async settle(): Promise<void> {
		await this.exclusive(async () => undefined);
	}

	/** The append of `leaves` (or of leaf hashes made elsewhere, 32 bytes each) after the adopted state. */
	prepare(leaves: string[] | Uint8Array): TreeUpdate {
		const builder = new TreeBuilder(this.state);
		return Array.isArray(leaves) ? builder.append(leaves) : builder.appendLeafHashes(leaves);
	}

	/** Writes an update (and the entry names of its leaves), in `session`'s transaction when given. */
	async write(update: TreeUpdate, entries?: string[], session?: ClientSession): Promise<void> {
		const start = update.state.size - (entries?.length ?? 0);
		if (this.options.entries && entries?.length)
			await this.entriesOf.bulkWrite(
				entries.map((entry, i) => ({
					updateOne: {
						filter: { _id: entry },
						update: { $setOnInsert: { idx: start + i } },
						upsert: true,
					},
				})),
				{ ordered: true, session },
			);
		const levels = JSON.parse(update.nodes) as Array<[number, number]>;
		if (levels.length)
			await this.nodes.bulkWrite(
				levels.map(([level, idx], i) => ({
					updateOne: {
						filter: { _id: `${level}:${idx}` },
						update: {
							$set: {
								level,
								idx,
								hash: Buffer.from(
									update.nodeHashes.subarray(
										i * HASH_BYTES,
										(i + 1) * HASH_BYTES,
									),
								),
							},
						},
						upsert: true,
					},
				})),
				{ ordered: false, session },
			);
		const tiles: AnyBulkWriteOperation<TileRow>[] = [];
		for (let k = 0; k < update.tileCount; k++)
			tiles.push({
				updateOne: {
					filter: { _id: update.firstTile + k },
					update: {
						$set: {
							hashes: Buffer.from(
								update.tiles.subarray(k * TILE_BYTES, (k + 1) * TILE_BYTES),
							),
						},
					},
					upsert: true,
				},
			});
		if (tiles.length) await this.tiles.bulkWrite(tiles, { ordered: true, session });
	}

	/** The update is stored (its transaction committed): the log continues from it. */
	adopt(update: TreeUpdate): void {
		if (update.state.size > this.state.size) this.state = update.state;
	}

	/** Prepares, writes and adopts an append; call inside `exclusive`. Answers the first leaf's index. */
	async append(leaves: string[] | Uint8Array, entries?: string[]): Promise<number> {
		const start = this.state.size;
		const update = this.prepare(leaves);
		if (update.state.size === start) return start;
		await this.write(update, entries);
		this.adopt(update);
		return start;
	}

	/** The leaf hashes of [start, end), from the tiles. */
	async leafHashes(start: number, end: number): Promise<Buffer[]> {
		const rows = await this.tiles
			.find({
				_id: { $gte: Math.floor(start / TILE_LEAVES), $lt: Math.ceil(end / TILE_LEAVES) },
			})
			.sort({ _id: 1 })
			.toArray();
		const hashes = hashesOfTiles(
			rows.map((row) => ({ tile: Number(row._id), hashes: bytesOf(row.hashes) })),
			start,
			end,
		);
		if (hashes.length !== end - start)
			throw new Error(
				`log ${this.name} lacks leaf hashes in [${start}, ${end}): its collections were altered`,
			);
		return hashes;
	}

	/** The hashes of complete subtrees, from the stored level at or below each. */
	private async readNodes(nodes: NodeId[]): Promise<Buffer[]> {
		return Promise.all(
			nodes.map(async (node) => {
				const { base, from, to } = storedBelow(node);
				if (base === 0) return foldLayer(await this.leafHashes(from, to));
				const rows = await this.nodes
					.find({ level: base, idx: { $gte: from, $lt: to } })
					.sort({ level: 1, idx: 1 })
					.toArray();
				if (rows.length !== to - from)
					throw new Error(
						`log ${this.name} lacks the hashes under level ${node.level} node ${node.index}: its collections were altered`,
					);
				return foldLayer(rows.map((row) => bytesOf(row.hash)));
			}),
		);
	}

	async size(): Promise<number> {
		return this.state.size;
	}

	root(size: number): Promise<Buffer> {
		return this.proofs.root(size);
	}

	/** Where a named entry is in the log (a log with `<log>_entries`); null when it is not logged. */
	async entryIndex(entry: string): Promise<number | null> {
		const row = await this.entriesOf.findOne({ _id: entry });
		return row ? Number(row.idx) : null;
	}

	/** The entry names of the leaves in [start, end), by index (a log with `<log>_entries`). */
	async entryNames(start: number, end: number): Promise<Map<number, string>> {
		const rows = await this.entriesOf.find({ idx: { $gte: start, $lt: end } }).toArray();
		return new Map(rows.map((row) => [Number(row.idx), row._id]));
	}

	inclusionProof(index: number, size: number): Promise<Buffer[]> {
		return this.proofs.inclusionProof(index, size);
	}

	consistencyProof(older: number, newer: number): Promise<Buffer[]> {
		return this.proofs.consistencyProof(older, newer);
	}

	async latestCheckpoint(): Promise<StoredCheckpoint | null> {
		const [row] = await this.checkpointsOf.find({}).sort({ _id: -1 }).limit(1).toArray();
		return row ? checkpointOfRow(row) : null;
	}

	async checkpoints(after: number, limit: number): Promise<StoredCheckpoint[]> {
		const rows = await this.checkpointsOf
			.find({ _id: { $gt: after } })
			.sort({ _id: 1 })
			.limit(limit)
			.toArray();
		return rows.map(checkpointOfRow);
	}

	async saveCheckpoint({ size, note, publishedAt }: StoredCheckpoint): Promise<void> {
		await this.checkpointsOf.insertOne({ _id: size, note, publishedAt });
	}

	/** Whether rows stored before the log existed were brought in (docs/design.md §8.4). */
	async isMigrated(): Promise<boolean> {
		return (await this.stateOf.findOne({ _id: MIGRATION })) !== null;
	}

	/** Marks the migration done, once every earlier row is appended; in `session`'s transaction when given. */
	async markMigrated(count: number, at: string, session?: ClientSession): Promise<void> {
		await this.stateOf.updateOne(
			{ _id: MIGRATION },
			{ $setOnInsert: { migratedAt: at, migrated: count } },
			{ upsert: true, session },
		);
	}
}

function checkpointOfRow(row: CheckpointRow): StoredCheckpoint {
	return { size: Number(row._id), note: row.note, publishedAt: row.publishedAt };
}

/**
 * A log's leaf hashes in order from its tiles, for the audit and the export (what
 * src/audit/log-tables.ts reads from SQLite); a tile out of place or of a bad length ends it.
 */
export async function* mongoLeafHashes(
	db: Db,
	name: string,
	onBadTile: (tile: number) => void = () => undefined,
): AsyncGenerator<Buffer> {
	let index = 0;
	for await (const row of db.collection<TileRow>(`${name}_tiles`).find({}).sort({ _id: 1 })) {
		const blob = bytesOf(row.hashes);
		if (Number(row._id) * TILE_LEAVES !== index || blob.length % HASH_BYTES !== 0) {
			onBadTile(Number(row._id));
			return;
		}
		for (let at = 0; at < blob.length; at += HASH_BYTES, index++)
			yield blob.subarray(at, at + HASH_BYTES);
	}
}

/** The checkpoints a log holds, by size, for the audit and the export. */
export async function mongoCheckpoints(db: Db, name: string): Promise<StoredCheckpoint[]> {
	const rows = await db
		.collection<CheckpointRow>(`${name}_checkpoints`)
		.find({})
		.sort({ _id: 1 })
		.toArray();
	return rows.map(checkpointOfRow);
}
