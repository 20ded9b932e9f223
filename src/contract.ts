/**
 * The shapes that cross service boundaries: stored documents, action params (each written once,
 * as the validator schema its service checks calls with, its TypeScript type derived from it:
 * src/param-schema.ts), action results and event payloads, and the typed map of every action
 * name to its params and result and every event to its payload. Callers use `call()` and
 * `emit()` below, so caller and callee cannot drift apart.
 */
import type { CallingOptions } from "moleculer";
import type { JWK } from "jose";
import type { TokenKeyRef } from "./pkcs11/token";
import {
	defineParams,
	signedStatement,
	type ParamsOf,
	type RuleObject,
	type RuleValue,
} from "./param-schema";

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
	/** Detached compact JWS: `<protected>..<signature>` (docs/design.md §8.1). */
	jws: string;
	signedAt: string;
}

/** `keys` collection, owned by the keyring. The private key only ever sealed. */
export interface KeyDoc {
	_id?: string;
	keyId: string;
	createdAt: string;
	publicJwk: JWK;
	/** JWE (`dir`, `A256GCM`) of the private JWK under the keyring master key; "" for a key in a token. */
	sealedPrivateKey: string;
	/** KEY_STORE=pkcs11: the key's label and CKA_ID in the token, which holds its private half (docs/design.md §5.9). */
	tokenKey?: TokenKeyRef | null;
	/**
	 * Its life (docs/design.md §5.8), each a seq of the lease log: added after the keyring's
	 * first start (absent or null: there from the start), retired (`retiredBy` "operator" or
	 * "max-uses"), revoked (compromised, with the operator's reason).
	 */
	addedSeq?: number | null;
	retiredSeq?: number | null;
	retiredAt?: string | null;
	retiredBy?: string | null;
	revokedSeq?: number | null;
	revokedAt?: string | null;
	revokedReason?: string | null;
}

/** A key's lifecycle fields, all null: a key there from the start, never retired or revoked. */
export const KEY_LIFECYCLE_NONE = {
	addedSeq: null,
	retiredSeq: null,
	retiredAt: null,
	retiredBy: null,
	revokedSeq: null,
	revokedAt: null,
	revokedReason: null,
} as const satisfies Partial<KeyDoc>;

/** A key's lifecycle fields, each present (null when unset). */
export type KeyLifecycle = { -readonly [F in keyof typeof KEY_LIFECYCLE_NONE]: KeyDoc[F] | null };

/** The events of the keys' lives, from their lifecycle fields, in seq order. */
export function keyEventsOf(docs: Iterable<KeyDoc>): KeyEvent[] {
	const events: KeyEvent[] = [];
	for (const doc of docs) {
		const life: Array<[KeyEvent["event"], unknown, string | null | undefined, string | null]> =
			[
				["added", doc.addedSeq, doc.createdAt, null],
				["retired", doc.retiredSeq, doc.retiredAt, doc.retiredBy ?? null],
				["revoked", doc.revokedSeq, doc.revokedAt, doc.revokedReason ?? null],
			];
		for (const [event, seq, at, reason] of life)
			if (typeof seq === "number")
				events.push({ seq, keyId: doc.keyId, event, at: at ?? doc.createdAt, reason });
	}
	return events.sort((a, b) => a.seq - b.seq);
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

/**
 * `pending` until it ends; then what its stored signatures say: `signed` (every record of it
 * signed), `partial` (some under it, some still unsigned), `failed` (none under it).
 * `abandoned` is only in stores written before batches were reconciled from their signatures.
 */
export type BatchStatus = "pending" | "signed" | "partial" | "failed" | "abandoned";

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
	/** Signatures this batch stored, records it found already signed, and (once ended) its records still unsigned. */
	stored?: number;
	duplicates?: number;
	unsigned?: number;
	/**
	 * Why it holds fewer records than its run's batch size (docs/design.md §7.7): `lingered` (a
	 * follow run's oldest waiting record waited LINGER_MS), `last` (the end of a run's records),
	 * `retry` (a failed batch's records still unsigned); null when it is full. Absent in stores
	 * from before it was kept.
	 */
	short?: BatchShort | null;
}

export type BatchShort = "lingered" | "last" | "retry";

