/**
 * keyring: owns `keys` and `leases`. A single instance: it generates or loads the Ed25519
 * keys, grants leases from the LRU queue of free keys, renews, releases and reclaims them,
 * and serves the public JWKS. The behaviour lives in src/keyring/; this file wires it up.
 *
 * Only one keyring grants leases (docs/design.md §5.7): over NATS an election runs before any
 * store opens (src/keyring/election-bus.ts), and in the store the keyring role fences every
 * write (src/keyring/role.ts). One that loses refuses to start and says why; it never offers
 * the `keyring` service. Only an enrolled signer obtains, renews or releases a lease, and only
 * for a batch the batcher recorded (§6.2, §6.3: src/keyring/lease-desk.ts); a refusal is
 * logged with the caller's node id.
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { describeStore, StoreMixin } from "../mixins/store.mixin";
import type { Clock } from "../src/clock";
import { appConfig } from "../src/config";
import {
	acquireParams,
	addKeysParams,
	keyChangeParams,
	leaseRefParams,
	rotateMasterKeyParams,
	type AcquireParams,
	type AddKeysParams,
	type KeyChangeParams,
	type LeaseRef,
	type RotateMasterKeyParams,
} from "../src/contract";
import type { KeyringElection } from "../src/keyring/election";
import { electOnBus, fenceOnRival } from "../src/keyring/election-bus";
import type { Keyring } from "../src/keyring/keyring";
import { callerOf, openKeyringOnBus } from "../src/keyring/keyring-bus";
import type { LeaseDesk } from "../src/keyring/lease-desk";
import { MongoKeyringStore } from "../src/keyring/mongo-store";
import { SqliteKeyringStore } from "../src/keyring/sqlite-store";
import type { KeyringStore } from "../src/keyring/store";
import type { MixinSchema } from "../src/service-schema";
import { serviceSettings, type KeyringSettings } from "../src/settings";
import { logActions, ServiceLog } from "../src/tlog/service-log";

interface KeyringVars {
	store: KeyringStore;
	keyring: Keyring;
	desk: LeaseDesk;
	election: KeyringElection | null;
	/** Set when another active keyring showed up: this one grants and renews nothing more. */
	fencedBy: string | null;
	/** The lease log's checkpoints and proofs (docs/design.md §8.4). */
	tlog: ServiceLog;
}

/** Runs before the store opens (the last mixin's `started` runs first): a keyring that loses the election never touches a store. */
const KeyringElectionGuard: MixinSchema = {
	async started() {
		this.fencedBy = null;
		this.election = await electOnBus(this.broker, this.settings, this.logger);
	},
} satisfies Partial<ServiceSchema<KeyringSettings, Record<string, never>, KeyringVars>>;

const KeyringStoreMixin = StoreMixin<SqliteKeyringStore | MongoKeyringStore>({
	owner: "keyring",
	collections: ["keys", "leases"],
	embedded: (dataDir, log) => SqliteKeyringStore.open(dataDir, log),
	mongo: (uri, service) => MongoKeyringStore.open(uri, service),
});

/** What a test may give the keyring besides its settings: a clock it moves by hand. */
export interface KeyringServiceDeps {
	clock?: Clock;
}

/** The schema, typed for its own settings, methods and vars. */
export type KeyringSchema = ServiceSchema<
	KeyringSettings & { $secureSettings: string[] },
	Record<string, never>,
	KeyringVars
>;

export function createKeyringService(
	settings: KeyringSettings,
	deps: KeyringServiceDeps = {},
): KeyringSchema {
	const schema: KeyringSchema = {
		name: "keyring",
		mixins: [KeyringStoreMixin, KeyringElectionGuard],
		// Service settings travel to every node in INFO packets: the master key, the token's PIN and a MONGO_URI's credentials must not.
		settings: {
			...settings,
			$secureSettings: ["masterKey", "masterKeyNext", "mongoUri", "token"],
		},
		actions: {
			/** The least recently used free key for the batch its ticket names, sealed to the proven signer's session (src/keyring/lease-desk.ts). */
			acquire: {
				params: acquireParams,
				handler(ctx: Context<AcquireParams>) {
					return this.desk.acquire(ctx.params, callerOf(ctx, this.broker.nodeID));
				},
			},
			/** Extends the proven holder's lease, with a fresh lease token. */
			renew: {
				params: leaseRefParams,
				handler(ctx: Context<LeaseRef>) {
					return this.desk.renew(ctx.params, callerOf(ctx, this.broker.nodeID));
				},
			},
			release: {
				params: leaseRefParams,
				handler(ctx: Context<LeaseRef>) {
					return this.desk.release(ctx.params, callerOf(ctx, this.broker.nodeID));
				},
			},
			jwks: {
				handler() {
					return this.keyring.jwks();
				},
			},
			keys: {
				handler() {
					return this.keyring.keyList();
				},
			},
			status: {
				handler() {
					return this.keyring.status();
				},
			},
			...logActions(),
			/** An operator's key changes (docs/design.md §5.8), each with an operator proof. */
			addKeys: {
				params: addKeysParams,
				handler(ctx: Context<AddKeysParams>) {
					return this.desk.addKeys(ctx.params, callerOf(ctx, this.broker.nodeID));
				},
			},
			retireKey: {
				params: keyChangeParams,
				handler(ctx: Context<KeyChangeParams>) {
					return this.desk.endKey(
						"retire",
						ctx.params,
						callerOf(ctx, this.broker.nodeID),
					);
				},
			},
			revokeKey: {
				params: keyChangeParams,
				handler(ctx: Context<KeyChangeParams>) {
					return this.desk.endKey(
						"revoke",
						ctx.params,
						callerOf(ctx, this.broker.nodeID),
					);
				},
			},
			/** Seals every key again under the next master key, which never travels on the bus (§5.8). */
			rotateMasterKey: {
				params: rotateMasterKeyParams,
				handler(ctx: Context<RotateMasterKeyParams>) {
					return this.desk.rotateMasterKey(ctx.params, callerOf(ctx, this.broker.nodeID));
				},
			},
		},
		events: {
			// A signer that left cannot use a key: do not grant it one it waited for.
			"$node.disconnected"(ctx: Context<{ node: { id: string } }>) {
				this.keyring?.dropWaiters(ctx.params.node.id);
			},
			/** A second active keyring (a healed partition): both stop granting (src/keyring/election-bus.ts). */
			"$services.changed"() {
				this.fencedBy ??= fenceOnRival(this);
			},
			/** A checkpoint at the end of every run (docs/design.md §8.4): its batches released their leases before they answered. */
			"run.completed"() {
				return this.tlog?.checkpointNow();
			},
		},
		async started() {
			({ keyring: this.keyring, desk: this.desk } = await openKeyringOnBus(this.settings, {
				bus: this.broker,
				store: this.store,
				storeName: describeStore(this.settings, "keyring"),
				logger: this.logger,
				clock: deps.clock,
			}));
			this.tlog = ServiceLog.start(
				this.store.leaseLog,
				{
					name: "leases",
					key: this.settings.leaseLog,
					everyMs: this.settings.checkpointEveryMs,
				},
				this.logger,
			);
		},
		async stopped() {
			// Runs before the mixin closes the stores: the change in progress finishes first.
			await this.keyring?.close();
			await this.tlog?.stop();
		},
	};
	return schema;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) =>
	createKeyringService(serviceSettings(appConfig()).keyring);
