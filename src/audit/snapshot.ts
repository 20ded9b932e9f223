/**
 * What the audit reads: the stores' data in the export's field names (DESIGN.md section 9).
 * The audit of a live store and the audit of an export run on the same shape, so they can
 * only disagree where the export carries less (see `SnapshotLease.expiresAt`).
 */
import type { JWK } from "jose";
import type { BatchStatus, LeaseEnd, RunStatus } from "../contract";

export interface SnapshotRecord {
	id: string;
	data: string;
}

export interface SnapshotSignature {
	recordId: string;
	keyId: string;
	batchId: string;
	leaseId: string;
	jws: string;
	signedAt: string;
}

export interface SnapshotBatch {
	batchId: string;
	runId: string;
	keyId: string | null;
	leaseId: string | null;
	recordIds: string[];
	attempt: number;
	status: BatchStatus;
	startedAt: string;
	finishedAt: string | null;
}

export interface SnapshotLease {
	leaseId: string;
	keyId: string;
	holder: string;
	grantSeq: number;
	grantedAt: string;
	endSeq: number | null;
	endedAt: string | null;
	end: LeaseEnd | null;
	/**
	 * Known when read from the store; not a field of the export (section 9), so the audit of
	 * an export bounds a still-active lease's signatures by its grant only.
	 */
	expiresAt?: string;
}

export interface SnapshotKey {
	keyId: string;
	createdAt: string;
}

export interface SnapshotRun {
	runId: string;
	batchSize: number;
	status: RunStatus;
	startedAt: string;
	finishedAt: string | null;
}

export interface AuditSnapshot {
	records: SnapshotRecord[];
	signatures: SnapshotSignature[];
	batches: SnapshotBatch[];
	leases: SnapshotLease[];
	keys: SnapshotKey[];
	jwks: { keys: JWK[] };
	runs: SnapshotRun[];
}

/** The contract's fields of each export file, in the order they are written (section 9). */
export const EXPORT_FIELDS = {
	records: ["id", "data"],
	signatures: ["recordId", "keyId", "batchId", "leaseId", "jws", "signedAt"],
	batches: ["batchId", "runId", "keyId", "leaseId", "recordIds", "attempt", "status", "startedAt", "finishedAt"],
	leases: ["leaseId", "keyId", "holder", "grantSeq", "grantedAt", "endSeq", "endedAt", "end"],
	keys: ["keyId", "createdAt"],
	runs: ["runId", "batchSize", "status", "startedAt", "finishedAt"]
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

/** Stored times may come back as Date (MongoDB) or string (NeDB); the export has ISO-8601 UTC. */
export function isoTime(value: unknown): string | null {
	if (value == null) return null;
	if (value instanceof Date) return value.toISOString();
	if (typeof value === "number") return new Date(value).toISOString();
	return String(value);
}

export function emptySnapshot(): AuditSnapshot {
	return { records: [], signatures: [], batches: [], leases: [], keys: [], jwks: { keys: [] }, runs: [] };
}

/** How many documents of each kind a snapshot holds. */
export function snapshotCounts(snapshot: AuditSnapshot) {
	return {
		records: snapshot.records.length,
		signatures: snapshot.signatures.length,
		batches: snapshot.batches.length,
		leases: snapshot.leases.length,
		keys: snapshot.keys.length,
		runs: snapshot.runs.length
	};
}
