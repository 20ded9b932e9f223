/**
 * The Merkle tree of RFC 6962 (§2.1; RFC 9162 §2.1 for the verification algorithms): leaf hash
 * SHA-256(0x00 || leaf), node hash SHA-256(0x01 || left || right), and the split of a tree of
 * n leaves at the largest power of two below n. Proofs are planned here as lists of leaf ranges
 * whose hashes a store supplies from the complete subtrees it keeps (src/tlog/sqlite-log.ts), so
 * no proof rehashes the log.
 *
 * A complete subtree is named by its level and index: level L, index i covers the leaves
 * [i * 2^L, (i + 1) * 2^L). Sizes stay within Number.MAX_SAFE_INTEGER: no 32-bit bit operations.
 */
import crypto from "node:crypto";

export const HASH_BYTES = 32;

/** A complete subtree: `level` (0 = a leaf) and its `index` at that level. */
export interface NodeId {
	level: number;
	index: number;
}

/** A range of leaves [start, end), as the RFC 6962 recursion cuts them. */
export interface LeafRange {
	start: number;
	end: number;
}

/** Reads the hashes of complete subtrees, in the order asked. */
export type NodeReader = (nodes: NodeId[]) => Buffer[] | Promise<Buffer[]>;

/**
 * The hashes as the append path keeps them: 32-character latin1 strings, one character a
 * byte. node:crypto's one-shot hash answers a string far faster than a Buffer, and OpenSSL
 * hashes with the CPU's SHA instructions: an append costs two such calls per leaf.
 */
export type HashBytes = string;

/** One scratch buffer for the node input (0x01 || left || right): hashing runs on one thread, never re-entered. */
const nodeInput = Buffer.alloc(1 + 2 * HASH_BYTES, 1);

/** SHA-256(0x00 || UTF-8 of leaf), as latin1. */
export function hashLeaf(leaf: string): HashBytes {
	return crypto.hash("sha256", "\u0000" + leaf, "binary");
}

/** SHA-256(0x01 || left || right), of and as latin1. */
export function hashChildren(left: HashBytes, right: HashBytes): HashBytes {
	nodeInput.write(left, 1, "latin1");
	nodeInput.write(right, 1 + HASH_BYTES, "latin1");
	return crypto.hash("sha256", nodeInput, "binary");
}

/** SHA-256(0x00 || leaf). */
export function leafHash(leaf: Uint8Array | string): Buffer {
	if (typeof leaf === "string") return Buffer.from(hashLeaf(leaf), "latin1");
	return crypto.createHash("sha256").update(Buffer.of(0)).update(leaf).digest();
}

/** SHA-256(0x01 || left || right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
	nodeInput.set(left, 1);
	nodeInput.set(right, 1 + HASH_BYTES);
	return crypto.hash("sha256", nodeInput, "buffer");
}

/** The root of the empty tree: SHA-256 of nothing. */
export const EMPTY_ROOT = Buffer.from(
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	"hex",
);

/** The largest power of two strictly below n (n >= 2). */
function splitPoint(n: number): number {
	let k = 1;
	while (k * 2 < n) k *= 2;
	return k;
}

/**
 * The complete subtrees that make up [start, end), left to right, largest first: a range of the
 * RFC 6962 recursion starts at a multiple of a power of two at least as large as the range.
 */
export function completeSubtrees(start: number, end: number): NodeId[] {
	const nodes: NodeId[] = [];
	while (start < end) {
		let level = 0;
		while (start % 2 ** (level + 1) === 0 && start + 2 ** (level + 1) <= end) level++;
		nodes.push({ level, index: start / 2 ** level });
		start += 2 ** level;
	}
	return nodes;
}

/** The hash of a range from the hashes of its complete subtrees, folded right to left (RFC 6962's split). */
export function foldSubtrees(hashes: Buffer[]): Buffer {
	if (!hashes.length) return EMPTY_ROOT;
	let hash = hashes[hashes.length - 1];
	for (let i = hashes.length - 2; i >= 0; i--) hash = nodeHash(hashes[i], hash);
	return hash;
}

/** The ranges whose hashes prove leaf `index` in a tree of `size` leaves, bottom up (RFC 6962 PATH). */
export function inclusionRanges(index: number, size: number): LeafRange[] {
	if (!(index >= 0 && index < size))
		throw new RangeError(`leaf ${index} is not in a tree of ${size}`);
	const ranges: LeafRange[] = [];
	let start = 0;
	let end = size;
	while (end - start > 1) {
		const k = splitPoint(end - start);
		if (index < start + k) {
			ranges.push({ start: start + k, end });
			end = start + k;
		} else {
			ranges.push({ start, end: start + k });
			start += k;
		}
	}
	return ranges.reverse();
}

