/**
 * Who may write to records over the bus: a piece of signatures only from the holder of its
 * batch's current lease (the keyring's lease token and the holder's store proof, checked
 * offline: src/identity/lease-token.ts), and a batch's closing only from the batcher (its
 * close proof, src/identity/ticket.ts), and submitted records only with the batcher credential's
 * submit proof (src/identity/submit-proof.ts), made with any batcher credential the keyring
 * has enrolled and not revoked (batcher-keys.ts). A refusal is a 403, logged with the caller's node.
 */
import type { CloseBatchParams, RecordPayload, StoreSignaturesParams } from "../contract";
import { KeyringTrust, type TrustSettings } from "../identity/authority";
import { busChecks } from "../identity/bus-checks";
import { CredentialSource, type CredentialSettings } from "../identity/credential";
import { StoreGate, StoreRefusedError } from "../identity/lease-token";
import { checkCloseProof } from "../identity/ticket";
import { checkSubmitProof } from "../identity/submit-proof";
import { DomainError, loggedRefusal } from "../errors";
import { BatcherKeys, type BatcherEnrolment } from "./batcher-keys";

export class RecordsIntake {
	private readonly gate: StoreGate;
	/** The batcher credentials whose close and submit proofs records takes. */
	private readonly batchers: BatcherKeys;

	constructor(
		trust: TrustSettings,
		batcherCredential: CredentialSettings,
		/** The keyring's enrolled batchers, or null when its store is in memory. */
		enrolledBatchers: (() => Promise<BatcherEnrolment[]>) | null,
		private readonly logger: { warn(line: string): void },
	) {
		this.gate = new StoreGate(new KeyringTrust(trust));
		this.batchers = new BatcherKeys(
			new CredentialSource(batcherCredential),
			enrolledBatchers,
			logger,
		);
	}

	/** Throws a 403 unless the piece comes from its lease's holder. */
	admitSignatures(params: StoreSignaturesParams, callerNode: string): void {
		if (!busChecks.on) return;
		this.refusalsLogged("storeSignatures", callerNode, () => this.gate.check(params));
	}

	/** Throws a 403 unless an enrolled batcher asks. */
	async admitClose(params: CloseBatchParams, callerNode: string): Promise<void> {
		if (!busChecks.on) return;
		const closed = await this.batchers.verify((key) =>
			checkCloseProof(key, params.batchId, params.proof),
		);
		this.refusalsLogged("closeBatch", callerNode, () => {
			if (!closed)
				throw new StoreRefusedError(
					`records.closeBatch of ${params.batchId} carries no close proof of an enrolled batcher`,
					"CLOSE_PROOF_INVALID",
					{ batchId: params.batchId },
				);
		});
	}

	/** Throws a 403 unless a holder of an enrolled batcher credential submits these records for this submitter. */
	async admitSubmission(
		submission: { records: RecordPayload[]; submitter: string; iat?: unknown; proof?: unknown },
		callerNode: string,
	): Promise<void> {
		// Never switched off: the bench's unchecked run measures the signing path, not intake.
		let refusal: unknown = null;
		const proven = await this.batchers.verify((key) => {
			try {
				checkSubmitProof(key, submission);
				return true;
			} catch (err) {
				// A missing or stale proof fails alike with every key; a bad signature says so once no key verifies.
				refusal = err;
				return false;
			}
		});
		this.refusalsLogged("submit", callerNode, () => {
			if (!proven)
				throw refusal instanceof DomainError
					? refusal
					: new DomainError(
							"SUBMIT_PROOF_INVALID",
							"records.submit's proof does not verify",
						);
		});
	}

	private refusalsLogged(action: string, callerNode: string, check: () => void): void {
		try {
			check();
		} catch (err) {
			throw loggedRefusal(err, this.logger, `records.${action}`, callerNode);
		}
	}
}
