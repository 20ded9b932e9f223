/**
 * batcher: owns `runs` and `batches`. `start({ batchSize })` creates a run whose batch size
 * is fixed for its whole life; the run loop (src/batcher/batcher.ts) records each batch
 * before dispatching it to a signer, retries failed batches as new batches, and resumes an
 * interrupted run when the service starts again. This file wires it to the broker.
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { StoreMixin } from "../mixins/store.mixin";
import { Batcher } from "../src/batcher/batcher";
import { recordsOnBus, signersOnBus } from "../src/batcher/batcher-bus";
import { MongoBatcherStore } from "../src/batcher/mongo-store";
import type { BatcherStore } from "../src/batcher/ports";
import { SqliteBatcherStore } from "../src/batcher/sqlite-store";
import { systemClock } from "../src/clock";
import { appConfig } from "../src/config";
import {
	cancelRunParams,
	emit,
	Events,
	runIdParams,
	startRunParams,
	type ActionParams,
	type StartRunParams,
} from "../src/contract";
import { CredentialSource } from "../src/identity/credential";
import { RequestMacKey } from "../src/identity/request-mac";
import { PEER_RECONNECTED } from "../src/broker/lost-requests";
import { natsMaxPayload, watchNatsStatus } from "../src/broker/nats-status";
import { serviceSettings, type BatcherSettings } from "../src/settings";
interface BatcherVars {
	store: BatcherStore;
	batcher: Batcher;
	/** Signs dispatch tickets and close proofs: the keyring and records take batches from it alone. */
	/** The batcher's credential, read again when its file changes (a rotation, §6.1). */
	credentials: CredentialSource;
}

const BatcherStoreMixin = StoreMixin<SqliteBatcherStore | MongoBatcherStore>({
	owner: "batcher",
	collections: ["runs", "batches"],
	embedded: (dataDir, log) => SqliteBatcherStore.open(dataDir, log),
	mongo: (uri, service) => MongoBatcherStore.open(uri, service),
});

/** The schema, typed for its own settings, methods and vars. */
export type BatcherSchema = ServiceSchema<
	BatcherSettings & { $secureSettings: string[] },
	Record<string, never>,
	BatcherVars
>;

export function createBatcherService(settings: BatcherSettings): BatcherSchema {
	const schema: BatcherSchema = {
		name: "batcher",
		dependencies: ["records"],
		mixins: [BatcherStoreMixin],
		// Settings travel to every node in INFO packets: a MONGO_URI and the credential must not.
		settings: { ...settings, $secureSettings: ["mongoUri", "credential"] },
		actions: {
			/** Starts a run over every unsigned record (`follow`: and over those that arrive, until cancelled). The batch size is fixed for the run. */
			start: {
				params: startRunParams,
				handler(ctx: Context<StartRunParams>) {
					return this.batcher.start(ctx.params);
				},
			},
			/** The active run with its progress, or the last run. */
			status: {
				handler() {
					return this.batcher.status();
				},
			},
			runs: {
				handler() {
					return this.batcher.runs();
				},
			},
			/** Cancels the active run (or the one named): no new batch goes out, the ones in flight finish; stored as `cancelled`. */
			cancel: {
				params: cancelRunParams,
				handler(ctx: Context<ActionParams<"batcher.cancel">>) {
					return this.batcher.cancel(ctx.params.runId);
				},
			},
			/** One run with its batch counts and, once finished, its report. */
			get: {
				params: runIdParams,
				handler(ctx: Context<ActionParams<"batcher.get">>) {
					return this.batcher.get(ctx.params.runId);
				},
			},
		},
		events: {
			/** Records were submitted: a follow run waiting for them looks now. */
			[Events.recordsArrived]() {
				this.batcher?.recordsArrived();
			},
			/** A signer back on NATS: requests sent to it meanwhile may be lost; its batches are checked on now. */
			[PEER_RECONNECTED](ctx: Context<{ nodeID: string }>) {
				this.batcher?.transportReconnected(ctx.params.nodeID);
			},
		},
		async started() {
			const broker = this.broker;
			// Read again when its file changes: a rotated credential signs the next tickets and proofs (§6.1).
			this.credentials = new CredentialSource(this.settings.credential, {
				switched: (next, previous) =>
					this.logger.info(
						`Batcher credential rotated: "${next.name}" from ${next.source} signs dispatch tickets and close proofs from now on (was "${previous.name}")`,
					),
				unreadable: (err) =>
					this.logger.warn(
						`Keeping the batcher credential in use: its file changed but ${err.message}`,
					),
			});
			const credential = () => this.credentials.current();
			const macKey = new RequestMacKey("batcher", this.settings.trust);
			this.logger.info(
				`Batcher credential "${credential().name}" from ${credential().source}: dispatch tickets are signed with it`,
			);
			this.batcher = new Batcher(this.settings, {
				store: this.store,
				records: recordsOnBus(broker, credential),
				signers: signersOnBus(
					broker,
					credential,
					() => natsMaxPayload(broker),
					(batcher) => macKey.current(batcher),
				),
				emit: (event, payload) =>
					void Promise.resolve(emit(broker, event, payload)).catch((err) =>
						this.logger.warn(`Could not emit ${event}: ${(err as Error).message}`),
					),
				clock: systemClock,
				logger: this.logger,
				nodeStopping: () => broker.stopping,
			});
			// This node back on NATS: replies sent to it meanwhile may be lost.
			watchNatsStatus(
				broker,
				(type) => type === "reconnect" && this.batcher.transportReconnected(),
			);
			await this.batcher.resumeInterrupted();
		},
		async stopped() {
			await this.batcher?.stop();
		},
	};
	return schema;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) =>
	createBatcherService(serviceSettings(appConfig()).batcher);