/** The ranges whose hashes prove a tree of `older` leaves a prefix of one of `newer` (RFC 6962 SUBPROOF). */
export function consistencyRanges(older: number, newer: number): LeafRange[] {
	if (!(older >= 0 && older <= newer))
		throw new RangeError(`no consistency proof from ${older} leaves to ${newer}`);
	if (older === 0 || older === newer) return [];
	const ranges: LeafRange[] = [];
	let start = 0;
	let end = newer;
	let m = older;
	let whole = true;
	while (m !== end - start) {
		const k = splitPoint(end - start);
		if (m <= k) {
			ranges.push({ start: start + k, end });
			end = start + k;
		} else {
			ranges.push({ start, end: start + k });
			m -= k;
			start += k;
			whole = false;
		}
	}
	if (!whole) ranges.push({ start, end });
	return ranges.reverse();
}

/** The hashes of `ranges`, from one read of every complete subtree they need. */
export async function rangeHashes(ranges: LeafRange[], read: NodeReader): Promise<Buffer[]> {
	const parts = ranges.map((r) => completeSubtrees(r.start, r.end));
	const wanted = new Map<string, NodeId>();
	for (const node of parts.flat()) wanted.set(`${node.level}/${node.index}`, node);
	const nodes = [...wanted.values()];
	const hashes = await read(nodes);
	const byId = new Map(nodes.map((node, i) => [`${node.level}/${node.index}`, hashes[i]]));
	return parts.map((part) => foldSubtrees(part.map((n) => byId.get(`${n.level}/${n.index}`)!)));
}

/** The root of the tree of the first `size` leaves. */
export async function treeRoot(size: number, read: NodeReader): Promise<Buffer> {
	if (size === 0) return EMPTY_ROOT;
	return (await rangeHashes([{ start: 0, end: size }], read))[0];
}

export function inclusionProof(index: number, size: number, read: NodeReader): Promise<Buffer[]> {
	return rangeHashes(inclusionRanges(index, size), read);
}

export function consistencyProof(
	older: number,
	newer: number,
	read: NodeReader,
): Promise<Buffer[]> {
	return rangeHashes(consistencyRanges(older, newer), read);
}

const odd = (n: number) => n % 2 === 1;
const isPowerOfTwo = (n: number) => n === 2 ** Math.round(Math.log2(n));
const half = (n: number) => Math.floor(n / 2);

/** Whether `proof` shows the leaf hash `leaf` at `index` in the tree of `size` leaves with `root` (RFC 9162 §2.1.3.2). */
export function verifyInclusion(
	leaf: Uint8Array,
	index: number,
	size: number,
	proof: Uint8Array[],
	root: Uint8Array,
): boolean {
	if (!(index >= 0 && index < size)) return false;
	let fn = index;
	let sn = size - 1;
	let hash: Uint8Array = leaf;
	for (const sibling of proof) {
		if (sn === 0) return false;
		if (odd(fn) || fn === sn) {
			hash = nodeHash(sibling, hash);
			if (!odd(fn)) while (!odd(fn) && fn !== 0) [fn, sn] = [half(fn), half(sn)];
		} else hash = nodeHash(hash, sibling);
		[fn, sn] = [half(fn), half(sn)];
	}
	return sn === 0 && Buffer.from(hash).equals(root);
}

/** Whether `proof` shows the tree of `older` leaves with `olderRoot` a prefix of the one of `newer` with `newerRoot` (RFC 9162 §2.1.4.2). */
export function verifyConsistency(
	older: number,
	newer: number,
	proof: Uint8Array[],
	olderRoot: Uint8Array,
	newerRoot: Uint8Array,
): boolean {
	if (!(older >= 0 && older <= newer)) return false;
	if (older === newer)
		return proof.length === 0 && Buffer.from(olderRoot).equals(Buffer.from(newerRoot));
	if (older === 0) return proof.length === 0;
	if (!proof.length) return false;
	const path = isPowerOfTwo(older) ? [olderRoot, ...proof] : proof;
	let fn = older - 1;
	let sn = newer - 1;
	while (odd(fn)) [fn, sn] = [half(fn), half(sn)];
	let fr: Uint8Array = path[0];
	let sr: Uint8Array = path[0];
	for (const c of path.slice(1)) {
		if (sn === 0) return false;
		if (odd(fn) || fn === sn) {
			fr = nodeHash(c, fr);
			sr = nodeHash(c, sr);
			if (!odd(fn)) while (!odd(fn) && fn !== 0) [fn, sn] = [half(fn), half(sn)];
		} else sr = nodeHash(sr, c);
		[fn, sn] = [half(fn), half(sn)];
	}
	return (
		sn === 0 &&
		Buffer.from(fr).equals(Buffer.from(olderRoot)) &&
		Buffer.from(sr).equals(Buffer.from(newerRoot))
	);
}
