/**
 * Who may write to records over the bus: a piece of signatures only from the holder of its
 * batch's current lease (the keyring's lease token and the holder's store proof, checked
 * offline: src/identity/lease-token.ts), and a batch's closing only from the batcher (its
 * close proof, src/identity/ticket.ts), and submitted records only with the batcher credential's
 * submit proof (src/identity/submit-proof.ts). A refusal is a 403, logged with the caller's node.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import type { CloseBatchParams, RecordPayload, StoreSignaturesParams } from "../contract";
import { KeyringTrust, type TrustSettings } from "../identity/authority";
import { busChecks } from "../identity/bus-checks";
import { loadCredential, type CredentialSettings } from "../identity/credential";
import { StoreGate, StoreRefusedError } from "../identity/lease-token";
import { checkCloseProof } from "../identity/ticket";
import { checkSubmitProof } from "../identity/submit-proof";
import { loggedRefusal } from "../errors";

export class RecordsIntake {
	private readonly gate: StoreGate;
	/** The batcher's public key: only its close proofs close a batch. */
	private readonly batcherKey: KeyObject;

	constructor(
		trust: TrustSettings,
		batcherCredential: CredentialSettings,
		private readonly logger: { warn(line: string): void },
	) {
		this.gate = new StoreGate(new KeyringTrust(trust));
		this.batcherKey = createPublicKey(loadCredential(batcherCredential).privateKey);
	}

	/** Throws a 403 unless the piece comes from its lease's holder. */
	admitSignatures(params: StoreSignaturesParams, callerNode: string): void {
		if (!busChecks.on) return;
		this.refusalsLogged("storeSignatures", callerNode, () => this.gate.check(params));
	}

	/** Throws a 403 unless the batcher asks. */
	admitClose(params: CloseBatchParams, callerNode: string): void {
		if (!busChecks.on) return;
		this.refusalsLogged("closeBatch", callerNode, () => {
			if (!checkCloseProof(this.batcherKey, params.batchId, params.proof))
				throw new StoreRefusedError(
					`records.closeBatch of ${params.batchId} carries no close proof of the batcher`,
					"CLOSE_PROOF_INVALID",
					{ batchId: params.batchId },
				);
		});
	}

	/** Throws a 403 unless a holder of the batcher's credential submits these records for this submitter. */
	admitSubmission(
		submission: { records: RecordPayload[]; submitter: string; iat?: unknown; proof?: unknown },
		callerNode: string,
	): void {
		// Never switched off: the bench's unchecked run measures the signing path, not intake.
		this.refusalsLogged("submit", callerNode, () =>
			checkSubmitProof(this.batcherKey, submission),
		);
	}

	private refusalsLogged(action: string, callerNode: string, check: () => void): void {
		try {
			check();
		} catch (err) {
			throw loggedRefusal(err, this.logger, `records.${action}`, callerNode);
		}
	}
}
