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
import { checkKeyRevocation, type KeyRevocation } from "../identity/key-revocation";
import { DomainError, loggedRefusal } from "../errors";
import { EnrolmentReads, REFRESH_MS } from "../identity/enrolment-reads";
import type { RevokedKey } from "../keyring/store";
import { BatcherKeys, type BatcherEnrolment } from "./batcher-keys";

/** What records reads of the keyring's store (src/keyring/enrolments.ts). */
export interface KeyringStoreReads {
	enrolledBatchers(): Promise<BatcherEnrolment[]>;
	revokedKeys(): Promise<RevokedKey[]>;
}

/** How often, at most, records reads the keyring's revoked keys again while pieces arrive. */
export const REVOCATIONS_READ_MS = REFRESH_MS;

/** A piece with a signature made after its key's revocation (docs/design.md §5.8): 409, nothing of it stored. */
export class KeyRevokedError extends DomainError {
	constructor(keyId: string, at: string, signedAt: string, batchId: string) {
		super(
			"KEY_REVOKED",
			`Key ${keyId} was revoked at ${at}; this piece of batch ${batchId} holds a signature made after that (${signedAt}): nothing of it is stored, and its records go again under another key`,
			{ keyId, revokedAt: at, batchId },
		);
	}
}

export class RecordsIntake {
	private readonly gate: StoreGate;
	private readonly trust: KeyringTrust;
	/** Revoked keys this node has heard of, with since when (ms): their later signatures are refused. */
	private readonly revoked = new Map<string, { at: string; ms: number }>();
	/** The batcher credentials whose close and submit proofs records takes. */
	private readonly batchers: BatcherKeys;
	/** When the revoked keys are read from the keyring's store; null when it is kept in memory. */
	private readonly revocations: EnrolmentReads | null;
	private stopped = false;

	constructor(
		trust: TrustSettings,
		batcherCredential: CredentialSettings,
		/** The keyring's store, or null when it is kept in memory (then only notices tell revocations). */
		keyringStore: KeyringStoreReads | null,
		private readonly logger: { warn(line: string): void },
		now: () => number = Date.now,
	) {
		this.trust = new KeyringTrust(trust);
		this.gate = new StoreGate(this.trust);
		this.batchers = new BatcherKeys(
			new CredentialSource(batcherCredential),
			keyringStore && (() => keyringStore.enrolledBatchers()),
			logger,
		);
		this.revocations =
			keyringStore && new EnrolmentReads(() => this.loadRevocations(keyringStore), now);
	}

	/**
	 * Reads the keys the keyring revoked from its store, as the node starts: a `key.revoked`
	 * notice is heard only by the nodes up when it is sent, so a records node that starts, or was
	 * cut off, after a revocation learns it here. Read again at most every REVOCATIONS_READ_MS
	 * while pieces arrive (in the background: a piece waits for no read).
	 */
	async readRevocations(): Promise<void> {
		if (!this.stopped) await this.revocations?.read();
	}

	/** No read starts any more, and the one under way has ended: the keyring's store may close. */
	async stop(): Promise<void> {
		this.stopped = true;
		await this.revocations?.settled();
	}

	/** One read; a failure is logged and counts as a read, so the next is REFRESH_MS later. */
	private async loadRevocations(keyringStore: KeyringStoreReads): Promise<void> {
		try {
			for (const { key, at } of await keyringStore.revokedKeys())
				this.takeRevocation(key, at);
		} catch (err) {
			this.logger.warn(
				`Could not read the keyring's revoked keys (${(err as Error).message}): pieces are checked against the revocations known before`,
			);
		}
	}

	/**
	 * Throws a 403 unless the piece comes from its lease's holder, and a 409 when its key was
	 * revoked before one of its signatures was made.
	 */
	admitSignatures(params: StoreSignaturesParams, callerNode: string): void {
		if (!this.stopped) this.revocations?.refreshIfStale();
		const revoked = this.revoked.get(params.keyId);
		if (revoked) {
			const late = params.signatures.find((s) => Date.parse(s.signedAt) > revoked.ms);
			if (late)
				throw new KeyRevokedError(params.keyId, revoked.at, late.signedAt, params.batchId);
		}
		if (!busChecks.on) return;
		this.refusalsLogged("storeSignatures", callerNode, () => this.gate.check(params));
	}

	/**
	 * A `key.revoked` notice: taken when the keyring this node trusts signed it, else logged and
	 * dropped (an event on the bus can come from anyone). Returns the revocation taken, or null.
	 */
	keyRevoked(notice: unknown, callerNode: string): KeyRevocation | null {
		const revocation = checkKeyRevocation(this.trust, notice);
		if (!revocation) {
			this.logger.warn(
				`Dropped a key.revoked notice from node ${callerNode}: it is not signed by the keyring this node trusts`,
			);
			return null;
		}
		this.takeRevocation(revocation.key, revocation.at);
		return revocation;
	}

	private takeRevocation(key: string, at: string): void {
		if (!this.revoked.has(key)) this.revoked.set(key, { at, ms: Date.parse(at) });
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
