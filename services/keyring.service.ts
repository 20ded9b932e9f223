/**
 * keyring: owns `keys` and `leases`. A single instance: it generates or loads the Ed25519
 * keys, grants leases from the LRU queue of free keys, renews, releases and reclaims them,
 * and serves the public JWKS. The behaviour lives in src/keyring/; this file wires it up.
 *
 * Before its stores open, the guard makes sure this is the only keyring: a lock file on an
 * embedded store (one process per DATA_DIR), and over NATS an election among keyring nodes
 * (src/keyring/election.ts). A node that loses refuses to start and says why; it never
 * offers the `keyring` service, so no signer can reach it.
 */
import os from "node:os";
import type { Context, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import type { JWK } from "jose";
import { DbMixin, type Store } from "../mixins/db.mixin";
import { appConfig } from "../src/config";
import {
	acquireParams, leaseRefParams,
	type AcquireParams, type KeyDoc, type Lease, type LeaseChange, type LeaseDoc, type LeaseEvent, type LeaseRef
} from "../src/contract";
import { KeyringElection, type ClaimReply } from "../src/keyring/election";
import { Keyring, type KeyInfo, type KeyringOptions, type KeyringStatus } from "../src/keyring/keyring";
import { acquireStoreLock, type StoreLock } from "../src/keyring/store-lock";

/** Reachable on every keyring node before its `keyring` service is: the election's channel. */
export const ELECTION_SERVICE = "keyring-election";

export class KeyringRefusedError extends Error {
	constructor(readonly reason: string, readonly winner: string | null, namespace: string) {
		super(`This keyring refuses to start: ${reason} on NATS namespace '${namespace}'. ` +
			"Two keyrings must never both grant leases, so this node grants none; stop the other keyring first if this one should serve.");
		this.name = "KeyringRefusedError";
	}
}

/** The keyring's own options (src/keyring/keyring.ts, store settings included) plus the election's. */
export interface KeyringSettings extends KeyringOptions {
	/** Over NATS: how long discovery settles before this node claims the keyring role. */
	electionSettleMs: number;
	/** Over NATS: how long a peer has to answer the claim; no answer is a refusal. */
	electionClaimTimeoutMs: number;
	$secureSettings?: string[];
}

interface KeyringVars {
	stores: { keys: Store<KeyDoc>; leases: Store<LeaseDoc> };
	keyring: Keyring;
	storeLock: StoreLock | null;
	election: KeyringElection | null;
	/** Set when another active keyring showed up: this one grants and renews nothing more. */
	fencedBy: string | null;
}

interface KeyringMethods {
	elect(): Promise<void>;
	keyringPeers(): string[];
	watchForRivals(): void;
	assertServing(): void;
	conflict(): Error;
	[name: string]: (...args: any[]) => any;
}

const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));

/**
 * Runs before the stores open (it is the last mixin, so its `started` runs first and its
 * `stopped` last): a refused keyring never loads, rewrites or seeds a store.
 */
const KeyringGuard: Partial<ServiceSchema<KeyringSettings, KeyringMethods, KeyringVars>> = {
	async started() {
		const { settings } = this;
		this.storeLock = null;
		this.election = null;
		this.fencedBy = null;
		if (!settings.mongoUri && settings.dataDir)
			this.storeLock = await acquireStoreLock(settings.dataDir, this.broker.nodeID, os.hostname());
		try {
			if (this.broker.transit) await this.elect();
		} catch (err) {
			this.storeLock?.release();
			this.storeLock = null;
			throw err;
		}
	},
	async stopped() {
		this.storeLock?.release();
		this.storeLock = null;
	}
};

