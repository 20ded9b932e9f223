/**
 * keyring: owns `keys` and `leases`. A single instance: it generates or loads the Ed25519
 * keys, grants leases from the LRU queue of free keys, renews, releases and reclaims them,
 * and serves the public JWKS. The behaviour lives in src/keyring/; this file wires it up.
 *
 * Only one keyring grants leases: over NATS an election among keyring nodes runs before any
 * store opens (src/keyring/election.ts), and in the store the keyring claims the keyring role
 * with a fencing number that every write it makes carries (src/keyring/role.ts), so a second
 * keyring on one store is refused by the store itself. One that loses refuses to start and
 * says why; it never offers the `keyring` service, so no signer can reach it.
 *
 * Only an enrolled signer obtains, renews or releases a lease: each request carries a proof
 * signed with its credential, checked by src/keyring/credential-gate.ts; the holder is the node
 * the proof names. A key is granted only for a batch the batcher recorded: the acquire carries
 * its dispatch ticket, signed by an enrolled batcher, for the proven node, taken once. The
 * grant comes with a lease token signed with the keyring's authority key, which records checks
 * offline. A refusal is logged with the caller's node id.
 */
import os from "node:os";
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { DomainError } from "../src/errors";
import { describeStore, StoreMixin } from "../mixins/store.mixin";
import { systemClock, type Clock } from "../src/clock";
import { appConfig } from "../src/config";
import {
	acquireParams,
	leaseRefParams,
	type AcquireParams,
	type Lease,
	type LeaseChange,
	type LeaseRef,
} from "../src/contract";
import type { KeyringElection } from "../src/keyring/election";
import { electOnBus, leaveForRestart, otherKeyringNodes } from "../src/keyring/election-bus";
import { Keyring } from "../src/keyring/keyring";
import { announceAuthority, enrolLocalCredential } from "../src/keyring/local-trust";
import { LeaseDesk, type Caller } from "../src/keyring/lease-desk";
import { MongoKeyringStore } from "../src/keyring/mongo-store";
import { SqliteKeyringStore } from "../src/keyring/sqlite-store";
import type { KeyringStore } from "../src/keyring/store";
import type { MixinSchema } from "../src/service-schema";
import { serviceSettings, type KeyringSettings } from "../src/settings";
import { LogReads } from "../src/tlog/log-reads";
import type { CheckpointPublisher } from "../src/tlog/publisher";
import { logActions, startPublisher } from "../src/tlog/service-log";

interface KeyringVars {
	store: KeyringStore;
	keyring: Keyring;
	desk: LeaseDesk;
	election: KeyringElection | null;
	/** Set when another active keyring showed up: this one grants and renews nothing more. */
	fencedBy: string | null;
	/** Checkpoints of the lease log (docs/design.md §8.4). */
	checkpoints: CheckpointPublisher | null;
	/** Its checkpoints and proofs, for the gateway. */
	logReads: LogReads;
}

/** Runs before the store opens (the last mixin's `started` runs first): a keyring that loses the election never touches a store. */
const electionGuard: Partial<ServiceSchema<KeyringSettings, Record<string, never>, KeyringVars>> = {
	async started() {
		this.fencedBy = null;
		this.election = await electOnBus(this.broker, this.settings, this.logger).catch((err) => {
			this.logger.error((err as Error).message);
			throw err;
		});
	},
};
const KeyringElectionGuard: MixinSchema = electionGuard;

const KeyringStoreMixin = StoreMixin<SqliteKeyringStore | MongoKeyringStore>({
	owner: "keyring",
	collections: ["keys", "leases"],
	embedded: (dataDir, log) => SqliteKeyringStore.open(dataDir, log),
	mongo: (uri, service) => MongoKeyringStore.open(uri, service),
});

interface KeyringMethods {
	callerOf(ctx: Context): Caller;
}

/** What a test may give the keyring besides its settings: a clock it moves by hand. */
export interface KeyringServiceDeps {
	clock?: Clock;
}

/** The schema, typed for its own settings, methods and vars. */
export type KeyringSchema = ServiceSchema<
	KeyringSettings & { $secureSettings: string[] },
	KeyringMethods,
	KeyringVars
>;

