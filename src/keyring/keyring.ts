/**
 * The keyring's whole behaviour, without a broker: keys at rest, the LRU queue of free keys,
 * grants, renewals, releases, expiry, and the FIFO line of callers waiting for a key.
 *
 * Every change runs through one `Serial` queue and is written to the store before memory
 * changes and before anyone is told (DESIGN.md section 3), so a restart rebuilds the same
 * state from the `leases` collection. The keyring first claims the keyring role in its store
 * (src/keyring/role.ts) and writes only under its epoch, so a second keyring is refused by the
 * store itself. A write whose reply is lost is retried, and the retry first looks whether the
 * write landed: a grant is never made twice, an end already applied counts as done.
 */
import { randomUUID } from "node:crypto";
import { Errors } from "moleculer";
import type { JWK } from "jose";
import { Events, type KeyDoc, type KeyInfo, type KeyringStatus, type Lease, type LeaseChange, type LeaseDoc, type LeaseEnd, type LeaseEvent } from "../contract";
import { generateKeys, publicJwkOf, verifySealedKey } from "./keys";
import { LeaseTable } from "./lease-table";
import type { AuthorityKey } from "../identity/authority";
import type { CredentialRole } from "../identity/credential";
import { loadMasterKey, masterKeyFileExposure, unsealPrivateKey, type MasterKey } from "./master-key";
import { checkSessionKey, InvalidSessionKeyError, KeyTransport } from "./key-transport";
import { Serial } from "./serial";
import { KeyringRole, type RoleIdentity } from "./role";
import { DuplicateLeaseError, FencedError, type KeyringStore, type LeaseEnding } from "./store";
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
	/** How long the keyring role outlives this keyring's last renewal of it. */
	roleTtlMs: number;
	/** The signer and batcher credential files this keyring enrols by itself ("" = this process's in-memory one; null = none). */
	enrolLocal: Record<CredentialRole, string | null>;
	/** KEYRING_PUBLIC_KEY, when set: it must be this keyring's own (src/identity/authority.ts). */
	publicKey: string | null;
	/** Where the keyring writes its public key; null = this process only. */
	publicKeyFile: string | null;
}

/** A lease asked for by a proven signer: who holds it, and where its key is sealed to. */
export interface GrantRequest {
	holder: string;
	sessionKey: JWK;
	waitMs?: number;
}

export interface KeyringLogger {
	debug(...args: unknown[]): void;
	info(...args: unknown[]): void;
	warn(...args: unknown[]): void;
	error(...args: unknown[]): void;
}

export interface KeyringDeps {
	store: KeyringStore;
	/** Where the store is, for messages (no credentials). */
	storeName: string;
	/** Who this keyring is, for the role's holder. */
	identity: RoleIdentity;
	logger: KeyringLogger;
	/** Publishes a domain event (fire and forget). */
	emit(event: string, payload: LeaseEvent): void;
	/** The system clock unless a test moves time by hand. */
	clock?: Clock;
}

const stopping = (): Error => new Errors.MoleculerRetryableError("The keyring is stopping; no key was granted", 503, "KEYRING_STOPPING");

