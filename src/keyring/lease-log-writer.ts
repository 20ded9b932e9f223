/**
 * The keyring's writes to its lease log, and the one place that knows whether a write landed.
 * Every grant and end takes the next `seq` (a failed write burns its seq, so no value is ever
 * stored twice) and is written under the keyring role's epoch, so a stale keyring is refused by
 * the store. A write whose reply is lost is retried, and before each retry the log is read to
 * see whether the lost try was applied after all: a grant is never made twice, an end already
 * applied counts as done. A lease is read from the store at most once per outcome to learn.
 */
import { randomUUID } from "node:crypto";
import type { Clock } from "../clock";
import type { KeyDoc, KeyEvent, LeaseDoc, LeaseEnd } from "../contract";
import type { LeaseTable } from "./lease-table";
import type { KeyringRole } from "./role";
import {
	DuplicateLeaseError,
	FencedError,
	type KeyringStore,
	type LeaseEnding,
	type ResealedKey,
} from "./store";

/** Tries of a write whose outcome is unknown (a reply lost), with these pauses between them. */
const WRITE_RETRIES_MS = [100, 400, 1_600];

export interface WriterDeps {
	store: KeyringStore;
	table: LeaseTable;
	role: KeyringRole;
	clock: Clock;
	logger: { warn(...args: unknown[]): void };
	/** The store refused a write: another keyring holds the role. Returns what to throw. */
	fenced(): Error;
}

/** How an end went: applied (this one, or one the store already had), or refused because the lease was renewed meanwhile. */
export type EndOutcome =
	| { applied: { end: LeaseEnd; endSeq: number; endedAt: string } }
	| { renewedUntil: string }
	| null;

export class LeaseLogWriter {
	/** Last `seq` handed out. */
	private issuedSeq: number;

	constructor(private readonly deps: WriterDeps) {
		this.issuedSeq = deps.table.lastSeq;
	}

	/** Writes a grant of the next free key to `holder`; returns the lease as stored. */
	async grant(holder: string, ttlMs: number): Promise<LeaseDoc> {
		const { store, table, role, clock } = this.deps;
		for (;;) {
			const keyId = table.nextFreeKey();
			if (!keyId) throw new Error("grant with no free key");
			const now = clock.now();
			// Its id chosen before writing: after an unknown outcome, a retry finds the written lease.
			const leaseId = randomUUID();
			const lease: LeaseDoc = {
				_id: leaseId,
				leaseId,
				keyId,
				holder,
				grantSeq: ++this.issuedSeq,
				grantedAt: new Date(now).toISOString(),
				expiresAt: new Date(now + ttlMs).toISOString(),
				endSeq: null,
				endedAt: null,
				end: null,
			};
			const written = { ...lease };
			try {
				await this.write(
					`grant of ${keyId}`,
					() => store.insertLease(written, role.epoch),
					async () => ((await store.lease(leaseId)) ? { value: undefined } : null),
				);
				return lease;
			} catch (err) {
				if (!(err instanceof DuplicateLeaseError)) throw err;
				// Our own earlier try landed after all.
				if (await store.lease(leaseId)) return lease;
				// The store knows what this keyring does not (a write that landed unseen, a keyring before it): catch up and try again.
				await this.catchUp(keyId);
			}
		}
	}

	/** Writes a new expiry; true, or the lease as the store has it (ended by another keyring's reclaim, or unknown). */
	async renew(leaseId: string, expiresAt: string): Promise<true | LeaseDoc | null> {
		const { store, role } = this.deps;
		let seen: LeaseDoc | null = null;
		const matched = await this.write(
			`renewal of lease ${leaseId}`,
			() => store.renewLease(leaseId, expiresAt, role.epoch),
			async () => {
				seen = await store.lease(leaseId);
				return seen?.expiresAt === expiresAt ? { value: 1 } : null;
			},
		);
		return matched === 1 ? true : (seen ?? (await store.lease(leaseId)));
	}

