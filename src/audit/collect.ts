/**
 * Reads every owned collection through its owner's `page` action (DESIGN.md section 2: no
 * service reads another's store) and maps the stored documents to the export's fields.
 */
import type { JWK } from "jose";
import { Actions, call, type Caller, type PageParams } from "../contract";
import {
	EXPORT_FIELDS,
	isoTime,
	pick,
	publicJwk,
	type AuditSnapshot,
	type SnapshotBatch,
	type SnapshotKey,
	type SnapshotLease,
	type SnapshotRecord,
	type SnapshotRun,
	type SnapshotSignature
} from "./snapshot";

type StoredDoc = Record<string, unknown>;

export interface CollectOptions {
	/** Documents per `page` call; the action allows at most 5000. */
	pageSize?: number;
	/**
	 * Over a transporter, the largest message it carries (nats-server's max_payload, 1 MB by
	 * default): each collection is then paged in pieces that fit, batches by their runs' size.
	 */
	maxPayloadBytes?: number;
}

/** 1 MB: nats-server's default max_payload. */
export const NATS_DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/** Generous JSON sizes of one stored document, by collection. */
const DOC_BYTES: Record<string, number> = { keys: 1200, leases: 500, runs: 1500, records: 200, signatures: 500 };

/** Documents of `collection` per `page` call that fit `options.maxPayloadBytes` (batches by their runs' largest size). */
export function pageSizeFor(collection: string, options: CollectOptions, largestBatch = 0): number {
	const fallback = options.pageSize ?? 5000;
	if (!options.maxPayloadBytes) return fallback;
	const docBytes = collection === "batches" ? largestBatch * 20 + 600 : DOC_BYTES[collection] ?? 2000;
	return Math.max(1, Math.min(fallback, Math.floor(options.maxPayloadBytes / 2 / docBytes)));
}

/** Pages `collection` of `service` by `_id` until the owner says there is no next page. */
/** The services that own collections, and so answer `page`. */
export type OwningService = "records" | "keyring" | "batcher";

export async function pageAll<T = StoredDoc>(broker: Caller, service: OwningService, collection: string, pageSize = 5000): Promise<T[]> {
	const all: T[] = [];
	let after: string | undefined;
	for (;;) {
		const params: PageParams = after === undefined ? { collection, limit: pageSize } : { collection, after, limit: pageSize };
		const page = await call(broker, Actions[service].page, params);
		const docs = page.docs as T[];
		for (const doc of docs) all.push(doc);
		if (page.next == null) return all;
		after = page.next;
	}
}

const str = (value: unknown): string => String(value);
const strOrNull = (value: unknown): string | null => (value == null ? null : String(value));

export function toRecord(doc: StoredDoc): SnapshotRecord {
	return { id: str(doc._id), data: doc.data as string };
}

export function toSignature(doc: StoredDoc): SnapshotSignature {
	const signature = pick<SnapshotSignature>(doc, EXPORT_FIELDS.signatures);
	return { ...signature, recordId: str(signature.recordId), signedAt: isoTime(doc.signedAt)! };
}

export function toBatch(doc: StoredDoc): SnapshotBatch {
	const batch = pick<SnapshotBatch>(doc, EXPORT_FIELDS.batches);
	return {
		...batch,
		keyId: strOrNull(batch.keyId),
		leaseId: strOrNull(batch.leaseId),
		recordIds: Array.isArray(batch.recordIds) ? batch.recordIds.map(str) : [],
		startedAt: isoTime(doc.startedAt)!,
		finishedAt: isoTime(doc.finishedAt)
	};
}

export function toLease(doc: StoredDoc): SnapshotLease {
	const lease = pick<SnapshotLease>(doc, EXPORT_FIELDS.leases);
	const expiresAt = isoTime(doc.expiresAt);
	return {
		...lease,
		grantedAt: isoTime(doc.grantedAt)!,
		endedAt: isoTime(doc.endedAt),
		// Not an export field, but the store has it: it bounds the signatures of a lease still held.
		...(expiresAt ? { expiresAt } : {})
	};
}

export function toKey(doc: StoredDoc): SnapshotKey {
	// Only the public fields: sealedPrivateKey is never read into the snapshot.
	return { keyId: str(doc.keyId), createdAt: isoTime(doc.createdAt)! };
}

export function toRun(doc: StoredDoc): SnapshotRun {
	const run = pick<SnapshotRun>(doc, EXPORT_FIELDS.runs);
	return { ...run, startedAt: isoTime(doc.startedAt)!, finishedAt: isoTime(doc.finishedAt) };
}

/** A snapshot of the records, keyring and batcher stores, read through their services. */
export async function collectSnapshot(broker: Caller, options: CollectOptions = {}): Promise<AuditSnapshot> {
	// Causal order: a lease is stored before its batch's signatures, a batch before it is dispatched,
	// so a snapshot of a live system never shows a signature whose lease or batch it missed.
	const keys = await pageAll(broker, "keyring", "keys", pageSizeFor("keys", options));
	const jwks = await call(broker, Actions.keyring.jwks, {});
	const leases = await pageAll(broker, "keyring", "leases", pageSizeFor("leases", options));
	const runs = await pageAll(broker, "batcher", "runs", pageSizeFor("runs", options));
	const largestBatch = Math.max(0, ...runs.map(run => Number(run.batchSize) || 0));
	const batches = await pageAll(broker, "batcher", "batches", pageSizeFor("batches", options, largestBatch));
	const records = await pageAll(broker, "records", "records", pageSizeFor("records", options));
	const signatures = await pageAll(broker, "records", "signatures", pageSizeFor("signatures", options));
	return {
		records: records.map(toRecord),
		signatures: signatures.map(toSignature),
		batches: batches.map(toBatch),
		// The lease log in seq order: how the keyring wrote it and how a verifier replays it.
		leases: leases.map(toLease).sort((a, b) => a.grantSeq - b.grantSeq),
		keys: keys.map(toKey),
		jwks: { keys: (jwks?.keys ?? []).map(publicJwk) },
		runs: runs.map(toRun)
	};
}