/** Tries of a write whose outcome is unknown (a reply lost), with these pauses between them. */
const WRITE_RETRIES_MS = [100, 400, 1_600];

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
		private readonly table: LeaseTable,
		private readonly role: KeyringRole
	) {
		this.clock = deps.clock ?? systemClock;
		this.issuedSeq = table.lastSeq;
	}

	/**
	 * Claims the keyring role in the store (or throws, naming the keyring that holds it), then
	 * loads (or generates) the keys, checks the master key against them, and rebuilds the lease state.
	 */
	static async open(options: KeyringOptions, deps: KeyringDeps): Promise<Keyring> {
		const { logger } = deps;
		const clock = deps.clock ?? systemClock;
		const role = await KeyringRole.claim(deps.store, deps.storeName, deps.identity, options.roleTtlMs, clock);
		try {
			const keyring = await Keyring.load(options, deps, role);
			role.keepRenewing(
				() => keyring.lostRole(),
				err => logger.warn(`Could not renew the keyring role (epoch ${role.epoch}); trying again: ${err.message}`)
			);
			return keyring;
		} catch (err) {
			await role.release().catch(() => undefined);
			throw err;
		}
	}

	private static async load(options: KeyringOptions, deps: KeyringDeps, role: KeyringRole): Promise<Keyring> {
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
		const keyring = new Keyring(options, deps, master, new Map(keyDocs.map(k => [k.keyId, k])), table, role);
		logger.info(`Keyring ready: ${keyDocs.length} keys, ${table.leasedCount} leased, ${table.freeCount} free, last seq ${table.lastSeq}, epoch ${role.epoch}`);
		if (options.sweepIntervalMs > 0) keyring.startSweeping(options.sweepIntervalMs);
		return keyring;
	}

	// ------------------------------------------------------------ leases

	/** The key this keyring signs lease tokens with, derived from its master key. */
	get authority(): AuthorityKey {
		return this.master.authority;
	}

	/**
	 * Grants the least recently used free key to `holder` (a proven signer's node), waiting in
	 * FIFO order when none is free, for at most min(waitMs, acquireWaitMs). The private key
	 * comes back sealed to `sessionKey`.
	 */
	async acquire(params: GrantRequest): Promise<Omit<Lease, "token">> {
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
			const matched = await this.write(`renewal of lease ${leaseId}`, () => this.deps.store.renewLease(leaseId, expiresAt, this.role.epoch), async () => {
				const stored = await this.deps.store.lease(leaseId);
				return stored?.expiresAt === expiresAt ? { value: 1 } : null;
			});
			if (matched !== 1) {
				// The store says it ended (another keyring's reclaim before this one took over): follow the store.
				await this.adoptStoredEnd(lease);
				return null;
			}
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
	/** The holder of an active lease, or null. */
	holderOf(leaseId: string): string | null {
		return this.table.activeLease(leaseId)?.holder ?? null;
	}

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
	 * Stops the sweep, turns waiting callers (and later acquires) away with `refusal`, lets the
	 * change in progress finish, and gives the keyring role up (unless another keyring took it),
	 * so a successor need not wait for it to expire. Renewals and releases still work.
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
		if (!this.fenced) await this.role.release().catch(err => this.deps.logger.warn(`Could not give the keyring role up; it expires by itself: ${(err as Error).message}`));
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
		let lease: LeaseDoc;
		for (;;) {
			const keyId = this.table.nextFreeKey();
			if (!keyId) throw new Error("grant with no free key");
			const now = this.clock.now();
			// Its id chosen before writing: after an unknown outcome, a retry finds the written lease.
			const leaseId = randomUUID();
			lease = {
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
			const written = { ...lease };
			try {
				await this.write(`grant of ${keyId}`, () => this.deps.store.insertLease(written, this.role.epoch), async () => ((await this.deps.store.lease(leaseId)) ? { value: undefined } : null));
				break;
			} catch (err) {
				if (!(err instanceof DuplicateLeaseError)) throw err;
				// Our own earlier try landed after all.
				if (await this.deps.store.lease(leaseId)) break;
				// The store knows what this keyring does not (a write that landed unseen, a keyring before it): catch up and try again.
				await this.catchUpWithStore(keyId);
			}
		}
		this.table.grant(lease);
		const waitMs = lease.grantedAt ? Date.parse(lease.grantedAt) - waiter.since : 0;
		this.deps.emit(Events.leaseGranted, { leaseId: lease.leaseId, keyId: lease.keyId, holder: lease.holder, seq: lease.grantSeq, waitMs });
		this.deps.logger.debug(`Granted ${lease.keyId} to ${lease.holder} (lease ${lease.leaseId}, seq ${lease.grantSeq}, waited ${waitMs} ms)`);
		return { lease, waitMs };
	}

	/**
	 * Runs a store write, retrying one whose outcome is unknown; before each retry `landed`
	 * looks whether the lost try was applied after all (a value: done). The store's own refusals
	 * are not retried, and a fenced write turns this keyring off.
	 */
	private async write<T>(what: string, attempt: () => Promise<T>, landed: () => Promise<{ value: T } | null>): Promise<T> {
		for (let tries = 0; ; tries++) {
			try {
				return await attempt();
			} catch (err) {
				if (err instanceof FencedError) {
					this.lostRole();
					throw this.refusal();
				}
				if (err instanceof DuplicateLeaseError || tries >= WRITE_RETRIES_MS.length) throw err;
				this.deps.logger.warn(`The store did not confirm the ${what}; looking whether it landed before trying again: ${(err as Error).message}`);
				const seen = await landed().catch(() => null);
				if (seen) return seen.value;
				await this.clock.sleep(WRITE_RETRIES_MS[tries]);
			}
		}
	}

	/** After the store refused a grant: learn its last seq and the key's open lease, if any. */
	private async catchUpWithStore(keyId: string): Promise<void> {
		const summary = await this.deps.store.summary();
		this.issuedSeq = Math.max(this.issuedSeq, summary.lastSeq);
		const open = summary.open.find(lease => lease.keyId === keyId);
		if (open && !this.table.activeLease(open.leaseId)) {
			this.deps.logger.warn(`The store holds lease ${open.leaseId} of ${keyId} (seq ${open.grantSeq}) that this keyring did not know; taking it into account`);
			this.table.adopt(open);
		}
	}

	/** A lease the store ended without this keyring (another keyring's reclaim): end it here too. */
	private async adoptStoredEnd(lease: LeaseDoc): Promise<void> {
		const stored = await this.deps.store.lease(lease.leaseId);
		if (!stored?.end || stored.endSeq === null || !stored.endedAt || !this.table.activeLease(lease.leaseId)) return;
		this.table.end(lease.leaseId, stored.end, stored.endSeq, stored.endedAt);
		this.issuedSeq = Math.max(this.issuedSeq, stored.endSeq);
	}

	/** Another keyring took the role: grant and renew nothing more (releases are refused by the store too). */
	private lostRole(): void {
		if (this.fenced) return;
		this.deps.logger.error(`Another keyring took the keyring role of ${this.deps.storeName} (this one held epoch ${this.role.epoch}): this keyring stops granting and renewing leases now`);
		void this.fence(() => new Errors.MoleculerRetryableError(`This keyring no longer grants or renews leases: another keyring holds the role in ${this.deps.storeName}`, 503, "KEYRING_FENCED", { epoch: this.role.epoch }));
	}

	/**
	 * Ends a lease in the store, then here. An end already applied (its reply lost) counts as
	 * done; a reclaim the store refuses because the lease was renewed meanwhile changes nothing.
	 */
	private async endLease(lease: LeaseDoc, end: LeaseEnd): Promise<boolean> {
		const now = this.clock.now();
		const ending: LeaseEnding = { end, endSeq: ++this.issuedSeq, endedAt: new Date(now).toISOString() };
		if (end === "expired") ending.expiredBy = new Date(now - this.options.leaseGraceMs).toISOString();
		const ended = async () => {
			const stored = await this.deps.store.lease(lease.leaseId);
			return stored?.end ? stored : undefined;
		};
		const matched = await this.write(`${end} of lease ${lease.leaseId}`, () => this.deps.store.endLease(lease.leaseId, ending, this.role.epoch), async () => ((await ended()) ? { value: 1 } : null));
		const stored = matched === 1 ? null : await ended();
		if (matched !== 1 && !stored) {
			// A reclaim of a lease the store knows renewed: take its expiry and leave it be.
			const current = await this.deps.store.lease(lease.leaseId);
			if (current) this.table.renew(lease.leaseId, current.expiresAt);
			return false;
		}
		const applied = stored && stored.endSeq !== ending.endSeq ? { end: stored.end!, endSeq: stored.endSeq!, endedAt: stored.endedAt! } : ending;
		this.table.end(lease.leaseId, applied.end, applied.endSeq, applied.endedAt);
		this.issuedSeq = Math.max(this.issuedSeq, applied.endSeq);
		this.deps.emit(applied.end === "released" ? Events.leaseReleased : Events.leaseExpired, { leaseId: lease.leaseId, keyId: lease.keyId, holder: lease.holder, seq: applied.endSeq });
		return true;
	}

	private async reclaimExpired(): Promise<number> {
		let reclaimed = 0;
		for (const lease of this.table.expired(this.clock.now(), this.options.leaseGraceMs)) {
			try {
				if (!(await this.endLease(lease, "expired"))) continue;
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