	/**
	 * Ends a lease in the store: released, or expired when its stored expiry (renewals included)
	 * is at least `graceMs` old. An end already applied (its reply lost) counts as done.
	 */
	async end(lease: LeaseDoc, end: LeaseEnd, graceMs: number): Promise<EndOutcome> {
		const { store, role, clock } = this.deps;
		const now = clock.now();
		const ending: LeaseEnding = {
			end,
			endSeq: ++this.issuedSeq,
			endedAt: new Date(now).toISOString(),
		};
		if (end === "expired") ending.expiredBy = new Date(now - graceMs).toISOString();
		let seen: LeaseDoc | null = null;
		const matched = await this.write(
			`${end} of lease ${lease.leaseId}`,
			() => store.endLease(lease.leaseId, ending, role.epoch),
			async () => {
				seen = await store.lease(lease.leaseId);
				return seen?.end ? { value: 1 } : null;
			},
		);
		// Matched, or found applied by the lookup before a retry: `seen` then tells whether it was this end or an earlier one.
		const stored: LeaseDoc | null = matched === 1 ? seen : await store.lease(lease.leaseId);
		if (matched !== 1 && !stored?.end)
			return stored ? { renewedUntil: stored.expiresAt } : null;
		const applied =
			stored?.end &&
			stored.endSeq !== null &&
			stored.endedAt &&
			stored.endSeq !== ending.endSeq
				? { end: stored.end, endSeq: stored.endSeq, endedAt: stored.endedAt }
				: { end: ending.end, endSeq: ending.endSeq, endedAt: ending.endedAt };
		this.issuedSeq = Math.max(this.issuedSeq, applied.endSeq);
		return { applied };
	}

	/** The next `seq`, for a key event (docs/design.md §5.8). */
	nextSeq(): number {
		return ++this.issuedSeq;
	}

	/** Writes key events (with the keys they add); a try whose reply was lost is looked for before another. */
	async keyEvents(events: KeyEvent[], added: KeyDoc[]): Promise<void> {
		const { store, role } = this.deps;
		const last = events[events.length - 1];
		await this.write(
			`key event ${last.event} of ${last.keyId} at seq ${last.seq}`,
			() => store.writeKeyEvents(events, added, role.epoch),
			async () =>
				(await store.keyEvents()).some((e) => e.seq === last.seq)
					? { value: undefined }
					: null,
		);
	}

	/** Writes a master key's rotation (docs/design.md §5.8); a try whose reply was lost is looked for before another. */
	async reseal(keys: ResealedKey[], sealedAuthority: string): Promise<void> {
		const { store, role } = this.deps;
		await this.write(
			"re-sealing under the next master key",
			() => store.reseal(keys, sealedAuthority, role.epoch),
			async () =>
				(await store.sealedAuthority()) === sealedAuthority ? { value: undefined } : null,
		);
	}

	/** The store ended a lease without this keyring: its seq is taken. */
	sawSeq(seq: number): void {
		this.issuedSeq = Math.max(this.issuedSeq, seq);
	}

	/**
	 * Runs a store write, retrying one whose outcome is unknown; before each retry `landed`
	 * looks whether the lost try was applied after all (a value: done). The store's own refusals
	 * are not retried, and a fenced write turns this keyring off.
	 */
	private async write<T>(
		what: string,
		attempt: () => Promise<T>,
		landed: () => Promise<{ value: T } | null>,
	): Promise<T> {
		for (let tries = 0; ; tries++) {
			try {
				return await attempt();
			} catch (err) {
				if (err instanceof FencedError) throw this.deps.fenced();
				if (err instanceof DuplicateLeaseError || tries >= WRITE_RETRIES_MS.length)
					throw err;
				this.deps.logger.warn(
					`The store did not confirm the ${what}; looking whether it landed before trying again: ${(err as Error).message}`,
				);
				const seen = await landed().catch(() => null);
				if (seen) return seen.value;
				await this.deps.clock.sleep(WRITE_RETRIES_MS[tries]);
			}
		}
	}

	/** After the store refused a grant: learn its last seq and the key's open lease, if any. */
	private async catchUp(keyId: string): Promise<void> {
		const summary = await this.deps.store.summary();
		this.issuedSeq = Math.max(this.issuedSeq, summary.lastSeq);
		const open = summary.open.find((lease) => lease.keyId === keyId);
		if (open && !this.deps.table.activeLease(open.leaseId)) {
			this.deps.logger.warn(
				`The store holds lease ${open.leaseId} of ${keyId} (seq ${open.grantSeq}) that this keyring did not know; taking it into account`,
			);
			this.deps.table.adopt(open);
		}
	}
}
