/**
 * Replays the lease log in `seq` order. The keyring rebuilds its state from it after a
 * restart and the audit checks rule 4 with it, so both read the log the same way.
 *
 * The free-key queue starts with every key in `keyIds` order (never used, so oldest);
 * a grant takes a key out, a release or an expiry puts it at the tail. Key events (§5.8) come
 * in the same order: an added key joins the never-used keys (after those already free), a
 * retired or revoked one leaves the queue for good, and a grant of a key that was not active
 * then is reported.
 */
import type { KeyEvent, LeaseDoc } from "../contract";

export interface ReplayEvent {
	seq: number;
	kind: "grant" | "end";
	lease: LeaseDoc;
}

export interface NonLruGrant {
	leaseId: string;
	seq: number;
	granted: string;
	/** The free key that was least recently used at that moment. */
	expected: string | null;
}

export interface ReplayProblem {
	leaseId: string;
	seq: number;
	problem: string;
}

export interface ReplayResult {
	/** Free keys, least recently used first. */
	freeQueue: string[];
	/** Leases not ended, by keyId. */
	active: Map<string, LeaseDoc>;
	nonLruGrants: NonLruGrant[];
	/** A grant of a key that was not free, or an end of a lease that was not active. */
	problems: ReplayProblem[];
	lastSeq: number;
}

export function leaseEvents(leases: LeaseDoc[]): ReplayEvent[] {
	const events: ReplayEvent[] = [];
	for (const lease of leases) {
		events.push({ seq: lease.grantSeq, kind: "grant", lease });
		if (lease.endSeq != null) events.push({ seq: lease.endSeq, kind: "end", lease });
	}
	return events.sort((a, b) => a.seq - b.seq);
}

/** A grant of a key that was not active at its seq: not yet added, retired or revoked. */
export interface InactiveGrant {
	leaseId: string;
	seq: number;
	keyId: string;
	why: string;
}

/** What a replay reports as it goes: the audit streams the log and keeps only what it lists. */
export interface ReplayListener {
	nonLruGrant(grant: NonLruGrant): void;
	problem(problem: ReplayProblem): void;
	inactiveGrant(grant: InactiveGrant): void;
}

/**
 * The replay one event at a time, in `seq` order, holding only the free queue and the active
 * lease per key: a log of any length replays in memory that grows with the keys alone.
 */
export class LeaseReplay {
	readonly freeQueue: string[];
	/** Leases not ended, by keyId. */
	readonly active = new Map<string, LeaseDoc>();
	lastSeq = 0;
	readonly #listener: ReplayListener;
	/** Keys ever granted: the free queue's never-used keys are the others. */
	readonly #used = new Set<string>();
	/** Keys an `added` event brings later; until it comes, a grant of one is of no key yet. */
	readonly #pending: Set<string>;
	/** Retired and revoked keys, by the event that ended them. */
	readonly #ended = new Map<string, KeyEvent>();

	/** `keyIds`: the keys there from the start; `added`: those an `added` event brings later. */
	constructor(keyIds: string[], listener: ReplayListener, added: Iterable<string> = []) {
		this.freeQueue = [...keyIds];
		this.#listener = listener;
		this.#pending = new Set(added);
	}

	/** A key event, in seq order with the lease events. */
	applyKey(event: KeyEvent): void {
		this.lastSeq = Math.max(this.lastSeq, event.seq);
		if (event.event === "added") {
			if (!this.#pending.delete(event.keyId)) return;
			const firstUsed = this.freeQueue.findIndex((keyId) => this.#used.has(keyId));
			this.freeQueue.splice(
				firstUsed < 0 ? this.freeQueue.length : firstUsed,
				0,
				event.keyId,
			);
			return;
		}
		if (this.#ended.get(event.keyId)?.event === "revoked") return;
		this.#ended.set(event.keyId, event);
		const at = this.freeQueue.indexOf(event.keyId);
		if (at >= 0) this.freeQueue.splice(at, 1);
	}

	apply({ seq, kind, lease }: ReplayEvent): void {
		this.lastSeq = Math.max(this.lastSeq, seq);
		if (kind === "grant") {
			const inactive = this.#pending.has(lease.keyId)
				? `before it was added`
				: this.#ended.has(lease.keyId)
					? `after it was ${this.#ended.get(lease.keyId)!.event} at seq ${this.#ended.get(lease.keyId)!.seq}`
					: null;
			if (inactive !== null) {
				this.#listener.inactiveGrant({
					leaseId: lease.leaseId,
					seq,
					keyId: lease.keyId,
					why: `granted key ${lease.keyId} ${inactive}`,
				});
				if (!this.active.has(lease.keyId)) this.active.set(lease.keyId, lease);
				return;
			}
			this.#used.add(lease.keyId);
			const at = this.freeQueue.indexOf(lease.keyId);
			if (at < 0) {
				this.#listener.problem({
					leaseId: lease.leaseId,
					seq,
					problem: `granted key ${lease.keyId}, which was not free (held by lease ${this.active.get(lease.keyId)?.leaseId ?? "unknown"})`,
				});
				return;
			}
			if (at !== 0)
				this.#listener.nonLruGrant({
					leaseId: lease.leaseId,
					seq,
					granted: lease.keyId,
					expected: this.freeQueue[0] ?? null,
				});
			this.freeQueue.splice(at, 1);
			this.active.set(lease.keyId, lease);
		} else {
			if (this.active.get(lease.keyId)?.leaseId !== lease.leaseId) {
				this.#listener.problem({
					leaseId: lease.leaseId,
					seq,
					problem: `ended while not the active lease of key ${lease.keyId}`,
				});
				return;
			}
			this.active.delete(lease.keyId);
			if (!this.#ended.has(lease.keyId) && !this.#pending.has(lease.keyId))
				this.freeQueue.push(lease.keyId);
		}
	}
}

export function replayLeases(
	keyIds: string[],
	leases: LeaseDoc[],
	keyEvents: KeyEvent[] = [],
): ReplayResult {
	const nonLruGrants: NonLruGrant[] = [];
	const problems: ReplayProblem[] = [];
	const added = keyEvents.filter((e) => e.event === "added").map((e) => e.keyId);
	const replay = new LeaseReplay(
		keyIds.filter((keyId) => !added.includes(keyId)),
		{
			nonLruGrant: (grant) => nonLruGrants.push(grant),
			problem: (problem) => problems.push(problem),
			inactiveGrant: (grant) =>
				problems.push({ leaseId: grant.leaseId, seq: grant.seq, problem: grant.why }),
		},
		added,
	);
	const keyQueue = [...keyEvents].sort((a, b) => a.seq - b.seq);
	for (const event of leaseEvents(leases)) {
		while (keyQueue.length && keyQueue[0].seq < event.seq) replay.applyKey(keyQueue.shift()!);
		replay.apply(event);
	}
	for (const event of keyQueue) replay.applyKey(event);
	return {
		freeQueue: replay.freeQueue,
		active: replay.active,
		nonLruGrants,
		problems,
		lastSeq: replay.lastSeq,
	};
}
