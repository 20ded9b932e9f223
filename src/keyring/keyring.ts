/**
 * The keyring's whole behaviour, without a broker: keys at rest, the LRU queue of free keys,
 * grants, renewals, releases, expiry, and the FIFO line of callers waiting for a key.
 *
 * Every change runs through one `Serial` queue and is written to the store before memory
 * changes and before anyone is told (DESIGN.md section 3), so a restart rebuilds the same
 * state by replaying the `leases` collection in `seq` order.
 */
import { randomUUID } from "node:crypto";
import { Errors } from "moleculer";
import type { JWK } from "jose";
import { Events, type AcquireParams, type KeyDoc, type KeyInfo, type KeyringStatus, type Lease, type LeaseChange, type LeaseDoc, type LeaseEnd, type LeaseEvent } from "../contract";
import { generateKeys, publicJwkOf, verifySealedKey } from "./keys";
import { LeaseTable } from "./lease-table";
import { loadMasterKey, masterKeyFileExposure, unsealPrivateKey, type MasterKey } from "./master-key";
import { checkSessionKey, InvalidSessionKeyError, KeyTransport } from "./key-transport";
import { Serial } from "./serial";
import type { KeyringStore } from "./store";
import { systemClock, type Clock } from "../clock";

export interface KeyringOptions {
	/** Keys to generate when the store holds none. */
	keys: number;
	/** base64 of 32 bytes, or null for `DATA_DIR/master.key` (or a random one in memory). */
	masterKey: string | null;
	leaseTtlMs: number;
	leaseGraceMs: number;
	/** Upper bound of any acquire's wait for a free key. */
	acquireWaitMs: number;
	/** Period of the expiry sweep; 0 turns it off (read-only tools). */
	sweepIntervalMs: number;
	/** Embedded store folder ("" = memory); where `master.key` lives. */
	dataDir: string;
	mongoUri: string | null;
}

export interface KeyringLogger {
	debug(...args: unknown[]): void;
	info(...args: unknown[]): void;
	warn(...args: unknown[]): void;
	error(...args: unknown[]): void;
}

export interface KeyringDeps {
	store: KeyringStore;
	logger: KeyringLogger;
	/** Publishes a domain event (fire and forget). */
	emit(event: string, payload: LeaseEvent): void;
	/** The system clock unless a test moves time by hand. */
	clock?: Clock;
}

const stopping = (): Error => new Errors.MoleculerRetryableError("The keyring is stopping; no key was granted", 503, "KEYRING_STOPPING");

function toClientError(err: unknown): unknown {
	return err instanceof InvalidSessionKeyError ? new Errors.MoleculerClientError(err.message, 422, "INVALID_SESSION_KEY") : err;
}

interface Waiter {
	holder: string;
	since: number;
	limitMs: number;
	/** Cancels the wait's time limit. */
	timer: (() => void) | null;
	resolve(grant: { lease: LeaseDoc; waitMs: number }): void;
	reject(err: Error): void;
}

export class Keyring {
	private readonly serial = new Serial();
	/** Seals leased keys to the signers' sessions; its key lives as long as this process. */
	private readonly transport = new KeyTransport();
	/** Callers waiting for a key, in call order (a Set keeps insertion order, deletes in O(1)). */
	private readonly waiters = new Set<Waiter>();
	/** Last `seq` handed out; a failed write burns its seq so no value is ever stored twice. */
	private issuedSeq: number;
	private stopSweeping: (() => void) | null = null;
	private sweepQueued = false;
	private closed = false;
	private fenced = false;
	/** Why acquires are turned away once closed. */
	private refusal: () => Error = stopping;
	private readonly clock: Clock;

	private constructor(
		private readonly options: KeyringOptions,
		private readonly deps: KeyringDeps,
		private readonly master: MasterKey,
		private readonly keyDocs: Map<string, KeyDoc>,
		private readonly table: LeaseTable
	) {
		this.clock = deps.clock ?? systemClock;
		this.issuedSeq = table.lastSeq;
	}

