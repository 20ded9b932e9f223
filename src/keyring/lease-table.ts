/**
 * The keyring's in-memory lease state, without I/O: the free keys in LRU order, the active
 * leases, uses per key and the last persisted `seq`. The keyring changes it only after the
 * store has accepted the same change, so it never claims what the store does not hold.
 */
import type { KeyEvent, KeyState, LeaseDoc, LeaseEnd } from "../contract";
import type { LeaseLogSummary } from "./store";

export class LeaseTable {
	/** Insertion order is the LRU order: take from the front, give back at the end. */
	private readonly free = new Set<string>();
	private readonly byLease = new Map<string, LeaseDoc>();
	private readonly byKey = new Map<string, LeaseDoc>();
	private readonly uses = new Map<string, number>();
	/** Retired and revoked keys (docs/design.md §5.8), with the event that ended them: never free again. */
	private readonly ended = new Map<string, KeyEvent>();
	/** Every key this keyring has, active or not. */
	private readonly keyIds = new Set<string>();
	private lastSeqValue = 0;
	/** Never later than the earliest `expiresAt` of an active lease: spares most expiry scans. */
	private expiryFloor = Infinity;

	/**
	 * Rebuilds the state a keyring left in the store: the keys without an open lease are free,
	 * never-used ones first (the first keys in keyId order, then added ones in the order they
	 * were added), then by the seq of their last end (what replaying the log grant by grant
	 * would give, in memory per key rather than per lease). Retired and revoked keys are not.
	 */
	static fromSummary(
		keyIds: string[],
		summary: LeaseLogSummary,
		keyEvents: KeyEvent[] = [],
	): LeaseTable {
		const table = new LeaseTable();
		for (const keyId of keyIds) table.keyIds.add(keyId);
		for (const event of keyEvents) if (event.event !== "added") table.endKey(event);
		for (const lease of summary.open) table.activate(lease);
		const free = [...keyIds]
			.sort()
			.filter((keyId) => !table.byKey.has(keyId) && !table.ended.has(keyId));
		const lastEnd = (keyId: string) => summary.lastEnd.get(keyId) ?? 0;
		// Never-used keys: the first ones in id order, then each added one after those before it.
		const addedSeq = new Map(
			keyEvents.filter((e) => e.event === "added").map((e) => [e.keyId, e.seq]),
		);
		const added = (keyId: string) => addedSeq.get(keyId) ?? 0;
		free.sort(
			(a, b) =>
				lastEnd(a) - lastEnd(b) || added(a) - added(b) || (a < b ? -1 : a > b ? 1 : 0),
		);
		for (const keyId of free) table.free.add(keyId);
		for (const keyId of keyIds) table.uses.set(keyId, summary.uses.get(keyId) ?? 0);
		table.lastSeqValue = summary.lastSeq;
		return table;
	}

	get lastSeq(): number {
		return this.lastSeqValue;
	}

	/** Keys leases may be granted on: neither retired nor revoked. */
	get activeCount(): number {
		return this.keyIds.size - this.ended.size;
	}

	/** A key's state, and since when it is retired or revoked. */
	stateOf(keyId: string): { state: KeyState; since: string | null } {
		const ended = this.ended.get(keyId);
		return ended
			? { state: ended.event as KeyState, since: ended.at }
			: { state: "active", since: null };
	}

	/**
	 * Keys just added: never used, so they join the never-used keys at the head of the free
	 * queue, after those already there (their ids come later), and are granted next.
	 */
	addKeys(keyIds: string[]): void {
		const free = [...this.free];
		const neverUsed = free.filter((keyId) => this.usesOf(keyId) === 0);
		const used = free.filter((keyId) => this.usesOf(keyId) > 0);
		for (const keyId of keyIds) {
			this.keyIds.add(keyId);
			this.uses.set(keyId, 0);
		}
		this.free.clear();
		for (const keyId of [...neverUsed, ...keyIds, ...used]) this.free.add(keyId);
	}