/** The fields every batch has from its first write, in the stored order: the store's first columns and the export's (docs/design.md §8.3). */
export const BATCH_FIELDS = [
	"batchId",
	"runId",
	"keyId",
	"leaseId",
	"recordIds",
	"attempt",
	"status",
	"startedAt",
	"finishedAt",
] as const satisfies ReadonlyArray<keyof BatchDoc>;

/** `cancelled`: stopped by batcher.cancel; its unsigned records are signed by a later run. */
export type RunStatus = "running" | "completed" | "failed" | "cancelled";

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
	/** A client's key for retrying a start, and what it asked for then (a repeat must ask the same). */
	idempotencyKey?: string;
	requestFingerprint?: string;
	/** When batcher.cancel asked it to stop (kept, so a restart finishes the cancel). */
	cancelRequestedAt?: string | null;
	/** A follow run (docs/design.md §7.7): it does not end when the store is all signed, it signs records as they arrive. */
	follow?: boolean;
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
	/** From the run's start to its end, including any time it was stopped before resuming. */
	seconds: number;
	recordsPerSecond: number;
	/** When the run last resumed after a stop or crash; absent for a run that never stopped. */
	resumedAt?: string;
}

// ---------------------------------------------------------------- records actions

/** A record as a signer signs it (docs/design.md §8.1: the payload is `{ id, data }`). */
const recordPayloadRule = {
	type: "object",
	props: { id: "string", data: "string" },
	strict: "remove",
} as const satisfies RuleObject;
export type RecordPayload = RuleValue<typeof recordPayloadRule>;

/** The next `limit` unsigned records after `after`, ascending. */
export const unsignedPageParams = defineParams({
	after: { type: "string", optional: true },
	limit: { type: "number", integer: true, positive: true, convert: true },
});
export type UnsignedPageParams = ParamsOf<typeof unsignedPageParams>;

export const recordIdsParams = defineParams({
	ids: { type: "array", items: "string", min: 1 },
});
export type RecordIdsParams = ParamsOf<typeof recordIdsParams>;

/** A record in arrival order, as a follow run pages them (`records.unsignedArrivals`). */
export interface Arrival extends RecordPayload {
	/** Its place in arrival order (docs/design.md §4.4). */
	seq: number;
	/** When it was submitted; null for a seeded record (it has waited since the store was seeded). */
	submittedAt: string | null;
}

/** The next `limit` unsigned records after arrival `afterSeq`, in arrival order. */
export const unsignedArrivalsParams = defineParams({
	afterSeq: { type: "number", integer: true, min: 0, convert: true },
	limit: { type: "number", integer: true, positive: true, convert: true },
});
export type UnsignedArrivalsParams = ParamsOf<typeof unsignedArrivalsParams>;

/**
 * `records.submit`: records to store, with the submitter and the batcher credential's proof over
 * both (src/identity/submit-proof.ts). `records` passes the validator as any: records checks it
 * itself (src/records/submission.ts), so a refusal names the field and nothing is stored.
 */
export const submitRecordsParams = defineParams({
	records: {
		type: "any",
		expects: {
			type: "array",
			min: 1,
			max: 1000,
			items: { type: "object", props: { id: "string", data: "string" } },
		},
	},
	submitter: { type: "string", min: 1, max: 200 },
	iat: { type: "number", integer: true },
	// A call without it is refused by records (403, logged with the caller's node).
	proof: signedStatement(256),
});
export type SubmitRecordsParams = ParamsOf<typeof submitRecordsParams>;
export interface SubmitRecordsResult {
	/** Records stored by this call. */
	stored: number;
	/** Records already stored with the same data: a replay, changed nothing. */
	replayed: number;
	/** When they were stored. */
	submittedAt: string;
}

/** Records with their payloads: what a batch carries to its signer. */
export interface UnsignedRecords {
	records: RecordPayload[];
}

/** What the batcher needs to know of the records before a run: their number and the largest one. */
export interface RecordStats {
	records: number;
	/** Bytes of the largest record's id plus data: how large a batch of the run's size can grow. */
	maxRecordBytes: number;
	/** The last record's place in arrival order (docs/design.md §4.4): what a run over the store as it is ends at. */
	lastSeq: number;
}

