/**
 * The lease log half of rule "no-key-overlap" and rule "lru-order": every lease on its own,
 * then the log replayed in `seq` order. Grants and ends are two index-ordered queries merged
 * as they stream, so memory grows with the keys, never with the log.
 */
import { LeaseReplay, type ReplayEvent } from "../keyring/replay";
import {
	KEY_LIFECYCLE_NONE,
	keyEventsOf,
	type KeyDoc,
	type KeyEvent,
	type LeaseDoc,
} from "../contract";
import { tableColumns } from "./documents";
import { compareSql, yieldToEventLoop, type AuditDb } from "./audit-db";
import { FindingList, isSeq, time, type RuleName } from "./checks";

interface LeaseLogRow {
	leaseId: string;
	keyId: string;
	grantSeq: unknown;
	grantedAt: unknown;
	endSeq: unknown;
	endedAt: unknown;
	end: unknown;
	/** False for an import's second document of a lease id: replayed, but not checked again. */
	first: number;
}

function checkLease(lease: LeaseLogRow, knownKeys: Set<string>, findings: FindingList): void {
	const rule: RuleName = "no-key-overlap";
	const ids = { leaseId: lease.leaseId, keyId: lease.keyId };
	if (!knownKeys.has(lease.keyId))
		findings.add(rule, `lease ${lease.leaseId} is of unknown key ${lease.keyId}`, ids);
	if (!isSeq(lease.grantSeq))
		findings.add(
			rule,
			`lease ${lease.leaseId} has no valid grantSeq (${JSON.stringify(lease.grantSeq)})`,
			ids,
		);
	const ended = lease.endSeq != null || lease.endedAt != null || lease.end != null;
	if (
		ended &&
		(!isSeq(lease.endSeq) ||
			lease.endedAt == null ||
			(lease.end !== "released" && lease.end !== "expired"))
	)
		findings.add(
			rule,
			`lease ${lease.leaseId} is half ended (end ${JSON.stringify(lease.end)}, endSeq ${JSON.stringify(lease.endSeq)}, endedAt ${JSON.stringify(lease.endedAt)})`,
			ids,
		);
	if (isSeq(lease.endSeq) && isSeq(lease.grantSeq) && lease.endSeq <= lease.grantSeq)
		findings.add(
			rule,
			`lease ${lease.leaseId} ends at seq ${lease.endSeq}, not after its grant at seq ${lease.grantSeq}`,
			ids,
		);
	if (Number.isNaN(time(lease.grantedAt)))
		findings.add(
			rule,
			`lease ${lease.leaseId} has no valid grantedAt (${JSON.stringify(lease.grantedAt)})`,
			ids,
		);
	else if (time(lease.endedAt) < time(lease.grantedAt))
		findings.add(
			rule,
			`lease ${lease.leaseId} ended at ${lease.endedAt}, before its grant at ${lease.grantedAt}`,
			ids,
		);
}

/** The key events (§5.8) the keys' lifecycle fields hold, in seq order; none in a store or export from before them. */
export function storedKeyEvents(db: AuditDb): KeyEvent[] {
	const present = tableColumns(db, "kr", "keys");
	const fields = Object.keys(KEY_LIFECYCLE_NONE);
	if (!fields.every((field) => present.has(field))) return [];
	const rows = db.sql
		.prepare(`SELECT keyId, createdAt, ${fields.join(", ")} FROM kr.keys`)
		.all() as unknown as KeyDoc[];
	return keyEventsOf(
		rows.map((row) => ({
			...row,
			addedSeq: seqOrNull(row.addedSeq),
			retiredSeq: seqOrNull(row.retiredSeq),
			revokedSeq: seqOrNull(row.revokedSeq),
		})),
	);
}

const seqOrNull = (value: unknown): number | null => (isSeq(value) ? value : null);