	/** Loads (or generates) the keys, checks the master key against them, and replays the lease log. */
	static async open(options: KeyringOptions, deps: KeyringDeps): Promise<Keyring> {
		const { logger } = deps;
		let keyDocs = await deps.store.keys();
		const master = await loadMasterKey(options, keyDocs.length === 0);
		if (options.dataDir && !options.masterKey && masterKeyFileExposure(options.dataDir))
			logger.warn(`${master.source} is readable by other users; chmod 600 it`);
		if (options.mongoUri && !options.masterKey)
			logger.warn(`Keys in MongoDB are sealed with ${master.source}; set KEYRING_MASTER_KEY so that any keyring node can open them`);
		if (keyDocs.length === 0) {
			keyDocs = await generateKeys(options.keys, master);
			await deps.store.insertKeys(keyDocs);
			logger.info(`Generated ${keyDocs.length} Ed25519 keys, private keys sealed with ${master.source}`);
		} else {
			for (const doc of keyDocs) await verifySealedKey(doc, master);
			if (keyDocs.length !== options.keys) logger.info(`The store holds ${keyDocs.length} keys; KEYS=${options.keys} only applies to an empty keyring`);
		}

		const table = LeaseTable.fromSummary(keyDocs.map(k => k.keyId), await deps.store.summary());
		const keyring = new Keyring(options, deps, master, new Map(keyDocs.map(k => [k.keyId, k])), table);
		logger.info(`Keyring ready: ${keyDocs.length} keys, ${table.leasedCount} leased, ${table.freeCount} free, last seq ${table.lastSeq}`);
		if (options.sweepIntervalMs > 0) keyring.startSweeping(options.sweepIntervalMs);
		return keyring;
	}

	// ------------------------------------------------------------ leases

	/**
	 * Grants the least recently used free key, waiting in FIFO order when none is free, for at
	 * most min(waitMs, acquireWaitMs). The private key comes back sealed to `sessionKey`.
	 */
	async acquire(params: AcquireParams): Promise<Lease> {
		this.assertOpen();
		try {
			checkSessionKey(params.sessionKey);
		} catch (err) {
			throw toClientError(err);
		}
		const limitMs = Math.min(params.waitMs ?? this.options.acquireWaitMs, this.options.acquireWaitMs);
		const { lease } = await this.waitForGrant(params.holder, limitMs);
		try {
			const key = await this.sealLeaseKey(lease, params.sessionKey);
			return { leaseId: lease.leaseId, keyId: lease.keyId, expiresAt: lease.expiresAt, key, transportKey: this.transport.publicJwk };
		} catch (err) {
			// The holder never got the key: hand it back instead of letting it idle until expiry.
			await this.release(lease.leaseId).catch(releaseErr => this.deps.logger.error(`Could not release lease ${lease.leaseId} after a failed key transport: ${(releaseErr as Error).message}`));
			throw toClientError(err);
		}
	}

	/** Extends a current lease by `leaseTtlMs` from now; a lease no longer current is left alone. */
	async renew(leaseId: string): Promise<LeaseChange> {
		if (this.fenced) throw this.refusal();
		const renewed = await this.serial.run(async () => {
			const lease = this.table.activeLease(leaseId);
			if (!lease) return null;
			const expiresAt = new Date(this.clock.now() + this.options.leaseTtlMs).toISOString();
			const matched = await this.deps.store.renewLease(leaseId, expiresAt);
			if (matched !== 1) throw new Error(`renew of lease ${leaseId}: the store matched ${matched} active leases, expected 1`);
			this.table.renew(leaseId, expiresAt);
			return expiresAt;
		});
		if (renewed === null) return { leaseId, changed: false, reason: await this.whyNotCurrent(leaseId) };
		return { leaseId, changed: true, expiresAt: renewed };
	}

	/** Ends a current lease; the key goes to the tail of the free queue. Idempotent. */
	async release(leaseId: string): Promise<LeaseChange> {
		const released = await this.serial.run(async () => {
			const lease = this.table.activeLease(leaseId);
			if (!lease) return false;
			await this.endLease(lease, "released");
			await this.serveWaiters();
			return true;
		});
		if (!released) return { leaseId, changed: false, reason: await this.whyNotCurrent(leaseId) };
		return { leaseId, changed: true };
	}

	/** Reclaims every lease past `expiresAt + leaseGraceMs` and serves waiters; returns how many. */
	sweep(): Promise<number> {
		return this.serial.run(async () => {
			const reclaimed = await this.reclaimExpired();
			await this.serveWaiters();
			return reclaimed;
		});
	}

