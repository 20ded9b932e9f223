/**
 * The growing edge of an RFC 6962 tree (docs/design.md §8.4): from the complete subtrees that
 * make up the log and the leaf hashes of its last, unfilled tile, an append hashes each new leaf
 * and the subtrees it completes, and answers what the store writes: the tiles it touched and the
 * new subtrees at the stored levels. Plain data in and out, so it runs on the owner's thread
 * (src/tlog/sqlite-log.ts) or on a thread of its own (src/tlog/hasher.worker.ts).
 */
import {
	consistencyProof,
	foldSubtrees,
	HASH_BYTES,
	hashChildren,
	hashLeaf,
	inclusionProof,
	nodeHash,
	treeRoot,
	type HashBytes,
	type NodeReader,
} from "./merkle.ts";

/** Levels 4, 8, 12, ... are stored: 1/15 of a node per leaf, and at most 8 rows per subtree read. */
export const STORED_LEVEL_STEP = 4;
/** Leaf hashes per tile row: the leaves under one stored level-4 node. */
export const TILE_LEAVES = 2 ** STORED_LEVEL_STEP;
export const TILE_BYTES = TILE_LEAVES * HASH_BYTES;

/** A complete subtree on the right edge; its hash as latin1 (src/tlog/merkle.ts). */
export interface EdgeNode {
	level: number;
	hash: HashBytes;
}

export interface TreeState {
	size: number;
	/** The complete subtrees that make up [0, size), left to right. */
	edge: EdgeNode[];
	/** The leaf hashes of the last tile while it is not full (latin1). */
	tail: HashBytes;
}

/** What one append writes, and the state after it. */
export interface TreeUpdate {
	/** The first tile written, and the leaf hashes from its start (the last tile may be partial). */
	firstTile: number;
	tileCount: number;
	tiles: Uint8Array;
	/** `[[level, index], ...]` (JSON) of the new subtrees at stored levels, and their hashes. */
	nodes: string;
	nodeHashes: Uint8Array;
	state: TreeState;
}

export class TreeBuilder {
	private readonly edge: EdgeNode[];
	private size: number;
	private tail: HashBytes;

	constructor(state: TreeState) {
		this.size = state.size;
		this.edge = state.edge.slice();
		this.tail = state.tail;
	}

	append(leaves: string[]): TreeUpdate {
		return this.appendHashed(leaves.length, (i) => hashLeaf(leaves[i]));
	}

	/** Appends leaves hashed elsewhere: `hashes` holds their leaf hashes, 32 bytes each, in order. */
	appendLeafHashes(hashes: Uint8Array): TreeUpdate {
		const all = Buffer.from(hashes.buffer, hashes.byteOffset, hashes.byteLength).toString(
			"latin1",
		);
		return this.appendHashed(hashes.byteLength / HASH_BYTES, (i) =>
			all.slice(i * HASH_BYTES, (i + 1) * HASH_BYTES),
		);
	}

	private appendHashed(count: number, leafHashAt: (i: number) => HashBytes): TreeUpdate {
		const start = this.size;
		const edge = this.edge;
		let tiles = this.tail;
		const nodes: Array<[number, number]> = [];
		let nodeHashes = "";
		for (let i = 0; i < count; i++) {
			let hash = leafHashAt(i);
			tiles += hash;
			let level = 0;
			while (edge.length && edge[edge.length - 1].level === level) {
				hash = hashChildren(edge.pop()!.hash, hash);
				level++;
				if (level % STORED_LEVEL_STEP === 0) {
					nodes.push([level, (start + i + 1) / 2 ** level - 1]);
					nodeHashes += hash;
				}
			}
			edge.push({ level, hash });
		}
		this.size += count;
		const tileCount = Math.ceil(tiles.length / TILE_BYTES);
		this.tail = tiles.length % TILE_BYTES ? tiles.slice((tileCount - 1) * TILE_BYTES) : "";
		return {
			firstTile: Math.floor(start / TILE_LEAVES),
			tileCount,
			tiles: Buffer.from(tiles, "latin1"),
			nodes: JSON.stringify(nodes),
			nodeHashes: Buffer.from(nodeHashes, "latin1"),
			state: { size: this.size, edge: edge.slice(), tail: this.tail },
		};
	}
}

/**
 * Where a store reads a complete subtree's hash from (the same for every store): the stored
 * level at or below it, `base`, and the range [from, to) of hashes there (leaf hashes when
 * `base` is 0), which foldLayer() takes to the subtree's hash.
 */
export function storedBelow({ level, index }: { level: number; index: number }): {
	base: number;
	from: number;
	to: number;
} {
	const below = level % STORED_LEVEL_STEP;
	const width = 2 ** below;
	return { base: level - below, from: index * width, to: (index + 1) * width };
}

/** The hash of the complete subtree over `layer`, a power of two of adjacent hashes. */
export function foldLayer(layer: Buffer[]): Buffer {
	while (layer.length > 1)
		layer = Array.from({ length: layer.length / 2 }, (_, i) =>
			nodeHash(layer[2 * i], layer[2 * i + 1]),
		);
	return layer[0];
}

/** The leaf hashes of [start, end) out of tile rows (`tile`, its bytes) in tile order; fewer when some are missing. */
export function hashesOfTiles(
	rows: Iterable<{ tile: number; hashes: Uint8Array }>,
	start: number,
	end: number,
): Buffer[] {
	const hashes: Buffer[] = [];
	for (const row of rows) {
		const first = row.tile * TILE_LEAVES;
		const blob = Buffer.from(row.hashes.buffer, row.hashes.byteOffset, row.hashes.byteLength);
		for (let i = Math.max(start, first); i < Math.min(end, first + TILE_LEAVES); i++) {
			const at = (i - first) * HASH_BYTES;
			if (at + HASH_BYTES <= blob.length) hashes.push(blob.subarray(at, at + HASH_BYTES));
		}
	}
	return hashes;
}

/**
 * A stored log's roots and proofs, the same for every store: sizes up to the log's own, the
 * whole log's root from its right edge in memory, any other from the subtrees `read` gives.
 */
export class TreeProofs {
	readonly #name: string;
	readonly #state: () => TreeState;
	readonly #read: NodeReader;

	constructor(name: string, state: () => TreeState, read: NodeReader) {
		this.#name = name;
		this.#state = state;
		this.#read = read;
	}

	#checkSize(size: number): void {
		const leaves = this.#state().size;
		if (!(Number.isInteger(size) && size >= 0 && size <= leaves))
			throw new RangeError(`log ${this.#name} has ${leaves} leaves, not ${size}`);
	}

	/** The root of the whole log, from the right edge in memory. */
	currentRoot(): Buffer {
		return foldSubtrees(this.#state().edge.map((e) => Buffer.from(e.hash, "latin1")));
	}

	async root(size: number): Promise<Buffer> {
		this.#checkSize(size);
		return size === this.#state().size ? this.currentRoot() : treeRoot(size, this.#read);
	}

	async inclusionProof(index: number, size: number): Promise<Buffer[]> {
		this.#checkSize(size);
		return inclusionProof(index, size, this.#read);
	}

	async consistencyProof(older: number, newer: number): Promise<Buffer[]> {
		this.#checkSize(newer);
		return consistencyProof(older, newer, this.#read);
	}
}