export function createKeyringService(
	settings: KeyringSettings,
	deps: KeyringServiceDeps = {},
): KeyringSchema {
	const schema: KeyringSchema = {
		name: "keyring",
		mixins: [KeyringStoreMixin, KeyringElectionGuard],
		// Service settings travel to every node in INFO packets: the master key and a MONGO_URI's credentials must not.
		settings: { ...settings, $secureSettings: ["masterKey", "mongoUri"] },
		actions: {
			/** The least recently used free key for the batch its ticket names, sealed to the proven signer's session (src/keyring/lease-desk.ts). */
			acquire: {
				params: acquireParams,
				handler(ctx: Context<AcquireParams>): Promise<Lease> {
					return this.desk.acquire(ctx.params, this.callerOf(ctx));
				},
			},
			/** Extends the proven holder's lease, with a fresh lease token. */
			renew: {
				params: leaseRefParams,
				handler(ctx: Context<LeaseRef>): Promise<LeaseChange> {
					return this.desk.renew(ctx.params, this.callerOf(ctx));
				},
			},
			release: {
				params: leaseRefParams,
				handler(ctx: Context<LeaseRef>): Promise<LeaseChange> {
					return this.desk.release(ctx.params, this.callerOf(ctx));
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
		},
		methods: {
			/** Who sent a request, as the transport says. */
			callerOf(ctx: Context): Caller {
				return {
					nodeID: ctx.nodeID ?? this.broker.nodeID,
					local: !ctx.nodeID || ctx.nodeID === this.broker.nodeID,
				};
			},
		},
		events: {
			// A signer that left cannot use a key: do not grant it one it waited for.
			"$node.disconnected"(ctx: Context<{ node: { id: string } }>) {
				const dropped = this.keyring?.dropWaiters(ctx.params.node.id) ?? 0;
				if (dropped)
					this.logger.info(
						`Node ${ctx.params.node.id} left: turned away its ${dropped} waiting acquire(s)`,
					);
			},
			/**
			 * A second active keyring can only appear after a partition or a paused process healed.
			 * Both sides stop granting at once; restarted, they elect one again.
			 */
			"$services.changed"() {
				if (this.election?.state !== "active" || this.fencedBy) return;
				const [rival] = otherKeyringNodes(this.broker, ["keyring"]);
				if (!rival) return;
				this.fencedBy = rival;
				this.election.fence();
				// Renewals and acquires (waiting ones too) are turned away; releases keep working.
				void this.keyring?.fence(
					() =>
						new DomainError(
							"KEYRING_CONFLICT",
							`This keyring no longer grants or renews leases: keyring node '${rival}' is active too`,
							{ other: rival },
						),
				);
				this.logger.error(
					`Keyring node '${rival}' is active too: this keyring stops granting and renewing leases now. Two keyrings must never both grant; restart one of them alone.`,
				);
				leaveForRestart(this.broker);
			},
		},
		async started() {
			for (const role of ["signer", "batcher"] as const)
				await enrolLocalCredential(
					this.store,
					role,
					this.settings.enrolLocal[role],
					this.logger,
				);
			this.keyring = await Keyring.open(this.settings, {
				store: this.store,
				storeName: describeStore(this.settings, "keyring"),
				identity: { holder: this.broker.nodeID, host: os.hostname(), pid: process.pid },
				logger: this.logger,
				clock: deps.clock,
				emit: (event, payload) => {
					this.broker
						.emit(event, payload)
						.catch((err) =>
							this.logger.warn(`Could not emit ${event}: ${(err as Error).message}`),
						);
				},
			});
			// Proofs are dated by the signers' wall clocks: checked against this machine's, whatever clock the leases run on.
			this.desk = new LeaseDesk(
				this.keyring,
				this.store,
				systemClock,
				this.settings.leaseGraceMs,
				this.logger,
			);
			announceAuthority(this.keyring.authority, this.settings, this.logger);
			this.checkpoints = startPublisher(
				this.store.leaseLog,
				this.settings.leaseLog,
				this.logger,
			);
			this.logReads = new LogReads(this.store.leaseLog, this.checkpoints, "leases");
		},
		async stopped() {
			// Runs before the mixin closes the stores: the change in progress finishes first.
			await this.keyring?.close();
			await this.checkpoints?.stop();
		},
	};
	return schema;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) =>
	createKeyringService(serviceSettings(appConfig()).keyring);