/**
 * The signatures of one batch, all made with its one key under its one lease (rule 3), sent by
 * the lease's holder: its lease token and its store proof over this piece (src/identity/lease-token.ts).
 */
export const storeSignaturesParams = defineParams({
	batchId: { type: "string", min: 1 },
	keyId: { type: "string", min: 1 },
	leaseId: { type: "string", min: 1 },
	signatures: {
		type: "array",
		min: 1,
		items: {
			type: "object",
			props: { recordId: "string", jws: "string", signedAt: "string" },
			strict: "remove",
		},
	},
	// A call without them is refused by records (403, logged with the caller's node).
	/** The keyring's lease token for this lease and batch. */
	token: signedStatement(16_384),
	/** The holder's signature over this piece with its credential. */
	proof: signedStatement(256),
});
export type StoreSignaturesParams = ParamsOf<typeof storeSignaturesParams>;
export interface StoreSignaturesResult {
	stored: number;
	duplicates: number;
}

/**
 * `records.closeBatch`: after it, no signature is stored under the batch (a late signer is
 * refused with BATCH_CLOSED). Closing again answers the same.
 */
export const closeBatchParams = defineParams({
	batchId: { type: "string", min: 1 },
	recordIds: { type: "array", items: "string" },
	/** The batcher's close proof for the batch (src/identity/ticket.ts): only the batcher closes batches. */
	proof: signedStatement(256),
});
export type CloseBatchParams = ParamsOf<typeof closeBatchParams>;

/** `records.signedUnder`: what is stored under one batch, by key and lease: how the batcher counts a batch signed. */
export const signedUnderParams = defineParams({ batchId: { type: "string", min: 1 } });
export type SignedUnderParams = ParamsOf<typeof signedUnderParams>;
export interface SignedUnder {
	signed: Array<{ keyId: string; leaseId: string; count: number }>;
}
/** What a closed batch holds: its signatures by key and lease (one group, unless a rule broke), and its records still unsigned. */
export interface ClosedBatch {
	signed: Array<{ keyId: string; leaseId: string; count: number }>;
	unsigned: RecordPayload[];
}

export interface Progress {
	records: number;
	signed: number;
}

// ---------------------------------------------------------------- paging of owned collections

/** Every data-owning service pages its collections by `_id` for the audit and the export. */
export const pageParams = defineParams({
	collection: "string",
	after: { type: "string", optional: true },
	limit: {
		type: "number",
		integer: true,
		positive: true,
		max: 5000,
		optional: true,
		convert: true,
	},
});
export type PageParams = ParamsOf<typeof pageParams>;

// ---------------------------------------------------------------- keyring actions

export const acquireParams = defineParams({
	/** The signer's X25519 session public key: the private key is sealed to it. */
	sessionKey: {
		type: "object",
		props: {
			kty: { type: "equal", value: "OKP" },
			crv: { type: "equal", value: "X25519" },
			x: "string",
		},
	},
	/** How long the caller is prepared to wait for a free key. */
	waitMs: { type: "number", integer: true, min: 0, optional: true },
	// A request without them is refused by the keyring (403, logged with the caller's node).
	/** A signer proof for this node and session key (src/identity/proof.ts): the holder is the node it names. */
	proof: signedStatement(2_048),
	/** The batch's dispatch ticket, naming this node (src/identity/ticket.ts): a key is granted for a recorded batch only. */
	ticket: signedStatement(16_384),
});
export type AcquireParams = ParamsOf<typeof acquireParams>;

/**
 * What a lease hands its holder: a software key sealed to the holder's session, or the
 * reference of a key in the PKCS#11 token that every signer signs in (docs/design.md §5.6, §5.9).
 */
export type LeaseKey =
	| {
			/**
			 * Compact JWE (`A256KW`, `A256GCM`) of the private JWK under the key the signer's session
			 * and the keyring's transport key derive (src/keyring/key-transport.ts), bound to keyId and leaseId.
			 */
			key: string;
			/** The keyring's X25519 public key: the signer's other half of that derivation. */
			transportKey: JWK;
			tokenKey?: undefined;
	  }
	| {
			/** The token key the lease grants the use of: its label and CKA_ID. Nothing secret. */
			tokenKey: TokenKeyRef;
			key?: undefined;
			transportKey?: undefined;
	  };

