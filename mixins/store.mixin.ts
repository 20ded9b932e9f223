/**
 * Storage for a data-owning service: opens its store when the service starts (before the
 * service's own `started`) and closes it after its `stopped`. `MONGO_URI` set: MongoDB through
 * the official `mongodb` driver (src/store/mongo.ts, a client per store, closed and awaited on
 * stop); otherwise the embedded SQLite file of the owner in `DATA_DIR` (in memory when
 * `dataDir` is ""). The service reaches it as `this.store`.
 *
 * Every owner also answers `page`: its collections by `_id`, for the audit and the export
 * when they read a running system over the transporter. No store pages secrets.
 */
import type { Context, ServiceSchema } from "moleculer";
import { DomainError } from "../src/errors";
import { pageParams, type Page, type PageParams } from "../src/contract";
import { addReadinessCondition } from "../src/broker/health";
import type { MixinSchema } from "../src/service-schema";
import type { StoreOwner } from "../src/store/schema";

export interface StoreSettings {
	/** Embedded store folder, "" for memory only. */
	dataDir: string;
	mongoUri: string | null;
}

/** What every owner's store offers besides its own operations. */
export interface OwnedStore {
	page(collection: string, after: string | undefined, limit: number): Promise<Page>;
	/** Resolves when the store answers (a readiness probe). */
	ping(): Promise<void>;
	close(): Promise<void>;
}

/** How often the store is probed for readiness, and how long a probe may take. */
const PING_EVERY_MS = 5_000;
const PING_TIMEOUT_MS = 3_000;

export interface StoreSpec<S extends OwnedStore> {
	owner: StoreOwner;
	collections: readonly string[];
	embedded(dataDir: string, log: (line: string) => void): S;
	mongo(uri: string, service: { broker: unknown; logger: unknown }): Promise<S>;
}

/** Where a store lives, for log lines: never the URI's credentials. */
export function describeStore(settings: StoreSettings, owner: StoreOwner): string {
	if (settings.mongoUri)
		return `MongoDB ${settings.mongoUri.replace(/\/\/[^@/]*@/, "//***@").replace(/\?.*$/, "")}`;
	return settings.dataDir ? `${settings.dataDir}/${owner}.sqlite` : "memory";
}

export function StoreMixin<S extends OwnedStore>(spec: StoreSpec<S>): MixinSchema {
	const mixin: ServiceSchema<
		StoreSettings,
		Record<string, never>,
		{ store: S; storeProblem: string | null; stopProbing: () => void }
	> = {
		name: `${spec.owner}-store`,
		actions: {
			/** One page of an owned collection by `_id` (ascending): the audit and the export read through it. */
			page: {
				params: pageParams,
				handler(ctx: Context<PageParams>): Promise<Page> {
					const { collection, after, limit = 1000 } = ctx.params;
					if (!spec.collections.includes(collection))
						throw new DomainError(
							"UNKNOWN_COLLECTION",
							`Unknown collection "${collection}"; ${this.name} owns: ${spec.collections.join(", ")}`,
							{ collection },
						);
					return this.store.page(collection, after, limit);
				},
			},
		},
		async started() {
			const { settings } = this;
			this.store = settings.mongoUri
				? await spec.mongo(settings.mongoUri, this)
				: spec.embedded(settings.dataDir, (line) => this.logger.warn(line));
			this.logger.info(
				`Store ready: ${spec.collections.join(", ")} on ${describeStore(settings, spec.owner)}`,
			);
			// The node is ready only while its store answers: a probe every few seconds, its verdict kept.
			this.storeProblem = null;
			const where = describeStore(settings, spec.owner);
			const probe = () => {
				let timer: NodeJS.Timeout | undefined;
				const timeout = new Promise<never>(
					(_, reject) =>
						(timer = setTimeout(
							() => reject(new Error(`no answer within ${PING_TIMEOUT_MS} ms`)),
							PING_TIMEOUT_MS,
						)),
				);
				Promise.race([this.store.ping(), timeout])
					.then(
						() => {
							if (this.storeProblem) this.logger.info(`Store ${where} answers again`);
							this.storeProblem = null;
						},
						(err) => {
							if (!this.storeProblem)
								this.logger.warn(
									`Store ${where} does not answer: ${(err as Error).message}`,
								);
							this.storeProblem = `store of ${spec.owner} (${where}) does not answer: ${(err as Error).message}`;
						},
					)
					.finally(() => clearTimeout(timer));
			};
			const timer = setInterval(probe, PING_EVERY_MS);
			timer.unref();
			const removeCondition = addReadinessCondition(
				this.broker,
				`store:${spec.owner}`,
				() => this.storeProblem,
			);
			this.stopProbing = () => {
				clearInterval(timer);
				removeCondition();
			};
		},
		async stopped() {
			this.stopProbing?.();
			// Once: a REPL's quit and its closing input can both stop the broker.
			const store = this.store;
			this.store = undefined as unknown as S;
			await store?.close();
		},
	};
	return mixin;
}
