/**
 * The records service's store: `records` and `signatures`. One interface, two backends
 * (src/records/sqlite-store.ts, src/records/mongo-store.ts); the unique key on
 * `signatures.recordId` is the guard against a second signature on both.
 */
import type {
	Arrival,
	ClosedBatch,
	Page,
	RecordPayload,
	RecordsList,
	RecordView,
	SignatureDoc,
} from "../contract";
import type { TransparencyLog } from "../tlog/log";

/** A signature row with its place in the signature log (null: not in it). */
export type LoggedSignature = SignatureDoc & { logIndex: number | null };
import type { SubmitOutcome } from "./submission";

/** A stored record: its payload and, for a submitted one, who submitted it and when. */
export interface StoredRecord extends RecordPayload {
	submittedBy: string | null;
	submittedAt: string | null;
}

/** The signatures of one batch, all made with one key under one lease (rule 3). */
export interface SignedBatch {
	batchId: string;
	keyId: string;
	leaseId: string;
	signatures: Array<{ recordId: string; jws: string; signedAt: string }>;
}

export interface RecordsStore {
	/** Every stored signature, in the order the pieces were stored (docs/design.md §8.4). */
	readonly signatureLog: TransparencyLog;
	/** Records stored; a stored record never changes. */
	recordCount(): Promise<number>;
	/** Records with a signature. */
	signedCount(): Promise<number>;
	/** Adds records whose ids are not stored yet (seeding), next in arrival order. */
	insertRecords(records: RecordPayload[]): Promise<void>;
	/**
	 * Stores a submission whole, next in arrival order, naming its submitter: records whose id is
	 * stored with the same data are replays (left as they are); if any id is stored with other
	 * data, nothing is stored (RecordConflictError). Submissions are stored one at a time.
	 */
	submitRecords(
		records: RecordPayload[],
		submitter: string,
		submittedAt: string,
	): Promise<SubmitOutcome>;
	/** The next `limit` unsigned records after arrival `afterSeq`, in arrival order (a follow run's pages). */
	unsignedArrivals(afterSeq: number, limit: number): Promise<Arrival[]>;
	/** The next `limit` records after `after` (ascending ids) that have no signature. */
	unsignedRecords(after: string | undefined, limit: number): Promise<RecordPayload[]>;
	/** Of the records `ids`, those without a signature, in the given order; unknown ids are left out. */
	unsignedAmong(ids: string[]): Promise<RecordPayload[]>;
	/** Bytes of the largest record's id plus data (0 when there is none). */
	maxRecordBytes(): Promise<number>;
	/** The last `seq` given (0 when there is no record). */
	lastArrival(): Promise<number>;
	/**
	 * Stores every signature whose record has none yet; the rest are duplicates and keep the
	 * first signature. A concurrent writer can make a signature a duplicate, never a second one.
	 */
	storeSignatures(batch: SignedBatch): Promise<{ stored: number; duplicates: number }>;
	/**
	 * Closes a batch that ended without its signer's reply: from then on its signatures are
	 * refused (BatchClosedError), so what this answers stays true. Closing twice is harmless.
	 */
	closeBatch(batchId: string, recordIds: string[]): Promise<ClosedBatch>;
	/** The signatures stored under a batch, counted by key and lease. */
	signedUnder(batchId: string): Promise<ClosedBatch["signed"]>;
	record(id: string): Promise<StoredRecord | null>;
	/**
	 * Up to `limit` records after `after` in id order, with their signatures: every record, or
	 * (with `signed`) only the signed or only the unsigned ones. `next` is null at the end.
	 */
	list(
		after: string | undefined,
		limit: number,
		signed: boolean | undefined,
	): Promise<RecordsList>;
	signature(recordId: string): Promise<SignatureDoc | null>;
	/** A signature with its leaf's index in `signatureLog` (null: not in it). */
	loggedSignature(recordId: string): Promise<LoggedSignature | null>;
	/** One page of `records` (as `{ _id, data }`) or `signatures` (with `_id` = recordId), by id. */
	page(
		collection: "records" | "signatures",
		after: string | undefined,
		limit: number,
	): Promise<Page>;
	/** Resolves when the store answers (readiness). */
	ping(): Promise<void>;
	close(): Promise<void>;
}

/** Signatures for a batch that was closed (it ended without its signer's reply): refused, none stored. */
export class BatchClosedError extends Error {
	constructor(readonly batchId: string) {
		super(
			`Batch ${batchId} was closed after it ended without its signer's reply: its signatures are refused, its unsigned records go in a new batch`,
		);
		this.name = "BatchClosedError";
	}
}

/**
 * What closing `batchId` answers once it is closed: the signatures stored under it and its
 * records still unsigned (none when every record is signed under it: the lookup is skipped).
 */
export async function closedBatch(
	store: Pick<RecordsStore, "signedUnder" | "unsignedAmong">,
	batchId: string,
	recordIds: string[],
): Promise<ClosedBatch> {
	const signed = await store.signedUnder(batchId);
	const all = signed.reduce((sum, group) => sum + group.count, 0) === recordIds.length;
	return {
		signed,
		unsigned: recordIds.length && !all ? await store.unsignedAmong(recordIds) : [],
	};
}

/** A stored signature as a record's view shows it (records.get, records.list). */
export function signatureView(
	s: Pick<SignatureDoc, "keyId" | "batchId" | "leaseId" | "jws" | "signedAt">,
): NonNullable<RecordView["signature"]> {
	return {
		keyId: s.keyId,
		batchId: s.batchId,
		leaseId: s.leaseId,
		jws: s.jws,
		signedAt: s.signedAt,
	};
}