export interface LeaseTerms {
	leaseId: string;
	keyId: string;
	expiresAt: string;
	/** The keyring's lease token (src/identity/lease-token.ts): what records takes this lease's signatures with. */
	token: string;
}

export type Lease = LeaseTerms & LeaseKey;

/** A lease as the keyring grants it, before the lease desk adds its token. */
export type LeaseGrant = Omit<LeaseTerms, "token"> & LeaseKey;

/** A renew or release: the lease, and a signer proof for it made by its holder. */
export const leaseRefParams = defineParams({
	leaseId: { type: "string", min: 1 },
	proof: signedStatement(2_048),
	/** renew: the lease's current token, answered with a fresh one for the new expiry. */
	token: { type: "string", max: 16_384, optional: true },
});
export type LeaseRef = ParamsOf<typeof leaseRefParams>;

/**
 * Key lifecycle (docs/design.md §5.8): an operator adds keys, retires one (no new lease; its
 * current lease runs out) or revokes one (compromised: the same, and the audit and the export
 * name since when). Each request carries an operator proof made with an enrolled batcher
 * credential (src/identity/proof.ts), as `npm run keys` makes it.
 */
export const addKeysParams = defineParams({
	count: { type: "number", integer: true, min: 1, max: 1000, convert: true },
	proof: signedStatement(2_048),
});
export type AddKeysParams = ParamsOf<typeof addKeysParams>;

export const keyChangeParams = defineParams({
	keyId: { type: "string", min: 1, max: 100 },
	/** Why (kept with a revocation or retirement). */
	reason: { type: "string", max: 500, optional: true },
	proof: signedStatement(2_048),
});
export type KeyChangeParams = ParamsOf<typeof keyChangeParams>;

/** A master key's rotation (docs/design.md §5.8): only the operator proof; the next key never travels. */
export const rotateMasterKeyParams = defineParams({
	proof: signedStatement(2_048),
});
export type RotateMasterKeyParams = ParamsOf<typeof rotateMasterKeyParams>;

export interface MasterKeyRotation {
	/** Software keys sealed again (a PKCS#11 keyring has none: only its authority key). */
	sealedKeys: number;
	/** Where the master key in use now comes from (a file or a variable's name, never the key). */
	masterKey: string;
	at: string;
}

export type KeyEventKind = "added" | "retired" | "revoked";

/** One change of a key's life, numbered in the keyring's one `seq` with the grants and ends (§5.8). */
export interface KeyEvent {
	seq: number;
	keyId: string;
	event: KeyEventKind;
	at: string;
	/** retired: "operator", or "max-uses" (KEY_MAX_USES); revoked: the operator's reason. */
	reason: string | null;
}

/** Active keys are leased; retired and revoked ones never again (they stay in the JWKS). */
export type KeyState = "active" | "retired" | "revoked";

export interface LeaseChange {
	leaseId: string;
	/** False when the lease was no longer current: nothing changed. */
	changed: boolean;
	expiresAt?: string;
	reason?: string;
	/** renew: the lease token for the new expiry. */
	token?: string;
}

export type ElectionState = "waiting" | "claiming" | "active" | "refused";

/** A keyring node's claim of the keyring role, asked of every other keyring node (src/keyring/election.ts). */
export const claimParams = defineParams({ nodeID: { type: "string", min: 1 } });

/** A keyring node's answer to another's claim of the keyring role (src/keyring/election.ts). */
export interface ClaimReply {
	nodeID: string;
	state: ElectionState;
	/** True: the claimer must not become active. */
	refuses: boolean;
}

// ---------------------------------------------------------------- batcher and signer actions

export const startRunParams = defineParams({
	/** Checked by the batcher itself (src/batcher/run-input.ts), so a wrong value names the field and the allowed range. */
	batchSize: { type: "any", optional: true },
	/** A client's key for retrying a start: the same key gives the same run (checked by the batcher too). */
	idempotencyKey: { type: "any", optional: true },
	/** What the client asked for, as the gateway sees it; a repeat with the key must match it. */
	requestFingerprint: { type: "string", max: 2000, optional: true },
	/** A follow run: signs records as they arrive until it is cancelled (docs/design.md §7.7). */
	follow: { type: "boolean", optional: true, convert: true },
});
export type StartRunParams = ParamsOf<typeof startRunParams>;
/** `batcher.start`: the run, and whether an earlier request with the same key started it. */
export type StartedRun = RunView & { replayed: boolean };
/**
 * A batch as its signer gets it: the records with their payloads, so a record's bytes cross
 * the transport once on their way to a signer (records and batcher share a node).
 */
