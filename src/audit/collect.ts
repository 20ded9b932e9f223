/**
 * Reads every owned collection page by page and maps the stored documents to the export's
 * fields, into an import (importFromPages). The pages come from a PageSource: the owners'
 * `page` actions (docs/design.md §3: no service reads another's store), or the owners' own
 * MongoDB stores opened read-only by the audit and the export (src/audit/mongo-pages.ts).
 */
import type { JWK } from "jose";
import {
	Actions,
	call,
	LOG_NAMES,
	type Caller,
	type KeyDoc,
	type LogName,
	type Page,
	type PageParams,
} from "../contract";
import { lifecycleOf } from "../keyring/store";
import type { StoredCheckpoint } from "../tlog/log";
import { UserError } from "../user-error";
import { closeAfter, type AuditDb } from "./audit-db";
import {
	createImport,
	ImportProblem,
	type ImportCollection,
	type ImportDocs,
	type ImportOptions,
} from "./import";
import { audit, type AuditOptions, type AuditReport } from "./rules";
import { EXPORT_FIELDS, isoTime, pick, publicJwk } from "./snapshot";

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
const DOC_BYTES: Record<string, number> = {
	keys: 1200,
	leases: 500,
	runs: 1500,
	records: 200,
	signatures: 500,
};

/** A record's fields besides its id and data, as JSON: seq, signed, a submitter of up to 200 characters, its time. */
const RECORD_FIELDS_BYTES = 400;

/**
 * Documents of `collection` per `page` call that fit `options.maxPayloadBytes`: batches by their
 * runs' largest size, records by the largest stored record (`largestRecord`, its id and data as
 * JSON: a submitted record may take 3,200 bytes, a seeded one about 20).
 */
export function pageSizeFor(
	collection: string,
	options: CollectOptions,
	largest: { batch?: number; record?: number } = {},
): number {
	const fallback = options.pageSize ?? 5000;
	if (!options.maxPayloadBytes) return fallback;
	const docBytes =
		collection === "batches"
			? (largest.batch ?? 0) * 20 + 600
			: collection === "records" && largest.record !== undefined
				? largest.record + RECORD_FIELDS_BYTES
				: (DOC_BYTES[collection] ?? 2000);
	return Math.max(1, Math.min(fallback, Math.floor(options.maxPayloadBytes / 2 / docBytes)));
}

/** The services that own collections, and so answer `page`. */
export type OwningService = "records" | "keyring" | "batcher";

/** Where pages of the owned collections come from. */
export interface PageSource {
	/** One page of `collection` of `service` by `_id` (ascending), as the owner's `page` action answers. */
	page(
		service: OwningService,
		collection: string,
		after: string | undefined,
		limit: number,
	): Promise<Page>;
	/** The public JWKS. */
	jwks(): Promise<JWK[]>;
	/** Bytes of the largest record's id and data as JSON (records.stats), where pages travel in messages. */
	largestRecordBytes?(): Promise<number>;
	/**
	 * A log's leaf hashes in log order (the lease log's with their entry names) and its
	 * checkpoints, where the source reads the stores themselves (MongoDB); the owners' actions
	 * serve no leaves, so an audit over the bus has no log to check.
	 */
	logs?(log: LogName): {
		leaves(): AsyncIterable<{ hash: Buffer; entry?: string }>;
		checkpoints(): Promise<StoredCheckpoint[]>;
	};
}

/** The owners' `page` and `keyring.jwks` actions, through a broker (over NATS or in one process). */
export function servicePages(broker: Caller): PageSource {
	return {
		page: (service, collection, after, limit) => {
			const params: PageParams =
				after === undefined ? { collection, limit } : { collection, after, limit };
			return call(broker, Actions[service].page, params);
		},
		jwks: async () => (await call(broker, Actions.keyring.jwks, {}))?.keys ?? [],
		largestRecordBytes: async () =>
			(await call(broker, Actions.records.stats, {})).maxRecordBytes,
	};
}

/** Calls `onPage` with each page of `collection` of `service`, by `_id`, until the owner says there is no next page. */
export async function eachPage<T = StoredDoc>(
	source: PageSource,
	service: OwningService,
	collection: string,
	pageSize: number,
	onPage: (docs: T[]) => void,
): Promise<void> {
	let after: string | undefined;
	for (;;) {
		const page = await source.page(service, collection, after, pageSize);
		onPage(page.docs as T[]);
		if (page.next == null) return;
		after = page.next;
	}
}

/** Every document of `collection` of `service`, in memory: for small collections and tests. */
export async function pageAll<T = StoredDoc>(
	broker: Caller,
	service: OwningService,
	collection: string,
	pageSize = 5000,
): Promise<T[]> {
	const all: T[] = [];
	await eachPage<T>(servicePages(broker), service, collection, pageSize, (docs) =>
		all.push(...docs),
	);
	return all;
}

const str = (value: unknown): string => String(value);
const strOrNull = (value: unknown): string | null => (value == null ? null : String(value));

export function toRecord(doc: StoredDoc): ImportDocs["records"] {
	return { id: str(doc._id ?? doc.id), data: doc.data as string };
}