	/**
	 * Turns away the waiting acquires of `holder` (its node left the cluster): a key granted
	 * to a node that is gone would sit idle until its lease expired.
	 */
	dropWaiters(holder: string): number {
		let dropped = 0;
		for (const waiter of this.waiters) {
			if (waiter.holder !== holder) continue;
			this.waiters.delete(waiter);
			waiter.timer?.();
			waiter.reject(new Errors.MoleculerRetryableError(`${holder} left the cluster while waiting for a key; no key was granted`, 503, "HOLDER_GONE", { holder }));
			dropped++;
		}
		return dropped;
	}

	// ------------------------------------------------------------ public views

	jwks(): { keys: JWK[] } {
		return { keys: [...this.keyDocs.values()].map(doc => publicJwkOf(doc.keyId, doc.publicJwk)) };
	}

	keyList(): KeyInfo[] {
		return [...this.keyDocs.values()].map(doc => {
			const lease = this.table.leaseOfKey(doc.keyId);
			return { keyId: doc.keyId, createdAt: doc.createdAt, uses: this.table.usesOf(doc.keyId), leased: !!lease, leaseId: lease?.leaseId ?? null, holder: lease?.holder ?? null };
		});
	}

	status(): KeyringStatus {
		return {
			keys: this.keyDocs.size,
			free: this.table.freeCount,
			leased: this.table.leasedCount,
			waiting: this.waiters.size,
			freeQueue: this.table.freeQueue(),
			lastSeq: this.table.lastSeq
		};
	}

	/**
	 * Stops the sweep, turns waiting callers (and later acquires) away with `refusal`, and lets
	 * the change in progress finish. Renewals and releases still work.
	 */
	async close(refusal: () => Error = stopping): Promise<void> {
		this.closed = true;
		this.refusal = refusal;
		this.stopSweeping?.();
		this.stopSweeping = null;
		for (const waiter of this.waiters) {
			this.waiters.delete(waiter);
			waiter.timer?.();
			waiter.reject(refusal());
		}
		await this.serial.drain();
	}

	/**
	 * Another keyring is active: like `close`, and renewals are refused too, so no lease of
	 * this keyring outlives its current expiry. Releases still work.
	 */
	fence(refusal: () => Error): Promise<void> {
		this.fenced = true;
		return this.close(refusal);
	}

	// ------------------------------------------------------------ internals

	private assertOpen(): void {
		if (this.closed) throw this.refusal();
	}

	private waitForGrant(holder: string, limitMs: number): Promise<{ lease: LeaseDoc; waitMs: number }> {
		return new Promise((resolve, reject) => {
			if (this.closed) return reject(this.refusal());
			const waiter: Waiter = { holder, since: this.clock.now(), limitMs, timer: null, resolve, reject };
			this.waiters.add(waiter);
			// Queued before the deadline check below, so a free key always goes to this caller first.
			this.serial.run(() => this.serveWaiters()).catch(err => this.deps.logger.error(`Serving waiting acquires failed: ${(err as Error).message}`));
			waiter.timer = this.clock.after(limitMs, () => {
				this.serial.run(() => this.giveUp(waiter)).catch(err => this.deps.logger.error(`Ending a wait failed: ${(err as Error).message}`));
			});
		});
	}

	/** Serves waiting callers, oldest first, while keys are free; reclaims expired leases when none is. */
	private async serveWaiters(): Promise<void> {
		if (this.waiters.size && this.table.freeCount === 0) await this.reclaimExpired();
		for (const waiter of this.waiters) {
			if (this.table.freeCount === 0) break;
			this.waiters.delete(waiter);
			waiter.timer?.();
			try {
				waiter.resolve(await this.grant(waiter));
			} catch (err) {
				waiter.reject(err as Error);
			}
		}
	}

	/** A caller's wait is over: one last look for a key, then a clear 503. */
	private async giveUp(waiter: Waiter): Promise<void> {
		if (!this.waiters.has(waiter)) return;
		await this.serveWaiters();
		if (!this.waiters.has(waiter)) return;
		this.waiters.delete(waiter);
		const waitedMs = this.clock.now() - waiter.since;
		const keys = this.keyDocs.size;
		waiter.reject(new Errors.MoleculerRetryableError(
			`All ${keys} keys are leased; waited ${waitedMs} ms (limit ${waiter.limitMs} ms) for a free key, ${this.waiters.size} other callers still waiting`,
			503, "NO_FREE_KEY", { keys, waitedMs, limitMs: waiter.limitMs }
		));
	}