export const signBatchParams = defineParams({
	batchId: { type: "string", min: 1 },
	runId: { type: "string", min: 1 },
	records: { type: "array", items: recordPayloadRule, min: 1 },
	/** The batcher's dispatch ticket for exactly this batch and this signer node (src/identity/ticket.ts); a batch without one is refused by the signer (403, logged with the caller's node). */
	ticket: signedStatement(16_384),
});
export type SignBatchParams = ParamsOf<typeof signBatchParams>;
export interface SignBatchResult {
	batchId: string;
	keyId: string;
	leaseId: string;
	signer: string;
	stored: number;
	duplicates: number;
	leaseWaitMs: number;
}

// ---------------------------------------------------------------- other results

/** One page of an owned collection, by `_id`; `next` is the `after` of the next page. */
export interface Page<T = object> {
	docs: T[];
	next: string | null;
}

/** `records.get` (GET /api/records/{id}). */
export const recordIdParams = defineParams({
	id: { type: "string", min: 1, description: "Record id" },
});

/** `records.get`: a record with its signature, if any. */
export interface RecordView {
	id: string;
	data: string;
	/** Who submitted it (a token's subject, `api-key:<name>`); null for a seeded record. */
	submittedBy: string | null;
	submittedAt: string | null;
	signature: Omit<SignatureDoc, "_id" | "recordId"> | null;
}

/** The most records one `records.list` page holds. */
export const RECORDS_LIST_MAX = 1000;

/** `records.list` (GET /api/records): records in id order after `after`, signed or not or both. */
export const recordsListParams = defineParams(
	{
		after: {
			type: "string",
			optional: true,
			min: 1,
			max: 200,
			description: "Start after this record id (a page's `next`)",
		},
		limit: {
			type: "number",
			integer: true,
			min: 1,
			max: RECORDS_LIST_MAX,
			convert: true,
			default: 100,
			description: "Records per page",
		},
		signed: {
			type: "boolean",
			optional: true,
			convert: true,
			description: "true: signed records only; false: unsigned only; absent: every record",
		},
	},
	{ strict: true },
);
export type RecordsListParams = ParamsOf<typeof recordsListParams>;

/** One page of records with their signatures; `next` is the `after` of the next page, null at the end. */
export interface RecordsList {
	records: RecordView[];
	next: string | null;
}

export interface KeyInfo {
	keyId: string;
	createdAt: string;
	state: KeyState;
	/** When it was retired or revoked; null while active. */
	since: string | null;
	uses: number;
	leased: boolean;
	leaseId: string | null;
	holder: string | null;
}

export interface KeyringStatus {
	keys: number;
	/** Keys not retired or revoked: the ones leases are granted on. */
	active: number;
	free: number;
	leased: number;
	waiting: number;
	/** Free keys, least recently used first: the next grant takes the first. */
	freeQueue: string[];
	lastSeq: number;
}

/** A run as the batcher shows it: the stored run without its storage id. */
/** A run as callers see it: no storage id, no Idempotency-Key (src/batcher/batcher.ts runView). */
export type RunView = Omit<RunDoc, "_id" | "idempotencyKey" | "requestFingerprint">;

export interface BatcherStatus {
	active: boolean;
	run: RunView | null;
	progress: Progress;
	inFlight: number;
}

/** `batcher.get`. */
export const runIdParams = defineParams({ runId: { type: "string", min: 1 } });
/** `batcher.cancel`: the active run, or the one named. */
export const cancelRunParams = defineParams({ runId: { type: "string", min: 1, optional: true } });

/** `batcher.get`: one run with its batch counts by status. */
export interface RunDetails extends RunView {
	batches: { total: number } & Partial<Record<BatchStatus, number>>;
	inFlight: number;
}

export interface DistributionSummary {
	count: number;
	mean: number;
	p50: number;
	p95: number;
	max: number;
}

