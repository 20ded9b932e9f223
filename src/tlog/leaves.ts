/**
 * The leaves of the two logs, defined in docs/design.md §8.4: each is the UTF-8 of a JSON array
 * of strings and integers in a fixed order, written as RFC 8785 (JCS) writes it, which for such
 * an array is exactly JSON.stringify's output. The first element names the kind and version.
 *
 * Erasable TypeScript, imported with its `.ts` extension by the threads that hash leaves (the
 * signing threads, src/signer/sign.worker.ts, and src/tlog/hasher.worker.ts).
 */
import type { LeaseDoc, SignatureDoc } from "../contract";
import { HASH_BYTES, hashLeaf } from "./merkle.ts";

export const SIGNATURE_LEAF = "record-signer/signature/v1";
export const LEASE_GRANT_LEAF = "record-signer/lease-grant/v1";
export const LEASE_END_LEAF = "record-signer/lease-end/v1";

/** A stored signature's leaf; its log entry is its record id. */
export function signatureLeaf(s: Omit<SignatureDoc, "_id">): string {
	return JSON.stringify([
		SIGNATURE_LEAF,
		s.recordId,
		s.keyId,
		s.batchId,
		s.leaseId,
		s.jws,
		s.signedAt,
	]);
}

/**
 * The leaf hashes of `count` signatures made under one key, batch and lease, `at(i)` giving the
 * i-th one's record id, JWS and time: 32 bytes each, in order. The JWS must be a compact JWS and
 * the time an ISO 8601 string, as the signing threads make them (neither needs JSON escaping).
 */
export function signatureLeafHashes(
	count: number,
	under: Pick<SignatureDoc, "keyId" | "batchId" | "leaseId">,
	at: (i: number) => [recordId: string, jws: string, signedAt: string],
): Buffer {
	const hashes = Buffer.alloc(count * HASH_BYTES);
	// signatureLeaf's JSON, written in parts: the key, batch and lease are the same for every
	// leaf, encoded once, and a compact JWS (base64url and dots) and an ISO time hold nothing
	// JSON escapes, so they are quoted as they are; the record id is escaped (a test holds the
	// two encodings equal). A fifth of the time per leaf on a signing thread.
	const head = `[${JSON.stringify(SIGNATURE_LEAF)},`;
	const shared = `,${JSON.stringify(under.keyId)},${JSON.stringify(under.batchId)},${JSON.stringify(under.leaseId)},"`;
	for (let i = 0; i < count; i++) {
		const [recordId, jws, signedAt] = at(i);
		const leaf = `${head}${JSON.stringify(recordId)}${shared}${jws}","${signedAt}"]`;
		hashes.write(hashLeaf(leaf), i * HASH_BYTES, "latin1");
	}
	return hashes;
}

/** A grant's leaf (what a grant fixes: renewals move `expiresAt`, so it is in the end's leaf). */
export function leaseGrantLeaf(
	l: Pick<LeaseDoc, "leaseId" | "keyId" | "holder" | "grantSeq" | "grantedAt">,
): string {
	return JSON.stringify([
		LEASE_GRANT_LEAF,
		l.leaseId,
		l.keyId,
		l.holder,
		l.grantSeq,
		l.grantedAt,
	]);
}

/** An end's leaf, with the last expiry granted. */
export function leaseEndLeaf(
	l: Pick<LeaseDoc, "leaseId" | "keyId" | "endSeq" | "endedAt" | "end" | "expiresAt">,
): string {
	return JSON.stringify([
		LEASE_END_LEAF,
		l.leaseId,
		l.keyId,
		l.endSeq,
		l.endedAt,
		l.end,
		l.expiresAt,
	]);
}

/** The log entry names of a lease's grant and end. */
export const grantEntry = (leaseId: string) => `grant:${leaseId}`;
export const endEntry = (leaseId: string) => `end:${leaseId}`;

/** A lease's grant, and its end once it has one: its leaves in the lease log, with their seqs and entry names. */
export function leaseLeaves(lease: LeaseDoc): Array<{ seq: number; entry: string; leaf: string }> {
	const leaves = [
		{ seq: lease.grantSeq, entry: grantEntry(lease.leaseId), leaf: leaseGrantLeaf(lease) },
	];
	if (lease.end !== null && lease.endSeq !== null)
		leaves.push({
			seq: lease.endSeq,
			entry: endEntry(lease.leaseId),
			leaf: leaseEndLeaf(lease),
		});
	return leaves;
}