const KeyringService: ServiceSchema<KeyringSettings, KeyringMethods, KeyringVars> = {
	name: "keyring",
	mixins: [DbMixin({ keys: { uniqueIndexes: ["keyId"] }, leases: { uniqueIndexes: ["leaseId"] } }), KeyringGuard as Partial<ServiceSchema>],
	settings: {
		// Service settings travel to every node in INFO packets: the master key must not.
		$secureSettings: ["masterKey"],
		keys: appConfig().keys,
		masterKey: appConfig().masterKey,
		leaseTtlMs: appConfig().leaseTtlMs,
		leaseGraceMs: appConfig().leaseGraceMs,
		acquireWaitMs: appConfig().acquireWaitMs,
		sweepIntervalMs: 1000,
		electionSettleMs: 2_000,
		electionClaimTimeoutMs: 3_000,
		dataDir: appConfig().dataDir,
		mongoUri: appConfig().mongoUri
	},
	actions: {
		/** Grants the least recently used free key, its private key sealed to `sessionKey`. */
		acquire: {
			params: acquireParams,
			handler(ctx: Context<AcquireParams>): Promise<Lease> {
				this.assertServing();
				return this.keyring.acquire(ctx.params);
			}
		},
		renew: {
			params: leaseRefParams,
			handler(ctx: Context<LeaseRef>): Promise<LeaseChange> {
				this.assertServing();
				return this.keyring.renew(ctx.params.leaseId);
			}
		},
		release: {
			params: leaseRefParams,
			handler(ctx: Context<LeaseRef>): Promise<LeaseChange> {
				return this.keyring.release(ctx.params.leaseId);
			}
		},
		jwks: {
			handler(): { keys: JWK[] } {
				return this.keyring.jwks();
			}
		},
		keys: {
			handler(): KeyInfo[] {
				return this.keyring.keyList();
			}
		},
		status: {
			handler(): KeyringStatus {
				return this.keyring.status();
			}
		}
	},
	events: {
		// A signer that left cannot use a key: do not grant it one it waited for.
		"$node.disconnected"(ctx: Context<{ node: { id: string } }>) {
			const dropped = this.keyring?.dropWaiters(ctx.params.node.id) ?? 0;
			if (dropped) this.logger.info(`Node ${ctx.params.node.id} left: turned away its ${dropped} waiting acquire(s)`);
		},
		"$services.changed"() {
			this.watchForRivals();
		}
	},
	methods: {
		/** Claims the keyring role among the keyring nodes on this NATS namespace, or throws. */
		async elect() {
			const { settings } = this;
			const nodeID = this.broker.nodeID;
			const election = new KeyringElection(nodeID);
			this.election = election;
			this.broker.createService({
				name: ELECTION_SERVICE,
				actions: {
					claim: {
						params: { nodeID: { type: "string", min: 1 } },
						handler: (ctx: Context<{ nodeID: string }>): ClaimReply => election.onClaim(ctx.params.nodeID)
					}
				}
			});
			// Registered (and announced) before settling: a rival claiming later always sees it.
			while (!this.broker.registry.getServiceList({ onlyLocal: true }).some(s => s.name === ELECTION_SERVICE)) await sleep(20);
			await sleep(settings.electionSettleMs);
			const peers = this.keyringPeers();
			const verdict = await election.claim(peers, peer =>
				this.broker.call<ClaimReply, { nodeID: string }>(`${ELECTION_SERVICE}.claim`, { nodeID }, { nodeID: peer, timeout: settings.electionClaimTimeoutMs }));
			if (!verdict.active) {
				const refusal = new KeyringRefusedError(verdict.reason, verdict.winner, this.broker.namespace || "(none)");
				this.logger.error(refusal.message);
				throw refusal;
			}
			this.logger.info(`Elected the active keyring on NATS namespace '${this.broker.namespace}'${peers.length ? ` (over ${peers.join(", ")})` : " (no other keyring node in sight)"}`);
		},

		/** Other nodes offering the keyring or its election. */
		keyringPeers(): string[] {
			const peers = new Set<string>();
			for (const service of this.broker.registry.getServiceList({ onlyAvailable: true }))
				if ((service.name === "keyring" || service.name === ELECTION_SERVICE) && service.nodeID && service.nodeID !== this.broker.nodeID) peers.add(service.nodeID);
			return [...peers].sort();
		},

		/**
		 * A second active keyring can only appear after a partition or a paused process healed.
		 * Both sides stop granting at once; restarted, they elect one again.
		 */
		watchForRivals() {
			if (this.election?.state !== "active" || this.fencedBy) return;
			const rival = this.broker.registry.getServiceList({ onlyAvailable: true })
				.find(service => service.name === "keyring" && service.nodeID && service.nodeID !== this.broker.nodeID);
			if (!rival) return;
			this.fencedBy = rival.nodeID!;
			this.election.fence();
			// Callers still waiting for a key are turned away too; releases keep working.
			void this.keyring?.close(() => this.conflict());
			this.logger.error(`Keyring node '${rival.nodeID}' is active too: this keyring stops granting and renewing leases now. Two keyrings must never both grant; restart one of them alone.`);
			// Under moleculer-runner the process ends, so a supervisor can restart it into a fresh election.
			if ((this.broker as { runner?: unknown }).runner) void this.broker.stop().finally(() => process.exit(1));
		},

		assertServing() {
			if (this.fencedBy) throw this.conflict();
		},

		conflict(): Error {
			return new Errors.MoleculerRetryableError(`This keyring no longer grants or renews leases: keyring node '${this.fencedBy}' is active too`, 503, "KEYRING_CONFLICT", { other: this.fencedBy });
		}
	},
	async started() {
		const { settings } = this;
		this.keyring = await Keyring.open(
			{
				keys: settings.keys,
				masterKey: settings.masterKey,
				leaseTtlMs: settings.leaseTtlMs,
				leaseGraceMs: settings.leaseGraceMs,
				acquireWaitMs: settings.acquireWaitMs,
				sweepIntervalMs: settings.sweepIntervalMs,
				dataDir: settings.dataDir,
				mongoUri: settings.mongoUri
			},
			{
				keys: this.stores.keys,
				leases: this.stores.leases,
				logger: this.logger,
				emit: (event: string, payload: LeaseEvent) => {
					this.broker.emit(event, payload).catch(err => this.logger.warn(`Could not emit ${event}: ${(err as Error).message}`));
				}
			}
		);
	},
	async stopped() {
		// Runs before the mixin closes the stores: the change in progress finishes first.
		await this.keyring?.close();
	}
};

export default KeyringService;
