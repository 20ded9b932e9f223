/**
 * Digests that bind a batch's contents to the statements about it (docs/design.md, "Who may
 * act on the bus"): the dispatch ticket names its records by `recordsDigest`, and the lease
 * token names the record ids of each piece the signer stores by `idChunkDigests`, so records
 * can check, offline, that signatures stored under a lease are for that batch's records.
 * SHA-256 over JSON arrays: no separator a record's data could forge.
 */
import { createHash } from "node:crypto";
import type { RecordPayload } from "../contract";

/** Signatures per `records.storeSignatures` call: the pieces a batch is stored in (src/signer/signer.ts). */
export const TRANSFER_CHUNK = 2_000;

const sha256 = (value: string) => createHash("sha256").update(value).digest("base64url");

/** The batch's records, ids and data, in order. */
export function recordsDigest(records: RecordPayload[]): string {
	return sha256(JSON.stringify(records.map(record => [record.id, record.data])));
}

/** The ids of one stored piece, in order. */
export function idsDigest(ids: string[]): string {
	return sha256(JSON.stringify(ids));
}

/** One digest per TRANSFER_CHUNK ids of the batch, in order: one per piece its signer stores. */
export function idChunkDigests(ids: string[]): string[] {
	const digests: string[] = [];
	for (let i = 0; i < ids.length; i += TRANSFER_CHUNK) digests.push(idsDigest(ids.slice(i, i + TRANSFER_CHUNK)));
	return digests;
}

/** One stored piece's signatures: what the lease holder's store proof signs. */
export function signaturesDigest(signatures: Array<{ recordId: string; jws: string; signedAt: string }>): string {
	return sha256(JSON.stringify(signatures.map(s => [s.recordId, s.jws, s.signedAt])));
}
