/** What the transparency-log tests share (docs/design.md §8.4): the tree by its definition, and a piece of signatures. */
import { EMPTY_ROOT, nodeHash } from "../../src/tlog/merkle";

/** RFC 6962 §2.1's MTH, by its recursive definition over the leaf hashes. */
export function mth(hashes: Buffer[]): Buffer {
	if (hashes.length === 0) return EMPTY_ROOT;
	if (hashes.length === 1) return hashes[0];
	let k = 1;
	while (k * 2 < hashes.length) k *= 2;
	return nodeHash(mth(hashes.slice(0, k)), mth(hashes.slice(k)));
}

export const SIGNED_AT = "2025-01-01T00:00:00.000Z";

/** A piece of signatures for records.storeSignatures: these ids, under one key and a lease of the batch's own. */
export const piece = (ids: string[], batchId: string) => ({
	batchId,
	keyId: "key-000",
	leaseId: `lease-${batchId}`,
	signatures: ids.map((recordId) => ({
		recordId,
		jws: `jws-${recordId}-${batchId}`,
		signedAt: SIGNED_AT,
	})),
});