/** Checks every lease and replays the log; returns how many lease documents it read. */
export async function checkLeases(
	db: AuditDb,
	keyIds: string[],
	keyEvents: KeyEvent[],
	findings: FindingList,
): Promise<number> {
	const rule: RuleName = "no-key-overlap";
	const imported = db.kind === "import";
	if (imported)
		for (const row of db.sql
			.prepare(
				"SELECT leaseId, count(*) AS n FROM kr.leases GROUP BY leaseId HAVING n > 1 ORDER BY leaseId",
			)
			.iterate())
			for (let extra = 1; extra < Number(row.n); extra++)
				findings.add(rule, `lease ${row.leaseId} is stored twice`, {
					leaseId: String(row.leaseId),
				});

	const first = imported
		? "(l.rowid = (SELECT min(x.rowid) FROM kr.leases x WHERE x.leaseId = l.leaseId)) AS first"
		: "1 AS first";
	const columns = `l.leaseId, l.keyId, l.grantSeq, l.grantedAt, l.endSeq, l.endedAt, l."end", ${first}`;
	const grants = db.sql
		.prepare(
			`SELECT ${columns} FROM kr.leases l ORDER BY l.grantSeq${imported ? ", l.rowid" : ""}`,
		)
		.iterate() as Iterator<LeaseLogRow>;
	const ends = db.sql
		.prepare(
			`SELECT ${columns} FROM kr.leases l WHERE l.endSeq IS NOT NULL ORDER BY l.endSeq${imported ? ", l.rowid" : ""}`,
		)
		.iterate() as Iterator<LeaseLogRow>;

	const knownKeys = new Set(keyIds);
	// Keys added, retired and revoked (§5.8), in seq order; the keys an event adds join later.
	const added = new Set(keyEvents.filter((e) => e.event === "added").map((e) => e.keyId));
	// The free queue starts with every key there from the start in ascending id order: the keyring's own rule for never-used keys.
	const initial = keyIds.filter((keyId) => !added.has(keyId));
	const replay = new LeaseReplay(
		initial,
		{
			inactiveGrant: (grant) =>
				findings.add(
					"lru-order",
					`lease ${grant.leaseId} (seq ${grant.seq}) ${grant.why}: only active keys are granted`,
					{ leaseId: grant.leaseId, seq: String(grant.seq), keyId: grant.keyId },
				),
			problem: (problem) =>
				findings.add(
					rule,
					`lease ${problem.leaseId} (seq ${problem.seq}) ${problem.problem}`,
					{
						leaseId: problem.leaseId,
						seq: String(problem.seq),
					},
				),
			nonLruGrant: (grant) =>
				findings.add(
					"lru-order",
					`lease ${grant.leaseId} (seq ${grant.seq}) was granted key ${grant.granted} while ${grant.expected} was the least recently used free key`,
					{
						leaseId: grant.leaseId,
						seq: String(grant.seq),
						keyId: grant.granted,
						expected: grant.expected ?? "",
					},
				),
		},
		added,
	);

	let count = 0;
	let nextKeyEvent = 0;
	let events = 0;
	// In seq order a reused seq is two events in a row: the log must be totally ordered.
	let lastSeq: number | null = null;
	let lastOwner = "";
	let grant = grants.next();
	let end = ends.next();
	try {
		while (!grant.done || !end.done) {
			// On a tie the grant goes first: a lease granted and ended at one seq is named once, as the keyring wrote it.
			const takeGrant =
				!grant.done &&
				(end.done || compareSql(grant.value.grantSeq, end.value.endSeq) <= 0);
			const lease = takeGrant ? grant.value : end.value;
			const seq = takeGrant ? lease.grantSeq : lease.endSeq;
			if (takeGrant) {
				count++;
				if (lease.first) checkLease(lease, knownKeys, findings);
				grant = grants.next();
			} else end = ends.next();
			if (lease.first && isSeq(seq)) {
				if (seq === lastSeq)
					findings.add(
						rule,
						`seq ${seq} is used by both lease ${lastOwner} and lease ${lease.leaseId}; the lease log must be totally ordered`,
						{ leaseId: lease.leaseId, seq: String(seq) },
					);
				else [lastSeq, lastOwner] = [seq, lease.leaseId];
			}
			while (
				nextKeyEvent < keyEvents.length &&
				isSeq(seq) &&
				keyEvents[nextKeyEvent].seq < seq
			)
				replay.applyKey(keyEvents[nextKeyEvent++]);
			replay.apply({
				seq,
				kind: takeGrant ? "grant" : "end",
				lease: lease as unknown as LeaseDoc,
			} as ReplayEvent);
			if (++events % 2000 === 0) await yieldToEventLoop();
		}
	} finally {
		grants.return?.();
		ends.return?.();
	}
	return count;
}
