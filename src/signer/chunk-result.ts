/**
 * What a signing thread answers for a chunk (src/signer/sign.worker.ts with a software key,
 * src/signer/token-sign.worker.ts in a PKCS#11 token): its signatures and, as asked, what the
 * store proofs sign and the signature log takes, hashed on the thread that signed them.
 *
 * Erasable TypeScript, imported with its `.ts` extension by those threads.
 */
import { signatureGroupDigests } from "../identity/signature-groups.ts";
import { signatureLeafHashes } from "../tlog/leaves.ts";

export interface SignTaskResult {
	/** Detached JWS per record, in order, joined by newlines; null when the deadline had passed. */
	jws: string | null;
	finishedAt: number;
	/** With `groups`: the group digests of the chunk's signatures, each timed `finishedAt`. */
	groups?: Uint8Array;
	/** With `leaves`: the signatures' leaf hashes, 32 bytes each, in order, each timed `finishedAt`. */
	leaves?: Uint8Array;
}

/** What a task asks hashed beside its signatures. */
export interface ChunkHashes {
	keyId: string;
	/** The signature group digests (src/identity/signature-groups.ts); the chunk starts a group. */
	groups?: boolean;
	/** The batch and lease the chunk is stored under, for its leaves (src/tlog/leaves.ts). */
	leaves?: { batchId: string; leaseId: string };
}

/** The answer for a chunk of `records` (`[id, data]`) signed as `jws`, finished at `finishedAt`. */
export function chunkResult(
	task: ChunkHashes,
	records: Array<[string, string]>,
	jws: string[],
	finishedAt: number,
): SignTaskResult {
	const result: SignTaskResult = { jws: jws.join("\n"), finishedAt };
	if (!task.groups && !task.leaves) return result;
	const signedAt = new Date(finishedAt).toISOString();
	const at = (i: number): [string, string, string] => [records[i][0], jws[i], signedAt];
	if (task.groups) result.groups = signatureGroupDigests(records.length, at);
	if (task.leaves)
		result.leaves = signatureLeafHashes(
			records.length,
			{ keyId: task.keyId, ...task.leaves },
			at,
		);
	return result;
}
