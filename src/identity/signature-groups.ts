/**
 * The digest of a piece of signatures that a signer's store proof signs, version 2
 * (lease-token.ts): SHA-256 over the SHA-256 digests of the piece's groups of SIGNATURE_GROUP
 * signatures, in order. A group's digest covers each of its signatures' record id, JWS and time,
 * each as `<length>:<text>` in UTF-8, as version 1 covered the whole piece: their JWS and times
 * are ASCII, and their record ids are bound exactly by the ids digest records checks beside the
 * proof. Groups, so that the signing threads hash the signatures they make, in parallel, and the
 * signer's event loop hashes 32 bytes per group instead of every signature: over a run of
 * 100,000 records that was a tenth of the event loop's time.
 *
 * Erasable TypeScript, imported with its `.ts` extension by the signing threads
 * (src/signer/sign.worker.ts), which Node loads from the sources under jest.
 */
import { createHash, hash } from "node:crypto";

/** Signatures per group; pieces (TRANSFER_CHUNK) and signing chunks are multiples of it. */
export const SIGNATURE_GROUP = 16;
export const GROUP_DIGEST_BYTES = 32;

const field = (text: string) => `${text.length}:${text}`;

/**
 * The group digests of `count` signatures, `at(i)` giving the i-th one's record id, JWS and
 * time: 32 bytes per group of SIGNATURE_GROUP, the last group possibly shorter.
 */
export function signatureGroupDigests(
	count: number,
	at: (i: number) => [recordId: string, jws: string, signedAt: string],
): Buffer {
	const groups = Buffer.alloc(Math.ceil(count / SIGNATURE_GROUP) * GROUP_DIGEST_BYTES);
	for (let g = 0; g * SIGNATURE_GROUP < count; g++) {
		let encoded = "";
		const end = Math.min(count, (g + 1) * SIGNATURE_GROUP);
		for (let i = g * SIGNATURE_GROUP; i < end; i++) {
			const [recordId, jws, signedAt] = at(i);
			encoded += field(recordId) + field(jws) + field(signedAt);
		}
		// node:crypto's one-shot hash: a third less than a Hash object's update and digest here.
		groups.write(hash("sha256", encoded, "binary"), g * GROUP_DIGEST_BYTES, "latin1");
	}
	return groups;
}

/** A piece's version 2 digest from its group digests. */
export function pieceDigestOfGroups(groups: Uint8Array): string {
	return createHash("sha256").update(groups).digest("base64url");
}
