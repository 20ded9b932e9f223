/**
 * records: owns `records` and `signatures`. Seeds the records when the store is empty, pages
 * unsigned records in ascending order, and stores signatures in bulk with the unique key on
 * `signatures.recordId` as the guard against a second signature (src/records/store.ts): only
 * from the holder of the batch's lease (docs/design.md §6.4), and a batch is closed only by the
 * batcher (§6.5). The logic is src/records/records-desk.ts; refusals are 403s, logged.
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { StoreMixin } from "../mixins/store.mixin";
import { appConfig } from "../src/config";
import {
	closeBatchParams,
	emit,
	Events,
	inclusionProofParams,
	recordIdParams,
	recordIdsParams,
	recordsListParams,
	signedUnderParams,
	storeSignaturesParams,
	submitRecordsParams,
	unsignedArrivalsParams,
	unsignedPageParams,
	type ActionParams,
	type KeyRevokedEvent,
	type RecordsListParams,
} from "../src/contract";
import { keyringEnrolments, type EnrolmentReader } from "../src/keyring/enrolments";
import { MongoRecordsStore } from "../src/records/mongo-store";
import { RecordsDesk } from "../src/records/records-desk";
import { SqliteRecordsStore } from "../src/records/sqlite-store";
import type { RecordsStore } from "../src/records/store";
import { serviceSettings, type RecordsSettings } from "../src/settings";
import { signatureInclusion } from "../src/records/signature-proof";
import { logActions, ServiceLog } from "../src/tlog/service-log";

interface RecordsVars {
	store: RecordsStore;
	/** Signatures, closings and record reads (src/records/records-desk.ts). */
	desk: RecordsDesk;
	/** The signature log's checkpoints and proofs (docs/design.md §8.4). */
	tlog: ServiceLog;
	/** The keyring's enrolled credentials, read from its store (null: it is in memory). */
	enrolments: EnrolmentReader | null;
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
				handler(ctx: Context<ActionParams<"records.unsignedPage">>) {
					return this.desk.unsignedPage(ctx.params.after, ctx.params.limit);
				},
			},
			/** Of the given records, those without a signature (a failed batch's retry set), with their payloads. */
			unsignedAmong: {
				params: recordIdsParams,
				handler(ctx: Context<ActionParams<"records.unsignedAmong">>) {
					return this.desk.unsignedAmong(ctx.params.ids);
				},
			},
			/** A follow run's page: the next unsigned records after arrival `afterSeq`, in arrival order. */
			unsignedArrivals: {
				params: unsignedArrivalsParams,
				handler(ctx: Context<ActionParams<"records.unsignedArrivals">>) {
					return this.desk.unsignedArrivals(ctx.params.afterSeq, ctx.params.limit);
				},
			},
			/**
			 * Stores submitted records, naming the submitter, only with the batcher credential's
			 * submit proof (POST /api/records, the REPL's `submit`); then tells the batcher they wait.
			 */
			submit: {
				params: submitRecordsParams,
				async handler(ctx: Context<ActionParams<"records.submit">>) {
					const result = await this.desk.submit(
						ctx.params,
						ctx.nodeID ?? this.broker.nodeID,
					);
					if (result.stored)
						void emit(ctx, Events.recordsArrived, {
							stored: result.stored,
							submittedAt: result.submittedAt,
						});
					return result;
				},
			},
			/** How many records there are and how large the largest is: what a run's batch size must fit. */
			stats: {
				handler() {
					return this.desk.stats();
				},
			},
			/**
			 * Stores a piece of a batch's signatures sent by its lease's holder; already-signed records
			 * keep their first signature; a closed batch's are refused.
			 */
			storeSignatures: {
				params: storeSignaturesParams,
				handler(ctx: Context<ActionParams<"records.storeSignatures">>) {
					return this.desk.storeSignatures(ctx.params, ctx.nodeID ?? this.broker.nodeID);
				},
			},
			/** Closes a batch that ended without its signer's reply (the batcher's proof only); answers what is stored under it and which of its records are unsigned. */
			closeBatch: {
				params: closeBatchParams,
				handler(ctx: Context<ActionParams<"records.closeBatch">>) {
					return this.desk.closeBatch(ctx.params, ctx.nodeID ?? this.broker.nodeID);
				},
			},
			/** The signatures stored under a batch, by key and lease: what the batcher counts a batch by. */
			signedUnder: {
				params: signedUnderParams,
				handler(ctx: Context<ActionParams<"records.signedUnder">>) {
					return this.desk.signedUnder(ctx.params.batchId);
				},
			},
			progress: {
				handler() {
					return this.desk.progress();
				},
			},
			/** GET /api/records: records in id order after `after`, with their signatures; `signed` picks signed or unsigned only. */
			list: {
				params: recordsListParams,
				handler(ctx: Context<RecordsListParams>) {
					return this.store.list(ctx.params.after, ctx.params.limit, ctx.params.signed);
				},
			},
			/** One record with its signature, if any. */
			get: {
				params: recordIdParams,
				handler(ctx: Context<ActionParams<"records.get">>) {
					return this.desk.record(ctx.params.id);
				},
			},
			...logActions(),
			/** A record's signature leaf and its audit path to a checkpoint's root. */
			inclusionProof: {
				params: inclusionProofParams,
				handler(ctx: Context<ActionParams<"records.inclusionProof">>) {
					return signatureInclusion(
						this.store,
						this.tlog.reads,
						ctx.params.id,
						ctx.params.size,
					);
				},
			},
		},
		async started() {
			// Batcher proofs are taken from any batcher the keyring enrolled: read from its store, not the bus.
			this.enrolments = keyringEnrolments(this.settings);
			const enrolments = this.enrolments;
			this.desk = new RecordsDesk(
				this.store,
				this.settings,
				this.logger,
				enrolments && {
					enrolledBatchers: () => enrolments.enrolled("batcher"),
					revokedKeys: () => enrolments.revokedKeys(),
				},
			);
			await this.desk.seed(this.settings.seedCount, (line) => this.logger.info(line));
			await this.desk.readRevocations();
			this.tlog = ServiceLog.start(
				this.store.signatureLog,
				{
					name: "signatures",
					key: this.settings.signatureLog,
					everyMs: this.settings.checkpointEveryMs,
				},
				this.logger,
			);
		},
		events: {
			/** A checkpoint at the end of every run (docs/design.md §8.4). */
			"run.completed"() {
				return this.tlog.checkpointNow();
			},
			/** A revoked key signs nothing more that is stored here (docs/design.md §5.8). */
			[Events.keyRevoked](ctx: Context<KeyRevokedEvent>) {
				this.desk.keyRevoked(ctx.params?.notice, ctx.nodeID ?? this.broker.nodeID);
			},
		},
		async stopped() {
			// Before the mixin closes the store: the last entries are checkpointed.
			await this.tlog?.stop();
			await this.desk?.stop();
			await this.enrolments?.close();
		},
	};
	return schema;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) =>
	createRecordsService(serviceSettings(appConfig()).records);
