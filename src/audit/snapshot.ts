/**
 * The stores' documents in the export's field names (docs/design.md §8.3): what an export
 * holds, what an import takes, and the in-memory shape tests and the fixture build.
 */
import type { JWK } from "jose";
import {
	BATCH_FIELDS,
	type BatchDoc,
	type BatchShort,
	type KeyDoc,
	type KeyLifecycle,
	type LeaseDoc,
	type RecordPayload,
	type RunDoc,
	type SignatureDoc,
} from "../contract";
import type { LoggedSignature } from "../records/store";

/**
 * The export's fields of each stored document (docs/design.md §8.3), picked from the stored
 * types: a field renamed in the store breaks the build here, while a field added to a stored
 * document stays out of the export until it is named below.
 */
export type SnapshotRecord = RecordPayload;
export type SnapshotSignature = Pick<
	SignatureDoc,
	Exclude<(typeof EXPORT_FIELDS.signatures)[number], "logIndex">
> & {
	/** Its leaf's index in the signature log (docs/design.md §8.4); null or absent: not in it. */
	logIndex?: number | null;
};
export type SnapshotBatch = Omit<
	Pick<BatchDoc, (typeof EXPORT_FIELDS.batches)[number]>,
	"stored" | "short"
> & {
	/** Signatures the batch record says it stored; null in stores and exports from before it was kept. */
	stored: number | null;
	/** Why it is smaller than its run's size (docs/design.md §2.5); null when full, or from before it was kept. */
	short: BatchShort | null;
};
export type SnapshotLease = Omit<
	Pick<LeaseDoc, (typeof EXPORT_FIELDS.leases)[number]>,
	"expiresAt"
> & {
	/** The last expiry granted, after renewals; null in exports written before the contract (docs/design.md §8.3) listed it. */
	expiresAt: string | null;
};
/** A key and its life (docs/design.md §5.8); the lifecycle fields are null in exports from before them. */
export type SnapshotKey = Pick<KeyDoc, "keyId" | "createdAt"> & KeyLifecycle;
export type SnapshotRun = Omit<Pick<RunDoc, (typeof EXPORT_FIELDS.runs)[number]>, "follow"> & {
	/** True for a follow run (docs/design.md §7.7); null otherwise, and in exports from before it was kept. */
	follow: boolean | null;
};

export interface AuditSnapshot {
	records: SnapshotRecord[];
	signatures: SnapshotSignature[];
	batches: SnapshotBatch[];
	leases: SnapshotLease[];
	keys: SnapshotKey[];
	jwks: { keys: JWK[] };
	runs: SnapshotRun[];
}

/** The contract's fields of each export file, in the order they are written (docs/design.md §8.3). */
export const EXPORT_FIELDS = {
	records: ["id", "data"] satisfies Array<keyof RecordPayload>,
	signatures: [
		"recordId",
		"keyId",
		"batchId",
		"leaseId",
		"jws",
		"signedAt",
		"logIndex",
	] satisfies Array<keyof LoggedSignature>,
	batches: [...BATCH_FIELDS, "stored", "short"] satisfies Array<keyof BatchDoc>,
	leases: [
		"leaseId",
		"keyId",
		"holder",
		"grantSeq",
		"grantedAt",
		"expiresAt",
		"endSeq",
		"endedAt",
		"end",
	] satisfies Array<keyof LeaseDoc>,
	keys: [
		"keyId",
		"createdAt",
		"addedSeq",
		"retiredSeq",
		"retiredAt",
		"retiredBy",
		"revokedSeq",
		"revokedAt",
		"revokedReason",
	] satisfies Array<keyof KeyDoc>,
	runs: ["runId", "batchSize", "status", "startedAt", "finishedAt", "follow"] satisfies Array<
		keyof RunDoc
	>,
} as const;

/** The public members of an Ed25519 JWK: anything else (above all `d`) never leaves the keyring. */
export const PUBLIC_JWK_FIELDS = ["kty", "crv", "x", "kid", "alg", "use", "key_ops"] as const;

export function publicJwk(jwk: JWK): JWK {
	const out: Record<string, unknown> = {};
	for (const field of PUBLIC_JWK_FIELDS) if (jwk[field] !== undefined) out[field] = jwk[field];
	return out as JWK;
}

/** Copies only `fields` from `doc`, in that order: stored extras (`_id`, secrets) never pass. */
export function pick<T>(doc: Record<string, unknown>, fields: readonly string[]): T {
	const out: Record<string, unknown> = {};
	for (const field of fields) out[field] = doc[field] === undefined ? null : doc[field];
	return out as T;
}

/** Stored times may come back as Date (MongoDB) or string (SQLite); the export has ISO-8601 UTC. */
export function isoTime(value: unknown): string | null {
	if (value == null) return null;
	if (value instanceof Date) return value.toISOString();
	if (typeof value === "number") return new Date(value).toISOString();
	return String(value);
}
