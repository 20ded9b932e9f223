/**
 * The keyring's lease life, without a broker: the LRU queue of free keys, grants, renewals,
 * releases, expiry, and the FIFO line of callers waiting for a key. Its parts, each with one job:
 * - key-material.ts: the keys, checked against the master key (and sealed again under the next
 *   one, a rotation), and a leased key sealed to its holder;
 * - lease-log-writer.ts: every write to the lease log, and whether a write whose reply was lost landed;
 * - lease-table.ts: the lease state in memory (the LRU order, the open leases);
 * - wait-queue.ts: the callers waiting for a key.
 *
 * Every change runs through one `Serial` queue and is written to the store before memory
 * changes, and committed before anyone is told (docs/design.md §5.4), so a restart rebuilds the
 * same state from the `leases` collection. The changes of one moment share a commit: the next
 * change need not wait for the one before to be committed, only its reply does. The keyring
 * first claims the keyring role in its store (src/keyring/role.ts) and writes only under its
 * epoch, so a second keyring is refused by the store itself.
 */
import path from "node:path";
import { DomainError } from "../errors";
import type { JWK } from "jose";
import { systemClock, type Clock } from "../clock";
import {
	Events,
	keyEventsOf,
	type KeyEvent,
	type KeyInfo,
	type KeyringStatus,
	type KeyRevokedEvent,
	type LeaseGrant,
	type LeaseChange,
	type LeaseDoc,
	type LeaseEnd,
	type LeaseEvent,
	type MasterKeyRotation,
} from "../contract";
import type { AuthorityKey } from "../identity/authority";
import type { CredentialRole } from "../identity/credential";
import { issueKeyRevocation } from "../identity/key-revocation";
import type { TokenSettings } from "../pkcs11/token";
import type { KeyStore } from "../config";
import { KeyMaterial } from "./key-material";
import { checkSessionKey, InvalidSessionKeyError } from "./key-transport";
import { LeaseLogWriter } from "./lease-log-writer";
import { LeaseTable } from "./lease-table";
import { MasterKeyError, NEXT_MASTER_KEY_FILE } from "./master-key";
import { KeyringRole, type RoleIdentity } from "./role";
import { Serial } from "./serial";
import type { KeyringStore } from "./store";
import { WaitQueue, type Grant, type Waiter } from "./wait-queue";

export interface KeyringOptions {
	/** Keys to generate when the store holds none. */
	keys: number;
	/** base64 of 32 bytes, or null for `DATA_DIR/master.key` (or a random one in memory). */
	masterKey: string | null;
	/** KEYRING_MASTER_KEY_NEXT: a rotation's next master key beside `masterKey` (else DATA_DIR/master.key.next). */
	masterKeyNext?: string | null;
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
	/** KEY_MAX_USES: a key is retired by itself at its grant number this (null: never). */
	keyMaxUses?: number | null;
	/** KEY_STORE: where the private keys live (docs/design.md §5.1, §5.9). */
	keyStore: KeyStore;
	/** The token, with KEY_STORE=pkcs11 (its PIN: never in published settings). */
	token: TokenSettings | null;
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
	/** Publishes a domain event to one listener of each service (fire and forget). */
	emit(event: string, payload: LeaseEvent): void;
	/** Publishes a domain event to every node that listens, fire and forget: a revocation. */
	broadcast(event: string, payload: KeyRevokedEvent): void;
	/** The system clock unless a test moves time by hand. */
	clock?: Clock;
}

const stopping = (): Error =>
	new DomainError("KEYRING_STOPPING", "The keyring is stopping; no key was granted");

function toClientError(err: unknown): unknown {
	return err instanceof InvalidSessionKeyError
		? new DomainError("INVALID_SESSION_KEY", err.message)
		: err;
}

