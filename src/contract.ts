/**
 * The shapes that cross service boundaries: stored documents, action params (validator
 * schemas and their TypeScript types side by side) and event payloads. Callers and callees
 * both import from here so they cannot drift apart.
 */
import type { JWK } from "jose";

// ---------------------------------------------------------------- stored documents

/** `records` collection, owned by the records service. `_id` is the record id. */
export interface RecordDoc {
	_id: string;
	data: string;
}

/** `signatures` collection, owned by records. Unique index on `recordId`. */
export interface SignatureDoc {
	_id?: string;
	recordId: string;
	keyId: string;
	batchId: string;
	leaseId: string;
	/** Detached compact JWS: `<protected>..<signature>` (DESIGN.md section 5). */
	jws: string;
	signedAt: string;
}

/** `keys` collection, owned by the keyring. The private key only ever sealed. */
export interface KeyDoc {
	_id?: string;
	keyId: string;
	createdAt: string;
	publicJwk: JWK;
	/** JWE (`dir`, `A256GCM`) of the private JWK under the keyring master key. */
	sealedPrivateKey: string;
}

export type LeaseEnd = "released" | "expired";

/** `leases` collection, owned by the keyring. One document per grant. */
export interface LeaseDoc {
	_id?: string;
	leaseId: string;
	keyId: string;
	holder: string;
	grantSeq: number;
	grantedAt: string;
	expiresAt: string;
	endSeq: number | null;
	endedAt: string | null;
	end: LeaseEnd | null;
}

export type BatchStatus = "pending" | "signed" | "failed" | "abandoned";

/** `batches` collection, owned by the batcher. */
export interface BatchDoc {
	_id?: string;
	batchId: string;
	runId: string;
	keyId: string | null;
	leaseId: string | null;
	recordIds: string[];
	attempt: number;
	status: BatchStatus;
	startedAt: string;
	finishedAt: string | null;
	signer?: string | null;
	error?: string | null;
	/** Signatures this batch stored, and records it found already signed. */
	stored?: number;
	duplicates?: number;
}

export type RunStatus = "running" | "completed" | "failed";

/** `runs` collection, owned by the batcher. */
export interface RunDoc {
	_id?: string;
	runId: string;
	batchSize: number;
	status: RunStatus;
	startedAt: string;
	finishedAt: string | null;
	report?: RunReport | null;
	error?: string;
	idempotencyKey?: string;
}

export interface RunReport {
	runId: string;
	batchSize: number;
	records: number;
	signedThisRun: number;
	batches: number;
	failedBatches: number;
	keysUsed: number;
	duplicates: number;
	seconds: number;
	recordsPerSecond: number;
}

// ---------------------------------------------------------------- records actions

export interface UnsignedIdsParams {
	after?: string;
	limit: number;
}
export const unsignedIdsParams = {
	after: { type: "string", optional: true },
	limit: { type: "number", integer: true, positive: true, convert: true }
};

export interface FetchRecordsParams {
	ids: string[];
}
export const fetchRecordsParams = {
	ids: { type: "array", items: "string", min: 1 }
};

export interface StoreSignaturesParams {
	signatures: SignatureDoc[];
}
export const storeSignaturesParams = {
	signatures: {
		type: "array",
		min: 1,
		items: {
			type: "object",
			props: {
				recordId: "string",
				keyId: "string",
				batchId: "string",
				leaseId: "string",
				jws: "string",
				signedAt: "string"
			}
		}
	}
};
export interface StoreSignaturesResult {
	stored: number;
	duplicates: number;
}

export interface Progress {
	records: number;
	signed: number;
}

// ---------------------------------------------------------------- paging of owned collections

/** Every data-owning service pages its collections by `_id` for the audit and the export. */
export interface PageParams {
	collection: string;
	after?: string;
	limit?: number;
}
export const pageParams = {
	collection: "string",
	after: { type: "string", optional: true },
	limit: { type: "number", integer: true, positive: true, max: 5000, optional: true, convert: true }
};

// ---------------------------------------------------------------- keyring actions

export interface AcquireParams {
	holder: string;
	/** The signer's X25519 session public key: the private key is sealed to it. */
	sessionKey: JWK;
	/** How long the caller is prepared to wait for a free key. */
	waitMs?: number;
}
export const acquireParams = {
	holder: { type: "string", min: 1 },
	sessionKey: { type: "object", props: { kty: { type: "equal", value: "OKP" }, crv: { type: "equal", value: "X25519" }, x: "string" } },
	waitMs: { type: "number", integer: true, min: 0, optional: true }
};

export interface Lease {
	leaseId: string;
	keyId: string;
	expiresAt: string;
	/** Compact JWE (`ECDH-ES+A256KW`, `A256GCM`) of the private JWK, to `sessionKey`. */
	key: string;
}

export interface LeaseRef {
	leaseId: string;
}
export const leaseRefParams = { leaseId: { type: "string", min: 1 } };

export interface LeaseChange {
	leaseId: string;
	/** False when the lease was no longer current: nothing changed. */
	changed: boolean;
	expiresAt?: string;
	reason?: string;
}

// ---------------------------------------------------------------- batcher and signer actions

export interface StartRunParams {
	batchSize?: number;
	/** A client's key for retrying a start: the same key gives the same run. */
	idempotencyKey?: string;
}
export interface SignBatchParams {
	batchId: string;
	runId: string;
	recordIds: string[];
}
export const signBatchParams = {
	batchId: { type: "string", min: 1 },
	runId: { type: "string", min: 1 },
	recordIds: { type: "array", items: "string", min: 1 }
};
export interface SignBatchResult {
	batchId: string;
	keyId: string;
	leaseId: string;
	signer: string;
	stored: number;
	duplicates: number;
	leaseWaitMs: number;
}

// ---------------------------------------------------------------- events

export const Events = {
	runStarted: "run.started",
	runCompleted: "run.completed",
	leaseGranted: "lease.granted",
	leaseReleased: "lease.released",
	leaseExpired: "lease.expired",
	batchSigned: "batch.signed",
	batchFailed: "batch.failed"
} as const;

export interface RunStartedEvent {
	runId: string;
	batchSize: number;
	records: number;
	alreadySigned: number;
	resumed: boolean;
}
export interface RunCompletedEvent {
	report: RunReport;
}
export interface LeaseEvent {
	leaseId: string;
	keyId: string;
	holder: string;
	seq: number;
	waitMs?: number;
}
export interface BatchSignedEvent {
	runId: string;
	batchId: string;
	keyId: string;
	signer: string;
	size: number;
	stored: number;
	duplicates: number;
	latencyMs: number;
	leaseWaitMs: number;
}
export interface BatchFailedEvent {
	runId: string;
	batchId: string;
	size: number;
	error: string;
}