export interface RecentBatch {
	batchId: string;
	keyId: string | null;
	signer: string | null;
	size: number;
	status: "signed" | "failed";
	latencyMs: number | null;
	at: string;
}

/** `metrics.snapshot`: the live figures of the current (or last) run, as this node saw them. */
export interface MetricsSnapshot {
	runId: string | null;
	status: "idle" | "running" | RunStatus;
	batchSize: number;
	records: number;
	signed: number;
	progress: number;
	recordsPerSecond: number;
	elapsedSeconds: number;
	batches: { signed: number; failed: number };
	duplicates: number;
	keyUses: Record<string, number>;
	leasedNow: string[];
	leaseWaitMs: DistributionSummary;
	batchLatencyMs: DistributionSummary;
	/** [unix seconds, records signed in that second], the last two minutes. */
	throughput: Array<[number, number]>;
	recentBatches: RecentBatch[];
	/** While a follow run goes on (docs/design.md §7.7): what arrives, what waits, how late it is signed; null otherwise. */
	follow: FollowFigures | null;
}

export interface FollowFigures {
	/** Records submitted a second, over the last 5 seconds. */
	inflowPerSecond: number;
	/** [unix seconds, records submitted in that second], the last two minutes. */
	inflow: Array<[number, number]>;
	/** Records stored and not yet signed. */
	backlog: number;
	/** From a batch's oldest record's submission to the batch counted signed. */
	lagMs: DistributionSummary;
	lastLagMs: number | null;
}

// ---------------------------------------------------------------- transparency logs

/** The two logs (docs/design.md §8.4) by the names the gateway serves them under, and their owners. */
export const LOG_OWNERS = { signatures: "records", leases: "keyring" } as const;
export type LogName = keyof typeof LOG_OWNERS;
export const LOG_NAMES = Object.keys(LOG_OWNERS) as LogName[];

/** A log's latest signed checkpoint as its owner keeps it (src/tlog/log.ts StoredCheckpoint). */
export interface LogCheckpointDoc {
	size: number;
	/** The C2SP signed note: `<origin>\n<size>\n<base64 root>\n\n— <origin> <signature>\n`. */
	note: string;
	publishedAt: string;
}

/** `records.logCheckpoint`, `keyring.logCheckpoint`: who signs the log, and its latest checkpoint. */
export interface LogCheckpoint {
	origin: string;
	/** The note verifier key (`<origin>+<key id>+<base64>`) its checkpoints open with. */
	verifierKey: string;
	checkpoint: LogCheckpointDoc | null;
}

/** Tree sizes go as far as a safe integer. */
const treeSize = {
	type: "number",
	integer: true,
	min: 0,
	max: Number.MAX_SAFE_INTEGER,
	convert: true,
} as const;

/** `records.logConsistency`, `keyring.logConsistency`: `to` defaults to the latest checkpoint's size. */
export const logConsistencyParams = defineParams(
	{
		from: { ...treeSize, description: "The older tree size" },
		to: {
			...treeSize,
			optional: true,
			description: "The newer tree size (default: the latest checkpoint's)",
		},
	},
	{ strict: true },
);
export type LogConsistencyParams = ParamsOf<typeof logConsistencyParams>;

/** RFC 6962 hashes are base64 in these answers, as in a checkpoint. */
export interface ConsistencyProofView {
	origin: string;
	from: number;
	to: number;
	proof: string[];
}

/** `records.inclusionProof`: a signature's leaf in the tree of `size` leaves (default: the latest checkpoint's). */
export const inclusionProofParams = defineParams(
	{
		id: { type: "string", min: 1, max: 200, description: "Record id" },
		size: {
			...treeSize,
			min: 1,
			optional: true,
			description: "The tree size to prove against (default: the latest checkpoint's)",
		},
	},
	{ strict: true },
);
export type InclusionProofParams = ParamsOf<typeof inclusionProofParams>;

export interface InclusionProofView {
	recordId: string;
	origin: string;
	logIndex: number;
	treeSize: number;
	/** The leaf's bytes as UTF-8 (docs/design.md §8.4): its hash is SHA-256(0x00 || leaf). */
	leaf: string;
	proof: string[];
	/** The signed checkpoint of `treeSize` leaves, or null when none of that size was published. */
	checkpoint: string | null;
}

