/**
 * The leaf hashes the signing threads made of a batch's signatures (src/signer/sign.worker.ts),
 * remembered per stored piece by the piece array's identity, as src/identity/batch-digest.ts
 * remembers digests: records in the same process appends them to the signature log instead of
 * hashing the piece again. Only this process's own code holds such an array: a piece that
 * arrives over the bus is a new array, never found here, and is hashed by records; hashes never
 * travel on the bus. The services keep batch-digest.ts's rule: an array handed to a call is not
 * changed afterwards.
 */
import type { SignatureDoc } from "../contract";
import { HASH_BYTES } from "./merkle";

type StoredUnder = Pick<SignatureDoc, "keyId" | "batchId" | "leaseId">;

const remembered = new WeakMap<object, StoredUnder & { hashes: Uint8Array }>();

/** Remembers each piece's leaf hashes, cut from the batch's in the pieces' order. */
export function rememberLeafHashes(
	pieces: ReadonlyArray<readonly unknown[]>,
	under: StoredUnder,
	hashes: Uint8Array,
): void {
	let from = 0;
	for (const piece of pieces) {
		const to = from + piece.length * HASH_BYTES;
		if (to > hashes.length) throw new Error("fewer leaf hashes than signatures");
		remembered.set(piece, { ...under, hashes: hashes.subarray(from, to) });
		from = to;
	}
}

/**
 * The leaf hashes remembered for this very piece stored under this key, batch and lease, one per
 * signature in its order; null for any other array.
 */
export function leafHashesOf(piece: readonly unknown[], under: StoredUnder): Uint8Array | null {
	const known = remembered.get(piece);
	if (
		!known ||
		known.keyId !== under.keyId ||
		known.batchId !== under.batchId ||
		known.leaseId !== under.leaseId ||
		known.hashes.length !== piece.length * HASH_BYTES
	)
		return null;
	return known.hashes;
}

/** Of a piece's leaf hashes, those of the rows it stored (each inserted as `start` + its place). */
export function storedLeafHashes(
	pieceHashes: Uint8Array,
	stored: ReadonlyArray<{ logIndex?: number | null }>,
	start: number,
): Uint8Array {
	const hashes = new Uint8Array(stored.length * HASH_BYTES);
	stored.forEach((row, i) => {
		const at = (Number(row.logIndex) - start) * HASH_BYTES;
		hashes.set(pieceHashes.subarray(at, at + HASH_BYTES), i * HASH_BYTES);
	});
	return hashes;
}
