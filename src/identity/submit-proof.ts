/**
 * Submit proofs (docs/design.md §6.10): records stores submitted records only from a caller that
 * holds the batcher's credential (the gateway, beside the batcher; the REPL or a tool on that
 * node's DATA_DIR). The proof is the credential's detached signature over the submitter's name,
 * the time it was made and the digest of the records (ids and data, batch-digest.ts), so a proof
 * read off the bus adds nothing: replayed within its minute, it submits the same records again,
 * which is an accepted replay that changes nothing.
 */
import type { KeyObject } from "node:crypto";
import type { RecordPayload } from "../contract";
import { DomainError } from "../errors";
import { recordsDigest } from "./batch-digest";
import { signDetached, verifyDetached } from "./compact-jws";
import type { SignerCredential } from "./credential";

/** A proof older (or further ahead of records' clock) than this is refused. */
export const SUBMIT_PROOF_MAX_AGE_MS = 60_000;

const submitStatement = (submitter: string, iat: number, records: readonly RecordPayload[]) =>
	`record-signer submit v1\n${submitter}\n${iat}\n${recordsDigest(records)}`;

export interface SubmitProof {
	/** Who submits, as the gateway authenticated them (a token's subject, `api-key:<name>`). */
	submitter: string;
	/** When the proof was made (ms since the epoch). */
	iat: number;
	proof: string;
}

export function makeSubmitProof(
	credential: SignerCredential,
	submitter: string,
	records: readonly RecordPayload[],
	now = Date.now(),
): SubmitProof {
	return {
		submitter,
		iat: now,
		proof: signDetached(credential.privateKey, submitStatement(submitter, now, records)),
	};
}

/** Throws a 403 unless `proof` is the batcher's, for these records and this submitter, and fresh. */
export function checkSubmitProof(
	batcherKey: KeyObject,
	submission: {
		records: readonly RecordPayload[];
		submitter: string;
		iat?: unknown;
		proof?: unknown;
	},
	now = Date.now(),
): void {
	const { submitter, iat, proof } = submission;
	if (proof === undefined || proof === null || proof === "")
		throw new DomainError(
			"SUBMIT_PROOF_MISSING",
			"records.submit carries no submit proof: only a holder of the batcher's credential submits records",
		);
	if (typeof iat !== "number" || Math.abs(now - iat) > SUBMIT_PROOF_MAX_AGE_MS)
		throw new DomainError(
			"SUBMIT_PROOF_INVALID",
			`records.submit's proof was not made within ${SUBMIT_PROOF_MAX_AGE_MS / 1000} s of records' clock`,
		);
	if (!verifyDetached(batcherKey, submitStatement(submitter, iat, submission.records), proof))
		throw new DomainError(
			"SUBMIT_PROOF_INVALID",
			"records.submit's proof is not the batcher credential's signature over these records and this submitter",
		);
}
