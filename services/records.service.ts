/**
 * records: owns `records` and `signatures`. Seeds the records when the store is empty, pages
 * unsigned record ids in ascending order, and stores signatures in bulk with the unique key
 * on `signatures.recordId` as the guard against a second signature (src/records/store.ts).
 *
 * Signatures are taken only from the holder of the batch's current lease, for that batch's
 * records, under that lease's key: each piece carries the keyring's lease token and the
 * holder's store proof, checked here offline (src/identity/lease-token.ts). A batch is closed
 * only by the batcher (its close proof, src/identity/ticket.ts). Refusals are 403s, logged
 * with the caller's node.
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { DomainError } from "../src/errors";
import { StoreMixin } from "../mixins/store.mixin";
import { appConfig } from "../src/config";
import {
	closeBatchParams,
	inclusionProofParams,
	recordIdsParams,
	recordsListParams,
	signedUnderParams,
	storeSignaturesParams,
	unsignedPageParams,
	type ClosedBatch,
	type CloseBatchParams,
	type InclusionProofParams,
	type Progress,
	type RecordIdsParams,
	type RecordsList,
	type RecordsListParams,
	type RecordStats,
	type RecordView,
	type SignedUnder,
	type SignedUnderParams,
	type StoreSignaturesParams,
	type StoreSignaturesResult,
	type UnsignedPageParams,
	type UnsignedRecords,
} from "../src/contract";
import { BatchTally } from "../src/records/batch-tally";
import { RecordsIntake } from "../src/records/intake";
import { MongoRecordsStore } from "../src/records/mongo-store";
import { seedIfEmpty } from "../src/records/records";
import { SqliteRecordsStore } from "../src/records/sqlite-store";
import { BatchClosedError, signatureView, type RecordsStore } from "../src/records/store";
import { serviceSettings, type RecordsSettings } from "../src/settings";
import { signatureInclusion } from "../src/records/signature-proof";
import { LogReads } from "../src/tlog/log-reads";
import type { CheckpointPublisher } from "../src/tlog/publisher";
import { logActions, startPublisher } from "../src/tlog/service-log";

interface RecordsVars {
	store: RecordsStore;
	/** Who may store signatures and close batches (src/records/intake.ts). */
	intake: RecordsIntake;
	/** What this process stored under recent batches (src/records/batch-tally.ts). */
	tally: BatchTally;
	/** Checkpoints of the signature log (docs/design.md §8.4). */
	checkpoints: CheckpointPublisher | null;
	/** Its checkpoints and proofs, for the gateway. */
	logReads: LogReads;
}

export const RecordsStoreMixin = StoreMixin<RecordsStore>({
	owner: "records",
	collections: ["records", "signatures"],
	embedded: (dataDir, log) => SqliteRecordsStore.open(dataDir, log),
	mongo: (uri, service) => MongoRecordsStore.open(uri, service),
});

/** The schema, typed for its own settings, methods and vars. */
export type RecordsSchema = ServiceSchema<
	RecordsSettings & { $secureSettings: string[] },
	Record<string, never>,
	RecordsVars
>;

