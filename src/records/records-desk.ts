/**
 * What the records service answers over the bus, with no broker in it: pieces of signatures
 * taken only from their lease's holder and counted by batch (intake.ts, batch-tally.ts), batches
 * closed only by the batcher, what is stored under a batch, and record reads. A closed batch's
 * late signatures and an unknown record are the caller's errors (docs/design.md §6.4, §7.3).
 */
import type {
	Arrival,
	CloseBatchParams,
	ClosedBatch,
	Progress,
	RecordStats,
	RecordView,
	SignedUnder,
	StoreSignaturesParams,
	StoreSignaturesResult,
	SubmitRecordsParams,
	SubmitRecordsResult,
	UnsignedRecords,
} from "../contract";
import { DomainError } from "../errors";
import type { TrustSettings } from "../identity/authority";
import type { CredentialSettings } from "../identity/credential";
import { BatchTally } from "./batch-tally";
import { RecordsIntake, type KeyringStoreReads } from "./intake";
import { seedIfEmpty } from "./records";
import { BatchClosedError, signatureView, type RecordsStore } from "./store";
import { validateSubmission } from "./submission";

export class RecordsDesk {
	/** What this process stored under recent batches: `signedUnder` without a query per batch. */
	private readonly tally = new BatchTally();

	/** Who may store signatures and close batches. */
	private readonly intake: RecordsIntake;

	/** `trust`: the keyring's public key (lease tokens); `batcherCredential`: whose close proofs close batches. */
	constructor(
		private readonly store: RecordsStore,
		settings: { trust: TrustSettings; batcherCredential: CredentialSettings },
		private readonly logger: { warn(line: string): void },
		/** The keyring's store (src/keyring/enrolments.ts), or null when it is kept in memory. */
		keyringStore: KeyringStoreReads | null = null,
	) {
		this.intake = new RecordsIntake(
			settings.trust,
			settings.batcherCredential,
			keyringStore,
			logger,
		);
	}

	/** Learns the keys the keyring revoked before this node started (docs/design.md §5.8). */
	readRevocations(): Promise<void> {
		return this.intake.readRevocations();
	}

	/** Reads nothing more of the keyring's store. */
	stop(): Promise<void> {
		return this.intake.stop();
	}

	/** Seeds `count` records into an empty store, and says so. */
	async seed(count: number, log: (line: string) => void): Promise<void> {
		const started = Date.now();
		const seeded = await seedIfEmpty(this.store, count);
		if (seeded) log(`Seeded ${seeded} records in ${Date.now() - started} ms`);
	}

	/** The next `limit` unsigned records after `after` (ascending ids), with their payloads. */
	async unsignedPage(after: string | undefined, limit: number): Promise<UnsignedRecords> {
		return { records: await this.store.unsignedRecords(after, limit) };
	}

	/** Of the given records, those without a signature (a failed batch's retry set), with their payloads. */
	async unsignedAmong(ids: string[]): Promise<UnsignedRecords> {
		return { records: await this.store.unsignedAmong(ids) };
	}

	/** The next `limit` unsigned records after arrival `afterSeq`, in arrival order: a follow run's page. */
	async unsignedArrivals(afterSeq: number, limit: number): Promise<{ records: Arrival[] }> {
		return { records: await this.store.unsignedArrivals(afterSeq, limit) };
	}

	/**
	 * Stores submitted records (docs/design.md §4.4): a call without a submit proof is refused
	 * (403) before anything else, bad input (422) and a conflict (409) store nothing.
	 */
	async submit(params: SubmitRecordsParams, callerNode: string): Promise<SubmitRecordsResult> {
		const { submitter, iat, proof } = params;
		if (proof === undefined || proof === "")
			await this.intake.admitSubmission({ records: [], submitter, iat, proof }, callerNode);
		const records = validateSubmission(params.records);
		await this.intake.admitSubmission({ records, submitter, iat, proof }, callerNode);
		const submittedAt = new Date().toISOString();
		const outcome = await this.store.submitRecords(records, submitter, submittedAt);
		return { ...outcome, submittedAt };
	}

	/** Stores a piece sent by its lease's holder; already-signed records keep their first signature. */
	async storeSignatures(
		params: StoreSignaturesParams,
		callerNode: string,
	): Promise<StoreSignaturesResult> {
		this.intake.admitSignatures(params, callerNode);
		try {
			const result = await this.store.storeSignatures(params);
			this.tally.add(params.batchId, params.keyId, params.leaseId, result.stored);
			return result;
		} catch (err) {
			if (err instanceof BatchClosedError)
				throw new DomainError("BATCH_CLOSED", err.message, { batchId: err.batchId });
			throw err;
		}
	}

	/** The keyring's `key.revoked` notice: from now on no signature the key made after its revocation is stored. */
	keyRevoked(notice: unknown, callerNode: string): void {
		const revocation = this.intake.keyRevoked(notice, callerNode);
		if (revocation)
			this.logger.warn(
				`Key ${revocation.key} revoked at ${revocation.at}: pieces with its signatures made after that are refused`,
			);
	}

	/** Closes a batch for the batcher: what is stored under it, and its records still unsigned. */
	async closeBatch(params: CloseBatchParams, callerNode: string): Promise<ClosedBatch> {
		await this.intake.admitClose(params, callerNode);
		return this.store.closeBatch(params.batchId, params.recordIds);
	}

	async signedUnder(batchId: string): Promise<SignedUnder> {
		return { signed: this.tally.get(batchId) ?? (await this.store.signedUnder(batchId)) };
	}

	async record(id: string): Promise<RecordView> {
		const record = await this.store.record(id);
		if (!record) throw new DomainError("RECORD_NOT_FOUND", `Record "${id}" not found`, { id });
		const signature = await this.store.signature(id);
		return {
			id: record.id,
			data: record.data,
			submittedBy: record.submittedBy,
			submittedAt: record.submittedAt,
			signature: signature && signatureView(signature),
		};
	}

	async progress(): Promise<Progress> {
		return { records: await this.store.recordCount(), signed: await this.store.signedCount() };
	}

	/** How many records there are and how large the largest is: what a run's batch size must fit. */
	async stats(): Promise<RecordStats> {
		return {
			records: await this.store.recordCount(),
			maxRecordBytes: await this.store.maxRecordBytes(),
			lastSeq: await this.store.lastArrival(),
		};
	}
}