	private async grant(waiter: Waiter): Promise<{ lease: LeaseDoc; waitMs: number }> {
		const keyId = this.table.nextFreeKey();
		if (!keyId) throw new Error("grant with no free key");
		const now = this.clock.now();
		const leaseId = randomUUID();
		const lease: LeaseDoc = {
			_id: leaseId,
			leaseId,
			keyId,
			holder: waiter.holder,
			grantSeq: ++this.issuedSeq,
			grantedAt: new Date(now).toISOString(),
			expiresAt: new Date(now + this.options.leaseTtlMs).toISOString(),
			endSeq: null,
			endedAt: null,
			end: null
		};
		await this.deps.store.insertLease({ ...lease });
		this.table.grant(lease);
		const waitMs = now - waiter.since;
		this.deps.emit(Events.leaseGranted, { leaseId, keyId, holder: lease.holder, seq: lease.grantSeq, waitMs });
		this.deps.logger.debug(`Granted ${keyId} to ${lease.holder} (lease ${leaseId}, seq ${lease.grantSeq}, waited ${waitMs} ms)`);
		return { lease, waitMs };
	}

	private async endLease(lease: LeaseDoc, end: LeaseEnd): Promise<void> {
		const endSeq = ++this.issuedSeq;
		const endedAt = new Date(this.clock.now()).toISOString();
		const matched = await this.deps.store.endLease(lease.leaseId, { end, endSeq, endedAt });
		if (matched !== 1) throw new Error(`${end} of lease ${lease.leaseId}: the store matched ${matched} active leases, expected 1`);
		this.table.end(lease.leaseId, end, endSeq, endedAt);
		this.deps.emit(end === "released" ? Events.leaseReleased : Events.leaseExpired, { leaseId: lease.leaseId, keyId: lease.keyId, holder: lease.holder, seq: endSeq });
	}

	private async reclaimExpired(): Promise<number> {
		let reclaimed = 0;
		for (const lease of this.table.expired(this.clock.now(), this.options.leaseGraceMs)) {
			try {
				await this.endLease(lease, "expired");
				reclaimed++;
				this.deps.logger.warn(`Reclaimed ${lease.keyId} from ${lease.holder}: lease ${lease.leaseId} expired at ${lease.expiresAt}`);
			} catch (err) {
				this.deps.logger.error(`Could not reclaim expired lease ${lease.leaseId}; retrying at the next sweep: ${(err as Error).message}`);
			}
		}
		return reclaimed;
	}

	private startSweeping(intervalMs: number): void {
		this.stopSweeping = this.clock.every(intervalMs, () => {
			// One sweep in the queue at a time: a slow store must not pile them up.
			if (this.sweepQueued) return;
			this.sweepQueued = true;
			this.sweep()
				.catch(err => this.deps.logger.error(`Expiry sweep failed: ${(err as Error).message}`))
				.finally(() => { this.sweepQueued = false; });
		});
	}

	/** Why a renew or release changed nothing, from the store (ended leases never change again). */
	private async whyNotCurrent(leaseId: string): Promise<string> {
		const stored = await this.deps.store.lease(leaseId);
		if (!stored) return `unknown lease ${leaseId}; nothing changed`;
		if (stored.end) return `lease ${leaseId} of ${stored.keyId} already ended (${stored.end} at ${stored.endedAt}, seq ${stored.endSeq}); nothing changed`;
		return `lease ${leaseId} is not current in this keyring; nothing changed`;
	}

	/** The leased private key, opened from rest and sealed to the holder's session, for this lease only. */
	private async sealLeaseKey(lease: LeaseDoc, sessionKey: JWK): Promise<string> {
		const doc = this.keyDocs.get(lease.keyId);
		if (!doc) throw new Error(`no key ${lease.keyId}`);
		const privateJwk = await unsealPrivateKey(doc.sealedPrivateKey, lease.keyId, this.master);
		try {
			return this.transport.seal(privateJwk, lease.keyId, lease.leaseId, sessionKey);
		} finally {
			privateJwk.fill(0);
		}
	}
}
