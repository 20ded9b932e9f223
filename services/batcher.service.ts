/**
 * batcher: owns `runs` and `batches`. `start({ batchSize })` creates a run whose batch size
 * is fixed for its whole life; the run loop (src/batcher/batcher.ts) records each batch
 * before dispatching it to a signer, retries failed batches as new batches, and resumes an
 * interrupted run when the service starts again. This file wires it to the broker.
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { DbMixin, type Store } from "../mixins/db.mixin";
import { Batcher, type BatcherOptions } from "../src/batcher/batcher";
import type { SignersPort } from "../src/batcher/ports";
import { documentBatcherStore } from "../src/batcher/store";
import { systemClock } from "../src/clock";
import { appConfig } from "../src/config";
import { Actions, call, emit, startRunParams, type BatchDoc, type RunDoc, type StartRunParams } from "../src/contract";
import { serviceSettings, type BatcherSettings } from "../src/settings";



interface BatcherVars {
	stores: { runs: Store<RunDoc>; batches: Store<BatchDoc> };
	batcher: Batcher;
}

function signersOf(broker: ServiceBroker): SignersPort {
	return {
		available: () => broker.registry.getServiceList({ onlyAvailable: true }).flatMap(s => (s.name === "signer" && s.nodeID ? [s.nodeID] : [])),
		waitForAny: timeoutMs => broker.waitForServices("signer", timeoutMs).then(() => undefined, () => undefined),
		signBatch: (params, { nodeID, timeoutMs }) => call(broker, Actions.signer.signBatch, params, { timeout: timeoutMs, ...(nodeID ? { nodeID } : {}) })
	};
}

export function createBatcherService(settings: BatcherSettings): ServiceSchema {
	const schema: ServiceSchema<BatcherSettings, Record<string, never>, BatcherVars> = {
		name: "batcher",
		dependencies: ["records"],
		mixins: [DbMixin({ runs: { uniqueIndexes: ["runId"] }, batches: { uniqueIndexes: ["batchId"], indexes: ["runId"] } })],
		settings,
		actions: {
			/** Starts a run over every unsigned record. The batch size is fixed for the run. */
			start: {
				params: startRunParams,
				handler(ctx: Context<StartRunParams>) {
					return this.batcher.start(ctx.params);
				}
			},
			/** The active run with its progress, or the last run. */
			status: {
				handler() {
					return this.batcher.status();
				}
			},
			runs: {
				handler() {
					return this.batcher.runs();
				}
			},
			/** One run with its batch counts and, once finished, its report. */
			get: {
				params: { runId: { type: "string", min: 1 } },
				handler(ctx: Context<{ runId: string }>) {
					return this.batcher.get(ctx.params.runId);
				}
			}
		},
		async started() {
			const broker = this.broker;
			this.batcher = new Batcher(this.settings, {
				store: documentBatcherStore(this.stores.runs, this.stores.batches),
				records: {
					unsignedIds: async (after, limit) => (await call(broker, Actions.records.unsignedIds, { after, limit })).ids,
					filterUnsigned: async ids => (await call(broker, Actions.records.filterUnsigned, { ids })).ids,
					progress: () => call(broker, Actions.records.progress, {})
				},
				signers: signersOf(broker),
				emit: (event, payload) => void Promise.resolve(emit(broker, event, payload)).catch(err => this.logger.warn(`Could not emit ${event}: ${(err as Error).message}`)),
				clock: systemClock,
				logger: this.logger,
				nodeStopping: () => broker.stopping
			});
			await this.batcher.resumeInterrupted();
		},
		async stopped() {
			await this.batcher?.stop();
		}
	};
	return schema as unknown as ServiceSchema;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) => createBatcherService(serviceSettings(appConfig()).batcher);
