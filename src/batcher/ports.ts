/**
 * What the batcher's logic calls, as small typed interfaces: its own store, the records
 * service, the signers and the event bus. The service wires them to the broker; unit tests
 * give plain objects.
 */
import type {
	Arrival,
	BatchDoc,
	BatchStatus,
	ClosedBatch,
	EventMap,
	Progress,
	RecordPayload,
	RecordStats,
	RunDoc,
	SignBatchParams,
	SignBatchResult,
	SignedUnder,
} from "../contract";

/** The batcher's two collections, `runs` and `batches`. */
export interface BatcherStore {
	insertRun(run: RunDoc): Promise<void>;
	getRun(runId: string): Promise<RunDoc | null>;
	runByIdempotencyKey(key: string): Promise<RunDoc | null>;
	/** The run left `running` by a stop or a crash, if any. */
	interruptedRun(): Promise<RunDoc | null>;
	/** Every run, newest first. */
	listRuns(): Promise<RunDoc[]>;
	updateRun(runId: string, fields: Partial<RunDoc>): Promise<void>;
	/** Recorded before dispatch, so that after a crash the store knows every batch that may have run. */
	insertBatch(batch: BatchDoc): Promise<void>;
	updateBatch(batchId: string, fields: Partial<BatchDoc>): Promise<void>;
	/** The run's batches still `pending`: dispatched, and not known to have ended. */
	pendingBatches(runId: string): Promise<BatchDoc[]>;
	/** Counts and sums over a run's batches, computed by the store. */
	batchSummary(runId: string): Promise<BatchSummary>;
}

export interface BatchSummary {
	total: number;
	byStatus: Partial<Record<BatchStatus, number>>;
	/** Signatures the signed batches stored, and records they found already signed. */
	stored: number;
	duplicates: number;
	/** Distinct keys of the signed batches. */
	keysUsed: number;
}

/** The records service, as the batcher uses it. */
export interface RecordsPort {
	/** The next `limit` unsigned records after `after`, ascending, with their payloads. */
	unsignedPage(after: string | undefined, limit: number): Promise<RecordPayload[]>;
	/** Of the records `ids`, those still without a signature, with their payloads. */
	unsignedAmong(ids: string[]): Promise<RecordPayload[]>;
	/** A follow run's page: the next `limit` unsigned records after arrival `afterSeq`, in arrival order. */
	unsignedArrivals(afterSeq: number, limit: number): Promise<Arrival[]>;
	progress(): Promise<Progress>;
	stats(): Promise<RecordStats>;
	/** Closes a batch that ended without its signer's reply: no signature is stored under it any more; what is, and its records still unsigned. */
	closeBatch(batchId: string, recordIds: string[]): Promise<ClosedBatch>;
	/** What is stored under a batch, by key and lease: how a batch is counted signed, never from its signer's word. */
	signedUnder(batchId: string): Promise<SignedUnder["signed"]>;
}

/** The signers, as the batcher reaches them. */
export interface SignersPort {
	/** Node ids offering `signer.signBatch` now. */
	available(): string[];
	/** Resolves when one is available, or after `timeoutMs`. */
	waitForAny(timeoutMs: number): Promise<void>;
	/** Whether a keyring offers `keyring.acquire` now, as this node's registry sees it. */
	keyringAvailable(): boolean;
	/**
	 * How many keys the keyring has, and how many are active (neither retired nor revoked), as
	 * `keyring.status` answers; null when no keyring answers now, or an earlier one that does not
	 * count active keys.
	 */
	keyringKeys(): Promise<{ keys: number; active: number } | null>;
	/**
	 * Sends a batch to one signer node, with a dispatch ticket naming that node (the port makes
	 * it with the batcher's credential); aborting `signal` fails the call at once.
	 */
	signBatch(
		params: Omit<SignBatchParams, "ticket">,
		options: { nodeID?: string; timeoutMs: number; signal: AbortSignal },
	): Promise<SignBatchResult>;
	/** The batches one signer node is working on, as it answers; rejects when it does not within `timeoutMs`. */
	inFlight(nodeID: string, timeoutMs: number): Promise<string[]>;
	/** The largest message the transport carries to a signer, or null when nothing limits it (in-process). */
	maxMessageBytes(): number | null;
}

export interface BatcherLogger {
	info(...args: unknown[]): void;
	warn(...args: unknown[]): void;
	error(...args: unknown[]): void;
}

export type Emit = <E extends keyof EventMap>(event: E, payload: EventMap[E]) => void;