// ---------------------------------------------------------------- events

export const Events = {
	runStarted: "run.started",
	runCompleted: "run.completed",
	leaseGranted: "lease.granted",
	leaseReleased: "lease.released",
	leaseExpired: "lease.expired",
	batchSigned: "batch.signed",
	batchFailed: "batch.failed",
	recordsArrived: "records.arrived",
	/** A key was revoked: broadcast, so that every records node refuses what it signs from then on. */
	keyRevoked: "key.revoked",
} as const;

/** `records.arrived`: a submission stored new records; a follow run looks for them now rather than at its next poll. */
export interface RecordsArrivedEvent {
	stored: number;
	submittedAt: string;
}

export interface RunStartedEvent {
	runId: string;
	batchSize: number;
	records: number;
	alreadySigned: number;
	resumed: boolean;
	/** A follow run: records arriving while it runs are signed too. */
	follow: boolean;
}
/** A run ended: its report, how it ended, and why when it failed. */
export interface RunCompletedEvent {
	report: RunReport;
	status: Exclude<RunStatus, "running">;
	error: string | null;
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
	/** How long its signer waited for the lease; null when its reply was lost and the batch was settled from its signatures. */
	leaseWaitMs: number | null;
	/** A follow run's signing lag: from its oldest record's submission to the batch counted signed; absent otherwise. */
	lagMs?: number;
}
export interface BatchFailedEvent {
	runId: string;
	batchId: string;
	size: number;
	error: string;
	/** Signatures it stored before it failed (a `partial` batch), from the records service. */
	stored: number;
}

/** Every domain event and its payload. */
export interface EventMap {
	"run.started": RunStartedEvent;
	"run.completed": RunCompletedEvent;
	"lease.granted": LeaseEvent;
	"lease.released": LeaseEvent;
	"lease.expired": LeaseEvent;
	"batch.signed": BatchSignedEvent;
	"batch.failed": BatchFailedEvent;
	"records.arrived": RecordsArrivedEvent;
	"key.revoked": KeyRevokedEvent;
}
export type EventName = keyof EventMap;

/** `key.revoked`: the key, since when, and the keyring's signed notice of it (src/identity/key-revocation.ts). */
export interface KeyRevokedEvent {
	keyId: string;
	at: string;
	notice: string;
}

// ---------------------------------------------------------------- the action map

/** Every action name, by service: callers use these, never a string of their own. */
export const Actions = {
	records: {
		unsignedPage: "records.unsignedPage",
		unsignedAmong: "records.unsignedAmong",
		unsignedArrivals: "records.unsignedArrivals",
		submit: "records.submit",
		stats: "records.stats",
		storeSignatures: "records.storeSignatures",
		closeBatch: "records.closeBatch",
		signedUnder: "records.signedUnder",
		progress: "records.progress",
		get: "records.get",
		list: "records.list",
		page: "records.page",
		logCheckpoint: "records.logCheckpoint",
		logConsistency: "records.logConsistency",
		inclusionProof: "records.inclusionProof",
	},
	keyring: {
		acquire: "keyring.acquire",
		renew: "keyring.renew",
		release: "keyring.release",
		jwks: "keyring.jwks",
		keys: "keyring.keys",
		status: "keyring.status",
		addKeys: "keyring.addKeys",
		retireKey: "keyring.retireKey",
		revokeKey: "keyring.revokeKey",
		rotateMasterKey: "keyring.rotateMasterKey",
		page: "keyring.page",
		logCheckpoint: "keyring.logCheckpoint",
		logConsistency: "keyring.logConsistency",
		/** Offered by every keyring node before it serves: the election's channel. */
		claim: "keyring-election.claim",
	},
	batcher: {
		start: "batcher.start",
		status: "batcher.status",
		runs: "batcher.runs",
		get: "batcher.get",
		cancel: "batcher.cancel",
		page: "batcher.page",
	},
	signer: {
		signBatch: "signer.signBatch",
		/** Asked of one signer node: the batches it is working on now. */
		inFlight: "signer.inFlight",
	},
	metrics: {
		snapshot: "metrics.snapshot",
	},
} as const;

