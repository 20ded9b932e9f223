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

export function replayLeases(keyIds: string[], leases: LeaseDoc[]): ReplayResult {
	const freeQueue = [...keyIds];
	const active = new Map<string, LeaseDoc>();
	const nonLruGrants: NonLruGrant[] = [];
	const problems: ReplayProblem[] = [];
	let lastSeq = 0;
	for (const { seq, kind, lease } of leaseEvents(leases)) {
		lastSeq = Math.max(lastSeq, seq);
		if (kind === "grant") {
			const at = freeQueue.indexOf(lease.keyId);
			if (at < 0) {
				problems.push({ leaseId: lease.leaseId, seq, problem: `granted key ${lease.keyId}, which was not free (held by lease ${active.get(lease.keyId)?.leaseId ?? "unknown"})` });
				continue;
			}
			if (at !== 0) nonLruGrants.push({ leaseId: lease.leaseId, seq, granted: lease.keyId, expected: freeQueue[0] ?? null });
			freeQueue.splice(at, 1);
			active.set(lease.keyId, lease);
		} else {
			if (active.get(lease.keyId)?.leaseId !== lease.leaseId) {
				problems.push({ leaseId: lease.leaseId, seq, problem: `ended while not the active lease of key ${lease.keyId}` });
				continue;
			}
			active.delete(lease.keyId);
			freeQueue.push(lease.keyId);
		}
	}
	return { freeQueue, active, nonLruGrants, problems, lastSeq };
}