export class Keyring {
	private readonly serial = new Serial();
	private readonly waiters = new WaitQueue();
	private readonly log: LeaseLogWriter;
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
		private readonly keys: KeyMaterial,
		private readonly table: LeaseTable,
		private readonly role: KeyringRole,
	) {
		this.clock = deps.clock ?? systemClock;
		this.log = new LeaseLogWriter({
			store: deps.store,
			table,
			role,
			clock: this.clock,
			logger: deps.logger,
			fenced: () => {
				this.lostRole();
				return this.refusal();
			},
		});
	}

	/**
	 * Claims the keyring role in the store (or throws, naming the keyring that holds it), then
	 * loads (or generates) the keys, checks the master key against them, and rebuilds the lease state.
	 */
	static async open(options: KeyringOptions, deps: KeyringDeps): Promise<Keyring> {
		const { logger } = deps;
		const clock = deps.clock ?? systemClock;
		const role = await KeyringRole.claim(
			deps.store,
			deps.storeName,
			deps.identity,
			options.roleTtlMs,
			clock,
		);
		try {
			const keys = await KeyMaterial.load(options, deps.store, logger);
			const table = LeaseTable.fromSummary(
				keys.keyIds,
				await deps.store.summary(),
				keyEventsOf(keys.docs.values()),
			);
			const keyring = new Keyring(options, deps, keys, table, role);
			logger.info(
				`Keyring ready: ${keys.docs.size} keys (${table.activeCount} active), ${table.leasedCount} leased, ${table.freeCount} free, last seq ${table.lastSeq}, epoch ${role.epoch}`,
			);
			if (options.sweepIntervalMs > 0) keyring.startSweeping(options.sweepIntervalMs);
			role.keepRenewing(
				() => keyring.lostRole(),
				(err) =>
					logger.warn(
						`Could not renew the keyring role (epoch ${role.epoch}); trying again: ${err.message}`,
					),
			);
			return keyring;
		} catch (err) {
			await role.release().catch(() => undefined);
			throw err;
		}
	}

	// ------------------------------------------------------------ leases

	/** The key this keyring signs lease tokens with, derived from its master key. */
	get authority(): AuthorityKey {
		return this.keys.authority;
	}

	/**
	 * Grants the least recently used free key to `holder` (a proven signer's node), waiting in
	 * FIFO order when none is free, for at most min(waitMs, acquireWaitMs). The private key
	 * comes back sealed to `sessionKey`.
	 */
	async acquire(params: GrantRequest): Promise<LeaseGrant> {
		this.assertOpen();
		try {
			checkSessionKey(params.sessionKey);
		} catch (err) {
			throw toClientError(err);
		}
		const limitMs = Math.min(
			params.waitMs ?? this.options.acquireWaitMs,
			this.options.acquireWaitMs,
		);
		const { lease } = await this.waitForGrant(params.holder, limitMs);
		try {
			return {
				leaseId: lease.leaseId,
				keyId: lease.keyId,
				expiresAt: lease.expiresAt,
				...(await this.keys.keyFor(lease, params.sessionKey)),
			};
		} catch (err) {
			// The holder never got the key: hand it back instead of letting it idle until expiry.
			await this.release(lease.leaseId).catch((releaseErr) =>
				this.deps.logger.error(
					`Could not release lease ${lease.leaseId} after a failed key transport: ${(releaseErr as Error).message}`,
				),
			);
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
			const outcome = await this.log.renew(leaseId, expiresAt);
			if (outcome !== true) {
				// The store says it ended (another keyring's reclaim before this one took over): follow the store.
				if (outcome?.end && outcome.endSeq !== null && outcome.endedAt) {
					this.table.end(leaseId, outcome.end, outcome.endSeq, outcome.endedAt);
					this.log.sawSeq(outcome.endSeq);
				}
				return null;
			}
			this.table.renew(leaseId, expiresAt);
			return expiresAt;
		});
		if (renewed === null)
			return { leaseId, changed: false, reason: await this.whyNotCurrent(leaseId) };
		await this.committed();
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
		if (!released)
			return { leaseId, changed: false, reason: await this.whyNotCurrent(leaseId) };
		await this.committed();
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

	// ------------------------------------------------------------ key lifecycle (§5.8)

	/** Adds `count` keys, never used, so the next grants take them; waiting acquires are served. */
	async addKeys(count: number): Promise<KeyInfo[]> {
		this.assertOpen();
		const added = await this.serial.run(async () => {
			const now = new Date(this.clock.now());
			const docs = await this.keys.generate(count, now);
			const events: KeyEvent[] = docs.map((doc) => ({
				seq: (doc.addedSeq = this.log.nextSeq()),
				keyId: doc.keyId,
				event: "added",
				at: now.toISOString(),
				reason: null,
			}));
			await this.log.keyEvents(events, docs);
			this.keys.adopt(docs);
			this.table.addKeys(docs.map((doc) => doc.keyId));
			await this.serveWaiters();
			return docs.map((doc) => doc.keyId);
		});
		await this.committed();
		this.deps.logger.info(`Added ${added.length} key(s): ${added.join(", ")}`);
		return added.map((keyId) => this.keyInfo(keyId));
	}

	/**
	 * Rotates the master key (docs/design.md §5.8): every sealed key and the authority key are
	 * sealed again under the next master key, in one store transaction, between two grants; once
	 * it is committed this keyring uses the next key, and `master.key.next` becomes `master.key`.
	 * The authority key, and so every lease token and request MAC key, stays as it was.
	 */
	async rotateMasterKey(): Promise<MasterKeyRotation> {
		this.assertOpen();
		const from = this.keys.masterSource;
		const sealedKeys = await this.serial.run(async () => {
			let resealed;
			try {
				resealed = await this.keys.resealUnder(this.options);
			} catch (err) {
				if (err instanceof MasterKeyError)
					throw new DomainError("MASTER_KEY_INVALID", err.message);
				throw err;
			}
			if (!resealed)
				throw new DomainError(
					"NO_NEXT_MASTER_KEY",
					this.options.masterKey
						? "No next master key: set KEYRING_MASTER_KEY_NEXT on the keyring (base64 of 32 bytes), then rotate"
						: `No next master key: write one to ${path.join(this.options.dataDir, NEXT_MASTER_KEY_FILE)} (npm run keys -- rotate-master makes it), then rotate`,
				);
			await this.log.reseal(resealed.keys, resealed.authority);
			await this.committed();
			try {
				this.keys.useMaster(resealed.next, resealed.keys);
			} catch (err) {
				// Committed, and in use here: only the file swap failed, which the next start finishes.
				this.deps.logger.error(
					`The store is sealed under ${resealed.next.source}, but it could not be renamed over master.key (${(err as Error).message}): do not delete it; the keyring's next start finishes the swap`,
				);
			}
			return resealed.keys.length;
		});
		const to = this.keys.masterSource;
		this.deps.logger.warn(
			`Rotated the master key: ${sealedKeys} sealed key(s) and the authority key are sealed under ${to} (was ${from})${this.options.masterKey ? "; set KEYRING_MASTER_KEY to KEYRING_MASTER_KEY_NEXT's value before this keyring restarts" : ""}`,
		);
		return { sealedKeys, masterKey: to, at: new Date(this.clock.now()).toISOString() };
	}

	/**
	 * Retires or revokes a key: no lease is granted on it again, its current lease runs out,
	 * and it stays in the JWKS. The last active key is not retired (add keys first); it may be
	 * revoked, and acquires then wait for an added key. Changing a key already so is a no-op.
	 */
	async endKey(
		keyId: string,
		event: "retired" | "revoked",
		reason: string | null,
	): Promise<KeyInfo> {
		this.assertOpen();
		let revoked: KeyEvent | null = null;
		await this.serial.run(async () => {
			if (!this.keys.docs.has(keyId))
				throw new DomainError(
					"KEY_NOT_FOUND",
					`No key ${keyId} in this keyring (npm run keys -- list lists them)`,
					{ keyId },
				);
			const { state } = this.table.stateOf(keyId);
			if (state === "revoked" || (state === "retired" && event === "retired")) return;
			if (event === "retired" && state === "active" && this.table.activeCount === 1)
				throw new DomainError(
					"LAST_ACTIVE_KEY",
					`${keyId} is the last active key: add keys first (npm run keys -- add --count N), then retire it`,
					{ keyId },
				);
			const ended = await this.writeKeyEnd(
				keyId,
				event,
				reason ?? (event === "retired" ? "operator" : null),
			);
			if (event === "revoked") revoked = ended;
		});
		await this.committed();
		// Stored: records hears of it now and takes nothing the key signs from then on (§5.8).
		if (revoked) {
			const { keyId: key, at, seq } = revoked as KeyEvent;
			this.deps.broadcast(Events.keyRevoked, {
				keyId: key,
				at,
				notice: issueKeyRevocation(this.authority, { key, at, seq }),
			});
		}
		return this.keyInfo(keyId);
	}

	private async writeKeyEnd(
		keyId: string,
		event: "retired" | "revoked",
		reason: string | null,
	): Promise<KeyEvent> {
		const ended: KeyEvent = {
			seq: this.log.nextSeq(),
			keyId,
			event,
			at: new Date(this.clock.now()).toISOString(),
			reason,
		};
		await this.log.keyEvents([ended], []);
		this.table.endKey(ended);
		const lease = this.table.leaseOfKey(keyId);
		this.deps.logger.warn(
			`${event === "revoked" ? "Revoked" : "Retired"} ${keyId} at seq ${ended.seq}${reason ? ` (${reason})` : ""}: no new lease on it${lease ? `; lease ${lease.leaseId} of ${lease.holder} runs out` : ""}; ${this.table.activeCount} active key(s) left`,
		);
		if (this.table.activeCount === 0)
			this.deps.logger.error(
				"No active key is left: acquires wait until keys are added (npm run keys -- add --count N)",
			);
		return ended;
	}

	/** The holder of an active lease, or null. */
	holderOf(leaseId: string): string | null {
		return this.table.activeLease(leaseId)?.holder ?? null;
	}

	/**
	 * Turns away the waiting acquires of `holder` (its node left the cluster): a key granted
	 * to a node that is gone would sit idle until its lease expired.
	 */
	dropWaiters(holder: string): number {
		const dropped = this.waiters.rejectWhere(
			(waiter) => waiter.holder === holder,
			() =>
				new DomainError(
					"HOLDER_GONE",
					`${holder} left the cluster while waiting for a key; no key was granted`,
					{ holder },
				),
		);
		if (dropped)
			this.deps.logger.info(
				`Node ${holder} left: turned away its ${dropped} waiting acquire(s)`,
			);
		return dropped;
	}

	// ------------------------------------------------------------ public views

	jwks(): { keys: JWK[] } {
		return this.keys.jwks();
	}

	keyList(): KeyInfo[] {
		return [...this.keys.docs.keys()].sort().map((keyId) => this.keyInfo(keyId));
	}

	private keyInfo(keyId: string): KeyInfo {
		const doc = this.keys.docs.get(keyId)!;
		const lease = this.table.leaseOfKey(keyId);
		return {
			keyId,
			createdAt: doc.createdAt,
			...this.table.stateOf(keyId),
			uses: this.table.usesOf(keyId),
			leased: !!lease,
			leaseId: lease?.leaseId ?? null,
			holder: lease?.holder ?? null,
		};
	}

	status(): KeyringStatus {
		return {
			keys: this.keys.docs.size,
			active: this.table.activeCount,
			free: this.table.freeCount,
			leased: this.table.leasedCount,
			waiting: this.waiters.size,
			freeQueue: this.table.freeQueue(),
			lastSeq: this.table.lastSeq,
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
		this.waiters.rejectWhere(() => true, refusal);
		await this.serial.drain();
		if (!this.fenced)
			await this.role
				.release()
				.catch((err) =>
					this.deps.logger.warn(
						`Could not give the keyring role up; it expires by itself: ${(err as Error).message}`,
					),
				);
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

	private waitForGrant(holder: string, limitMs: number): Promise<Grant> {
		return new Promise((resolve, reject) => {
			if (this.closed) return reject(this.refusal());
			const waiter: Waiter = {
				holder,
				since: this.clock.now(),
				limitMs,
				timer: null,
				resolve,
				reject,
			};
			this.waiters.add(waiter);
			// Queued before the deadline check below, so a free key always goes to this caller first.
			this.serial
				.run(() => this.serveWaiters())
				.catch((err) =>
					this.deps.logger.error(
						`Serving waiting acquires failed: ${(err as Error).message}`,
					),
				);
			waiter.timer = this.clock.after(limitMs, () => {
				this.serial
					.run(() => this.giveUp(waiter))
					.catch((err) =>
						this.deps.logger.error(`Ending a wait failed: ${(err as Error).message}`),
					);
			});
		});
	}

	/** Serves waiting callers, oldest first, while keys are free; reclaims expired leases when none is. */
	private async serveWaiters(): Promise<void> {
		if (this.waiters.size && this.table.freeCount === 0) await this.reclaimExpired();
		for (
			let waiter = this.waiters.oldest();
			waiter && this.table.freeCount > 0;
			waiter = this.waiters.oldest()
		) {
			this.waiters.take(waiter);
			try {
				const grant = await this.grant(waiter);
				this.afterCommit(
					() => waiter.resolve(grant),
					(err) => waiter.reject(err),
				);
			} catch (err) {
				waiter.reject(err as Error);
			}
		}
	}

	/** A caller's wait is over: one last look for a key, then a clear 503. */
	private async giveUp(waiter: Waiter): Promise<void> {
		if (!this.waiters.has(waiter)) return;
		await this.serveWaiters();
		if (!this.waiters.take(waiter)) return;
		const waitedMs = this.clock.now() - waiter.since;
		const keys = this.keys.docs.size;
		const active = this.table.activeCount;
		// Which it is: every active key busy, or none left to lease (all retired or revoked).
		const why =
			active === 0
				? `No active key: all ${keys} keys are retired or revoked (npm run keys -- add --count N)`
				: `All ${active} active keys are leased`;
		waiter.reject(
			new DomainError(
				"NO_FREE_KEY",
				`${why}; waited ${waitedMs} ms (limit ${waiter.limitMs} ms) for a free key, ${this.waiters.size} other callers still waiting`,
				{ keys, active, waitedMs, limitMs: waiter.limitMs },
			),
		);
	}

	private async grant(waiter: Waiter): Promise<Grant> {
		const lease = await this.log.grant(waiter.holder, this.options.leaseTtlMs);
		this.table.grant(lease);
		const maxUses = this.options.keyMaxUses;
		if (maxUses && this.table.usesOf(lease.keyId) >= maxUses)
			// Retired with the grant that uses it up: it goes back to no queue when this lease ends.
			await this.writeKeyEnd(lease.keyId, "retired", "max-uses").catch((err: Error) =>
				this.deps.logger.error(
					`Could not retire ${lease.keyId} at its ${maxUses} uses (KEY_MAX_USES); it is tried again at its next grant: ${err.message}`,
				),
			);
		const waitMs = Date.parse(lease.grantedAt) - waiter.since;
		this.afterCommit(() =>
			this.deps.emit(Events.leaseGranted, {
				leaseId: lease.leaseId,
				keyId: lease.keyId,
				holder: lease.holder,
				seq: lease.grantSeq,
				waitMs,
			}),
		);
		this.deps.logger.debug(
			`Granted ${lease.keyId} to ${lease.holder} (lease ${lease.leaseId}, seq ${lease.grantSeq}, waited ${waitMs} ms)`,
		);
		return { lease, waitMs };
	}

	/** Another keyring took the role: grant and renew nothing more (releases are refused by the store too). */
	private lostRole(): void {
		if (this.fenced) return;
		this.deps.logger.error(
			`Another keyring took the keyring role of ${this.deps.storeName} (this one held epoch ${this.role.epoch}): this keyring stops granting and renewing leases now`,
		);
		void this.fence(
			() =>
				new DomainError(
					"KEYRING_FENCED",
					`This keyring no longer grants or renews leases: another keyring holds the role in ${this.deps.storeName}`,
					{ epoch: this.role.epoch },
				),
		);
	}

	/**
	 * Ends a lease in the store, then here. An end already applied (its reply lost) counts as
	 * done; a reclaim the store refuses because the lease was renewed meanwhile changes nothing.
	 */
	private async endLease(lease: LeaseDoc, end: LeaseEnd): Promise<boolean> {
		const outcome = await this.log.end(lease, end, this.options.leaseGraceMs);
		if (!outcome || "renewedUntil" in outcome) {
			// A reclaim of a lease the store knows renewed: take its expiry and leave it be.
			if (outcome) this.table.renew(lease.leaseId, outcome.renewedUntil);
			return false;
		}
		const { applied } = outcome;
		this.table.end(lease.leaseId, applied.end, applied.endSeq, applied.endedAt);
		this.afterCommit(() =>
			this.deps.emit(
				applied.end === "released" ? Events.leaseReleased : Events.leaseExpired,
				{
					leaseId: lease.leaseId,
					keyId: lease.keyId,
					holder: lease.holder,
					seq: applied.endSeq,
				},
			),
		);
		return true;
	}

	/**
	 * Waits until the lease writes so far are committed (§5.4). A failed commit leaves this
	 * keyring's memory ahead of its store: it stops (`commitFailed`) and the caller gets why.
	 */
	private async committed(): Promise<void> {
		try {
			await this.deps.store.durable();
		} catch (err) {
			this.commitFailed(err as Error);
			throw this.refusal();
		}
	}

	/** Tells (replies, events) once the lease writes so far are committed; `failed` hears why not. */
	private afterCommit(tell: () => void, failed: (err: Error) => void = () => undefined): void {
		this.committed().then(tell, failed);
	}

	/**
	 * The store could not commit lease writes this keyring already counts in memory. Nobody was
	 * told of them, so the store is still the truth: this keyring stops granting and renewing,
	 * gives the role up, and a restarted (or standby) keyring rebuilds from the store.
	 */
	private commitFailed(err: Error): void {
		if (this.fenced) return;
		this.deps.logger.error(
			`The keyring's store could not commit its lease writes (${err.message}): this keyring stops granting and renewing leases; restart it to rebuild its state from the store`,
		);
		void this.fence(
			() =>
				new DomainError(
					"KEYRING_STORE_FAILED",
					`The keyring's store could not commit its lease writes (${err.message}); restart the keyring, which rebuilds its state from the store`,
				),
		);
	}

	private async reclaimExpired(): Promise<number> {
		let reclaimed = 0;
		for (const lease of this.table.expired(this.clock.now(), this.options.leaseGraceMs)) {
			try {
				if (!(await this.endLease(lease, "expired"))) continue;
				reclaimed++;
				this.deps.logger.warn(
					`Reclaimed ${lease.keyId} from ${lease.holder}: lease ${lease.leaseId} expired at ${lease.expiresAt}`,
				);
			} catch (err) {
				this.deps.logger.error(
					`Could not reclaim expired lease ${lease.leaseId}; retrying at the next sweep: ${(err as Error).message}`,
				);
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
				.catch((err) =>
					this.deps.logger.error(`Expiry sweep failed: ${(err as Error).message}`),
				)
				.finally(() => {
					this.sweepQueued = false;
				});
		});
	}

	/** Why a renew or release changed nothing, from the store (ended leases never change again). */
	private async whyNotCurrent(leaseId: string): Promise<string> {
		const stored = await this.deps.store.lease(leaseId);
		if (!stored) return `unknown lease ${leaseId}; nothing changed`;
		if (stored.end)
			return `lease ${leaseId} of ${stored.keyId} already ended (${stored.end} at ${stored.endedAt}, seq ${stored.endSeq}); nothing changed`;
		return `lease ${leaseId} is not current in this keyring; nothing changed`;
	}
}