/** Every action's params and result. */
export interface ActionMap {
	"records.unsignedPage": { params: UnsignedPageParams; result: UnsignedRecords };
	"records.unsignedAmong": { params: RecordIdsParams; result: UnsignedRecords };
	"records.unsignedArrivals": { params: UnsignedArrivalsParams; result: { records: Arrival[] } };
	"records.submit": { params: SubmitRecordsParams; result: SubmitRecordsResult };
	"records.stats": { params: Record<string, never>; result: RecordStats };
	"records.storeSignatures": { params: StoreSignaturesParams; result: StoreSignaturesResult };
	"records.closeBatch": { params: CloseBatchParams; result: ClosedBatch };
	"records.signedUnder": { params: SignedUnderParams; result: SignedUnder };
	"records.progress": { params: Record<string, never>; result: Progress };
	"records.get": { params: ParamsOf<typeof recordIdParams>; result: RecordView };
	"records.list": { params: Partial<RecordsListParams>; result: RecordsList };
	"records.page": { params: PageParams; result: Page };
	"records.logCheckpoint": { params: Record<string, never>; result: LogCheckpoint };
	"records.logConsistency": { params: LogConsistencyParams; result: ConsistencyProofView };
	"records.inclusionProof": { params: InclusionProofParams; result: InclusionProofView };
	"keyring.acquire": { params: AcquireParams; result: Lease };
	"keyring.renew": { params: LeaseRef; result: LeaseChange };
	"keyring.release": { params: LeaseRef; result: LeaseChange };
	"keyring.jwks": { params: Record<string, never>; result: { keys: JWK[] } };
	"keyring.keys": { params: Record<string, never>; result: KeyInfo[] };
	"keyring.status": { params: Record<string, never>; result: KeyringStatus };
	"keyring.addKeys": { params: AddKeysParams; result: KeyInfo[] };
	"keyring.retireKey": { params: KeyChangeParams; result: KeyInfo };
	"keyring.revokeKey": { params: KeyChangeParams; result: KeyInfo };
	"keyring.rotateMasterKey": { params: RotateMasterKeyParams; result: MasterKeyRotation };
	"keyring.page": { params: PageParams; result: Page };
	"keyring.logCheckpoint": { params: Record<string, never>; result: LogCheckpoint };
	"keyring.logConsistency": { params: LogConsistencyParams; result: ConsistencyProofView };
	"keyring-election.claim": { params: ParamsOf<typeof claimParams>; result: ClaimReply };
	"batcher.start": { params: StartRunParams; result: StartedRun };
	"batcher.status": { params: Record<string, never>; result: BatcherStatus };
	"batcher.runs": { params: Record<string, never>; result: RunView[] };
	"batcher.get": { params: ParamsOf<typeof runIdParams>; result: RunDetails };
	"batcher.cancel": { params: ParamsOf<typeof cancelRunParams>; result: RunView };
	"batcher.page": { params: PageParams; result: Page };
	"signer.signBatch": { params: SignBatchParams; result: SignBatchResult };
	"signer.inFlight": { params: Record<string, never>; result: { batchIds: string[] } };
	"metrics.snapshot": { params: Record<string, never>; result: MetricsSnapshot };
}
export type ActionName = keyof ActionMap;
export type ActionParams<A extends ActionName> = ActionMap[A]["params"];
export type ActionResult<A extends ActionName> = ActionMap[A]["result"];

/** What can call an action: a broker or a context. */
export interface Caller {
	call(actionName: string, params?: unknown, opts?: CallingOptions): Promise<unknown>;
}

/** Calls `action` with params and result typed by the action map. */
export function call<A extends ActionName>(
	caller: Caller,
	action: A,
	params: ActionParams<A>,
	opts?: CallingOptions,
): Promise<ActionResult<A>> {
	return caller.call(action, params, opts) as Promise<ActionResult<A>>;
}

/** What can emit an event: a broker or a context. */
export interface Emitter {
	emit(eventName: string, payload?: unknown): Promise<void> | void;
}

/** Emits `event` with the payload the event map gives it. */
export function emit<E extends EventName>(
	emitter: Emitter,
	event: E,
	payload: EventMap[E],
): Promise<void> | void {
	return emitter.emit(event, payload);
}