	/** A key retired or revoked: out of the free queue; if leased, its lease runs out and it stays out. */
	endKey(event: KeyEvent): void {
		const previous = this.ended.get(event.keyId);
		// A revocation outranks a retirement; nothing outranks a revocation.
		if (previous && (previous.event === "revoked" || event.event === "retired")) return;
		this.ended.set(event.keyId, event);
		this.free.delete(event.keyId);
		this.lastSeqValue = Math.max(this.lastSeqValue, event.seq);
	}

	get freeCount(): number {
		return this.free.size;
	}

	get leasedCount(): number {
		return this.byLease.size;
	}

	/** The least recently used free key, or undefined when every key is leased. */
	nextFreeKey(): string | undefined {
		for (const keyId of this.free) return keyId;
		return undefined;
	}

	freeQueue(): string[] {
		return [...this.free];
	}

	activeLease(leaseId: string): LeaseDoc | undefined {
		return this.byLease.get(leaseId);
	}

	leaseOfKey(keyId: string): LeaseDoc | undefined {
		return this.byKey.get(keyId);
	}

	usesOf(keyId: string): number {
		return this.uses.get(keyId) ?? 0;
	}

	/** Records a persisted grant; it must be of the head of the free queue. */
	grant(lease: LeaseDoc): void {
		if (this.nextFreeKey() !== lease.keyId)
			throw new Error(
				`grant of ${lease.keyId} is not of the least recently used free key ${this.nextFreeKey() ?? "(none)"}`,
			);
		this.free.delete(lease.keyId);
		this.activate(lease);
		this.uses.set(lease.keyId, this.usesOf(lease.keyId) + 1);
		this.lastSeqValue = Math.max(this.lastSeqValue, lease.grantSeq);
	}

	/** A lease the store holds open that this table did not know: its key is leased, not free. */
	adopt(lease: LeaseDoc): void {
		this.free.delete(lease.keyId);
		this.activate(lease);
		this.uses.set(lease.keyId, this.usesOf(lease.keyId) + 1);
		this.lastSeqValue = Math.max(this.lastSeqValue, lease.grantSeq);
	}

	renew(leaseId: string, expiresAt: string): void {
		const lease = this.mustBeActive(leaseId);
		lease.expiresAt = expiresAt;
		this.expiryFloor = Math.min(this.expiryFloor, Date.parse(expiresAt));
	}

	/** Records a persisted release or reclaim: the key goes to the tail of the free queue (unless it was retired or revoked meanwhile). */
	end(leaseId: string, end: LeaseEnd, endSeq: number, endedAt: string): LeaseDoc {
		const lease = this.mustBeActive(leaseId);
		this.byLease.delete(leaseId);
		this.byKey.delete(lease.keyId);
		if (!this.ended.has(lease.keyId)) this.free.add(lease.keyId);
		this.lastSeqValue = Math.max(this.lastSeqValue, endSeq);
		return { ...lease, end, endSeq, endedAt };
	}

	/** Active leases whose `expiresAt + graceMs` has passed at `now`. */
	expired(now: number, graceMs: number): LeaseDoc[] {
		if (now < this.expiryFloor + graceMs) return [];
		const due: LeaseDoc[] = [];
		let floor = Infinity;
		for (const lease of this.byLease.values()) {
			const expiresAt = Date.parse(lease.expiresAt);
			// Due leases stay in the floor: if a reclaim fails, the next sweep looks again.
			floor = Math.min(floor, expiresAt);
			if (expiresAt + graceMs <= now) due.push(lease);
		}
		this.expiryFloor = floor;
		return due;
	}

	private activate(lease: LeaseDoc): void {
		const copy = { ...lease };
		this.byLease.set(copy.leaseId, copy);
		this.byKey.set(copy.keyId, copy);
		this.expiryFloor = Math.min(this.expiryFloor, Date.parse(copy.expiresAt));
	}

	private mustBeActive(leaseId: string): LeaseDoc {
		const lease = this.byLease.get(leaseId);
		if (!lease) throw new Error(`lease ${leaseId} is not active`);
		return lease;
	}
}
