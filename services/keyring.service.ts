/**
 * keyring: owns `keys` and `leases`. A single instance: it generates or loads the Ed25519
 * keys, grants leases from the LRU queue of free keys, renews, releases and reclaims them,
 * and serves the public JWKS. The behaviour lives in src/keyring/; this file wires it up.
 */
import type { Context, ServiceSchema } from "moleculer";
import type { JWK } from "jose";
import { DbMixin, type DbSettings, type Store } from "../mixins/db.mixin";
import { appConfig } from "../src/config";
import {
	acquireParams, leaseRefParams,
	type AcquireParams, type KeyDoc, type Lease, type LeaseChange, type LeaseDoc, type LeaseEvent, type LeaseRef
} from "../src/contract";
import { Keyring, type KeyInfo, type KeyringStatus } from "../src/keyring/keyring";

export interface KeyringSettings extends DbSettings {
	/** Keys to generate when the store holds none. */
	keys: number;
	/** base64 of 32 bytes; null = `DATA_DIR/master.key` (or a random one when in memory). */
	masterKey: string | null;
	leaseTtlMs: number;
	leaseGraceMs: number;
	acquireWaitMs: number;
	/** Period of the expiry sweep; 0 disables it (read-only tools). */
	sweepIntervalMs: number;
	$secureSettings?: string[];
}

interface KeyringVars {
	stores: { keys: Store<KeyDoc>; leases: Store<LeaseDoc> };
	keyring: Keyring;
}

const KeyringService: ServiceSchema<KeyringSettings, Record<string, never>, KeyringVars> = {
	name: "keyring",
	mixins: [DbMixin({ keys: { uniqueIndexes: ["keyId"] }, leases: { uniqueIndexes: ["leaseId"] } })],
	settings: {
		// Service settings travel to every node in INFO packets: the master key must not.
		$secureSettings: ["masterKey"],
		keys: appConfig().keys,
		masterKey: appConfig().masterKey,
		leaseTtlMs: appConfig().leaseTtlMs,
		leaseGraceMs: appConfig().leaseGraceMs,
		acquireWaitMs: appConfig().acquireWaitMs,
		sweepIntervalMs: 1000,
		dataDir: appConfig().dataDir,
		mongoUri: appConfig().mongoUri
	},
	actions: {
		/** Grants the least recently used free key, its private key sealed to `sessionKey`. */
		acquire: {
			params: acquireParams,
			handler(ctx: Context<AcquireParams>): Promise<Lease> {
				return this.keyring.acquire(ctx.params);
			}
		},
		renew: {
			params: leaseRefParams,
			handler(ctx: Context<LeaseRef>): Promise<LeaseChange> {
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
