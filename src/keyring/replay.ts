/**
 * Replays the lease log in `seq` order. The keyring rebuilds its state from it after a
 * restart and the audit checks rule 4 with it, so both read the log the same way.
 *
 * The free-key queue starts with every key in `keyIds` order (never used, so oldest);
 * a grant takes a key out, a release or an expiry puts it at the tail.
 */
import type { LeaseDoc } from "../contract";

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

/** What a replay reports as it goes: the audit streams the log and keeps only what it lists. */
export interface ReplayListener {
	nonLruGrant(grant: NonLruGrant): void;
	problem(problem: ReplayProblem): void;
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

	constructor(keyIds: string[], listener: ReplayListener) {
		this.freeQueue = [...keyIds];
		this.#listener = listener;
	}

	apply({ seq, kind, lease }: ReplayEvent): void {
		this.lastSeq = Math.max(this.lastSeq, seq);
		if (kind === "grant") {
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
			this.freeQueue.push(lease.keyId);
		}
	}
}

export function replayLeases(keyIds: string[], leases: LeaseDoc[]): ReplayResult {
	const nonLruGrants: NonLruGrant[] = [];
	const problems: ReplayProblem[] = [];
	const replay = new LeaseReplay(keyIds, {
		nonLruGrant: (grant) => nonLruGrants.push(grant),
		problem: (problem) => problems.push(problem),
	});
	for (const event of leaseEvents(leases)) replay.apply(event);
	return {
		freeQueue: replay.freeQueue,
		active: replay.active,
		nonLruGrants,
		problems,
		lastSeq: replay.lastSeq,
	};
}