export function toSignature(doc: StoredDoc): ImportDocs["signatures"] {
	const signature = pick<ImportDocs["signatures"]>(doc, EXPORT_FIELDS.signatures);
	return { ...signature, recordId: str(signature.recordId), signedAt: isoTime(doc.signedAt)! };
}

export function toBatch(doc: StoredDoc): ImportDocs["batches"] {
	const batch = pick<ImportDocs["batches"]>(doc, EXPORT_FIELDS.batches);
	return {
		...batch,
		keyId: strOrNull(batch.keyId),
		leaseId: strOrNull(batch.leaseId),
		recordIds: Array.isArray(batch.recordIds) ? batch.recordIds.map(str) : [],
		startedAt: isoTime(doc.startedAt)!,
		finishedAt: isoTime(doc.finishedAt),
	};
}

export function toLease(doc: StoredDoc): ImportDocs["leases"] {
	const lease = pick<ImportDocs["leases"]>(doc, EXPORT_FIELDS.leases);
	return {
		...lease,
		grantedAt: isoTime(doc.grantedAt)!,
		expiresAt: isoTime(doc.expiresAt),
		endedAt: isoTime(doc.endedAt),
	};
}

export function toKey(doc: StoredDoc): ImportDocs["keys"] {
	// Only the public fields: sealedPrivateKey is never read into the snapshot.
	const life = lifecycleOf(doc as Partial<KeyDoc>);
	return {
		keyId: str(doc.keyId),
		createdAt: isoTime(doc.createdAt)!,
		...life,
		retiredAt: isoTime(life.retiredAt),
		revokedAt: isoTime(life.revokedAt),
	};
}

export function toRun(doc: StoredDoc): ImportDocs["runs"] {
	const run = pick<ImportDocs["runs"]>(doc, EXPORT_FIELDS.runs);
	return { ...run, startedAt: isoTime(doc.startedAt)!, finishedAt: isoTime(doc.finishedAt) };
}

/** Each collection: its owner and how a stored document becomes an export document. */
const SOURCES: {
	[C in ImportCollection]: { service: OwningService; map: (doc: StoredDoc) => ImportDocs[C] };
} = {
	keys: { service: "keyring", map: toKey },
	leases: { service: "keyring", map: toLease },
	runs: { service: "batcher", map: toRun },
	batches: { service: "batcher", map: toBatch },
	records: { service: "records", map: toRecord },
	signatures: { service: "records", map: toSignature },
};

/**
 * Pages every owned collection straight into an import: a page at a time in memory, however
 * large the stores, in causal order.
 */
export async function importFromPages(
	source: PageSource,
	options: CollectOptions & ImportOptions = {},
): Promise<AuditDb> {
	const writer = createImport(options);
	try {
		const addPage =
			<C extends ImportCollection>(collection: C) =>
			(docs: StoredDoc[]) => {
				for (const doc of docs) {
					try {
						writer.add(collection, SOURCES[collection].map(doc));
					} catch (err) {
						if (err instanceof ImportProblem)
							throw new UserError(
								`${SOURCES[collection].service}.page of ${collection}: a document ${err.message}`,
							);
						throw err;
					}
				}
			};
		// The logs first: a leaf is written with its row or after it, so no leaf read here lacks its row.
		for (const log of LOG_NAMES) {
			const kept = source.logs?.(log);
			if (!kept) break;
			for await (const { hash, entry } of kept.leaves()) writer.logLeaf(log, hash, entry);
			for (const checkpoint of await kept.checkpoints())
				writer.logCheckpoint(log, checkpoint);
		}
		// Causal order: a lease is stored before its batch's signatures and a batch before it is
		// dispatched, so signatures are read before batches and leases, and a live system never
		// shows a signature whose batch or lease this read missed.
		let largestBatch = 0;
		// Records as large as the largest one stored: submitted records may be 16 times a seeded one.
		const largestRecord =
			options.maxPayloadBytes && source.largestRecordBytes
				? await source.largestRecordBytes()
				: undefined;
		await eachPage(
			source,
			"records",
			"records",
			pageSizeFor("records", options, { record: largestRecord }),
			addPage("records"),
		);
		await eachPage(
			source,
			"records",
			"signatures",
			pageSizeFor("signatures", options),
			addPage("signatures"),
		);
		await eachPage(source, "batcher", "runs", pageSizeFor("runs", options), (docs) => {
			for (const run of docs)
				largestBatch = Math.max(largestBatch, Number(run.batchSize) || 0);
			addPage("runs")(docs);
		});
		await eachPage(
			source,
			"batcher",
			"batches",
			pageSizeFor("batches", options, { batch: largestBatch }),
			addPage("batches"),
		);
		await eachPage(source, "keyring", "keys", pageSizeFor("keys", options), addPage("keys"));
		writer.jwks((await source.jwks()).map(publicJwk));
		await eachPage(
			source,
			"keyring",
			"leases",
			pageSizeFor("leases", options),
			addPage("leases"),
		);
		return writer.finish();
	} catch (err) {
		writer.abort();
		throw err;
	}
}

/** The audit of the stores read through their owning services (over NATS, or in one process). */
export async function auditServices(
	broker: Caller,
	options: CollectOptions & AuditOptions = {},
): Promise<AuditReport> {
	const db = await importFromPages(servicePages(broker), options);
	return closeAfter(db, (db) => audit(db, options));
}
