/**
 * records: owns `records` and `signatures`. Seeds the records when the store is empty,
 * pages unsigned record ids in ascending order, and stores signatures in bulk with the
 * unique index on `signatures.recordId` as the guard against a second signature.
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import { DbMixin, type Store } from "../mixins/db.mixin";
import { appConfig } from "../src/config";
import { serviceSettings, type RecordsSettings } from "../src/settings";
import {
	fetchRecordsParams, storeSignaturesParams, unsignedIdsParams,
	type FetchRecordsParams, type Progress, type RecordDoc, type SignatureDoc,
	type StoreSignaturesParams, type StoreSignaturesResult, type UnsignedIdsParams
} from "../src/contract";
import { makeRecords, nextUnsigned } from "../src/records/records";

interface RecordsVars {
	stores: { records: Store<RecordDoc>; signatures: Store<SignatureDoc> };
	/** Every record id, ascending: ids never change once seeded, so paging needs no sort. */
	recordIds: string[];
	/** Payload by id. Records are immutable once seeded, so this copy never goes stale. */
	payloads: Map<string, string>;
	/**
	 * Ids known signed. On the embedded store this process is the only writer of
	 * `signatures`, so the set is complete and paging needs no index lookups; on MongoDB
	 * other replicas write too, so it is null and the store is asked.
	 */
	signedIds: Set<string> | null;
}

export function createRecordsService(settings: RecordsSettings): ServiceSchema {
	const schema: ServiceSchema<RecordsSettings, Record<string, never>, RecordsVars> = {
		name: "records",
		mixins: [DbMixin({ records: {}, signatures: { uniqueIndexes: ["recordId"] } })],
		settings,
		actions: {
			/** The next `limit` unsigned record ids after `after`, ascending. */
			unsignedIds: {
				params: unsignedIdsParams,
				async handler(ctx: Context<UnsignedIdsParams>): Promise<{ ids: string[] }> {
					const { after, limit } = ctx.params;
					const signedIds = this.signedIds;
					const ids = await nextUnsigned(this.recordIds, after, limit, async chunk => signedIds
						? chunk.filter(id => signedIds.has(id))
						: (await this.stores.signatures.find({ recordId: { $in: chunk } }, { projection: { recordId: 1 } })).map(d => d.recordId));
					return { ids };
				}
			},
			/** Of the given ids, those without a signature (the batcher's retry set). */
			filterUnsigned: {
				params: fetchRecordsParams,
				async handler(ctx: Context<FetchRecordsParams>): Promise<{ ids: string[] }> {
					const signed = new Set((await this.stores.signatures.find({ recordId: { $in: ctx.params.ids } }, { projection: { recordId: 1 } })).map(d => d.recordId));
					return { ids: ctx.params.ids.filter(id => !signed.has(id)) };
				}
			},
			/** Record payloads for a signer. */
			fetch: {
				params: fetchRecordsParams,
				async handler(ctx: Context<FetchRecordsParams>): Promise<Array<{ id: string; data: string }>> {
					const missing = ctx.params.ids.filter(id => !this.payloads.has(id));
					if (missing.length) throw new Errors.MoleculerClientError(`Unknown record ids: ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ` and ${missing.length - 5} more` : ""}`, 404, "RECORD_NOT_FOUND", { missing: missing.length });
					return ctx.params.ids.map(id => ({ id, data: this.payloads.get(id)! }));
				}
			},
			/** Stores a bulk of signatures; already-signed records keep their first signature. */
			storeSignatures: {
				params: storeSignaturesParams,
				async handler(ctx: Context<StoreSignaturesParams>): Promise<StoreSignaturesResult> {
					const docs = ctx.params.signatures.map(s => ({ _id: s.recordId, recordId: s.recordId, keyId: s.keyId, batchId: s.batchId, leaseId: s.leaseId, jws: s.jws, signedAt: s.signedAt }));
					const { inserted, duplicates } = await this.stores.signatures.insertManyUnique(docs, "recordId");
					// Stored now, either by this bulk or before it.
					for (const doc of docs) this.signedIds?.add(doc.recordId);
					return { stored: inserted, duplicates };
				}
			},
			progress: {
				async handler(): Promise<Progress> {
					return { records: this.recordIds.length, signed: await this.stores.signatures.count() };
				}
			},
			/** One record with its signature, if any. */
			get: {
				params: { id: { type: "string", min: 1 } },
				async handler(ctx: Context<{ id: string }>) {
					const record = await this.stores.records.findOne({ _id: ctx.params.id });
					if (!record) throw new Errors.MoleculerClientError(`Record "${ctx.params.id}" not found`, 404, "RECORD_NOT_FOUND", { id: ctx.params.id });
					const signature = await this.stores.signatures.findOne({ recordId: ctx.params.id });
					return { id: record._id, data: record.data, signature: signature && { keyId: signature.keyId, batchId: signature.batchId, leaseId: signature.leaseId, jws: signature.jws, signedAt: signature.signedAt } };
				}
			}
		},
		async started() {
			const stored = await this.stores.records.count();
			if (stored === 0 && this.settings.seedCount > 0) {
				const started = Date.now();
				for (const chunk of makeRecords(this.settings.seedCount)) await this.stores.records.insertMany(chunk);
				this.logger.info(`Seeded ${this.settings.seedCount} records in ${Date.now() - started} ms`);
			}
			this.payloads = new Map((await this.stores.records.find({})).map(r => [r._id, r.data]));
			this.recordIds = [...this.payloads.keys()].sort();
			this.signedIds = this.settings.mongoUri ? null : new Set((await this.stores.signatures.find({}, { projection: { recordId: 1 } })).map(s => s.recordId));
		}
	};
	return schema as unknown as ServiceSchema;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) => createRecordsService(serviceSettings(appConfig()).records);