export function createRecordsService(settings: RecordsSettings): RecordsSchema {
	const schema: RecordsSchema = {
		name: "records",
		mixins: [RecordsStoreMixin],
		// Settings travel to every node in INFO packets: a MONGO_URI (and the batcher's credential) must not.
		settings: { ...settings, $secureSettings: ["mongoUri", "batcherCredential"] },
		actions: {
			/** The next `limit` unsigned records after `after` (ascending ids), with their payloads. */
			unsignedPage: {
				params: unsignedPageParams,
				async handler(ctx: Context<UnsignedPageParams>): Promise<UnsignedRecords> {
					return {
						records: await this.store.unsignedRecords(
							ctx.params.after,
							ctx.params.limit,
						),
					};
				},
			},
			/** Of the given records, those without a signature (a failed batch's retry set), with their payloads. */
			unsignedAmong: {
				params: recordIdsParams,
				async handler(ctx: Context<RecordIdsParams>): Promise<UnsignedRecords> {
					return { records: await this.store.unsignedAmong(ctx.params.ids) };
				},
			},
			/** How many records there are and how large the largest is: what a run's batch size must fit. */
			stats: {
				async handler(): Promise<RecordStats> {
					return {
						records: await this.store.recordCount(),
						maxRecordBytes: await this.store.maxRecordBytes(),
					};
				},
			},
			/**
			 * Stores a piece of a batch's signatures sent by its lease's holder; already-signed records
			 * keep their first signature; a closed batch's are refused.
			 */
			storeSignatures: {
				params: storeSignaturesParams,
				async handler(ctx: Context<StoreSignaturesParams>): Promise<StoreSignaturesResult> {
					this.intake.admitSignatures(ctx.params, ctx.nodeID ?? this.broker.nodeID);
					try {
						const result = await this.store.storeSignatures(ctx.params);
						this.tally.add(
							ctx.params.batchId,
							ctx.params.keyId,
							ctx.params.leaseId,
							result.stored,
						);
						return result;
					} catch (err) {
						if (err instanceof BatchClosedError)
							throw new DomainError("BATCH_CLOSED", err.message, {
								batchId: err.batchId,
							});
						throw err;
					}
				},
			},
			/** Closes a batch that ended without its signer's reply (the batcher's proof only); answers what is stored under it and which of its records are unsigned. */
			closeBatch: {
				params: closeBatchParams,
				async handler(ctx: Context<CloseBatchParams>): Promise<ClosedBatch> {
					this.intake.admitClose(ctx.params, ctx.nodeID ?? this.broker.nodeID);
					return this.store.closeBatch(ctx.params.batchId, ctx.params.recordIds);
				},
			},
			/** The signatures stored under a batch, by key and lease: what the batcher counts a batch by. */
			signedUnder: {
				params: signedUnderParams,
				async handler(ctx: Context<SignedUnderParams>): Promise<SignedUnder> {
					return {
						signed:
							this.tally.get(ctx.params.batchId) ??
							(await this.store.signedUnder(ctx.params.batchId)),
					};
				},
			},
			progress: {
				async handler(): Promise<Progress> {
					return {
						records: await this.store.recordCount(),
						signed: await this.store.signedCount(),
					};
				},
			},
			/** GET /api/records: records in id order after `after`, with their signatures; `signed` picks signed or unsigned only. */
			list: {
				params: recordsListParams,
				handler(ctx: Context<RecordsListParams>): Promise<RecordsList> {
					return this.store.list(ctx.params.after, ctx.params.limit, ctx.params.signed);
				},
			},
			/** One record with its signature, if any. */
			get: {
				params: { id: { type: "string", min: 1 } },
				async handler(ctx: Context<{ id: string }>): Promise<RecordView> {
					const record = await this.store.record(ctx.params.id);
					if (!record)
						throw new DomainError(
							"RECORD_NOT_FOUND",
							`Record "${ctx.params.id}" not found`,
							{ id: ctx.params.id },
						);
					const signature = await this.store.signature(ctx.params.id);
					return {
						id: record.id,
						data: record.data,
						signature: signature && signatureView(signature),
					};
				},
			},
			...logActions(),
			/** A record's signature leaf and its audit path to a checkpoint's root. */
			inclusionProof: {
				params: inclusionProofParams,
				handler(ctx: Context<InclusionProofParams>) {
					return signatureInclusion(
						this.store,
						this.logReads,
						ctx.params.id,
						ctx.params.size,
					);
				},
			},
		},
		async started() {
			this.intake = new RecordsIntake(
				this.settings.trust,
				this.settings.batcherCredential,
				this.logger,
			);
			this.tally = new BatchTally();
			const started = Date.now();
			const seeded = await seedIfEmpty(this.store, this.settings.seedCount);
			if (seeded) this.logger.info(`Seeded ${seeded} records in ${Date.now() - started} ms`);
			this.checkpoints = startPublisher(
				this.store.signatureLog,
				this.settings.signatureLog,
				this.logger,
			);
			this.logReads = new LogReads(this.store.signatureLog, this.checkpoints, "signatures");
		},
		events: {
			/** A checkpoint at the end of every run (docs/design.md §8.4). */
			"run.completed"() {
				void this.checkpoints?.publish().catch(() => undefined);
			},
		},
		async stopped() {
			// Before the mixin closes the store: the last entries are checkpointed.
			await this.checkpoints?.stop();
		},
	};
	return schema;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) =>
	createRecordsService(serviceSettings(appConfig()).records);
