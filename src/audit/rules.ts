/**
 * The audit of docs/design.md §9 over an audit database (the store's own files or an
 * import). The threads check the records and their signatures range by range (rules 1 and 2,
 * and each signature's lease); meanwhile the main thread hands out the ranges, checks the keys,
 * replays the lease log (no-key-overlap, lru-order) and merges batches with their signatures
 * (one-key-per-batch, batch-size). Each rule has a stable name that tests, the CLI and
 * operators use.
 */
import { randomBytes } from "node:crypto";
import { closeAfter, withReadSnapshot, type AuditDb } from "./audit-db";
import { checkBatches, checkRuns } from "./check-batches";
import { checkPublicKeys } from "./check-keys";
import { checkLeases, storedKeyEvents } from "./check-leases";
import { checkLogs, type LogAuditOptions, type LogSummary, type SummedRows } from "./check-logs";
import { LeafSum, SUM_KEY_BYTES } from "./leaf-sums";
import { holdsLog, storedLeafCount } from "./log-tables";
import { FindingList, RULES, type RuleName, type Violation } from "./checks";
import { importSnapshot, type CollectionCounts } from "./import";
import { runRanges, type RangeOptions } from "./range-pool";
import type { AuditSnapshot } from "./snapshot";
import type { KeyEvent } from "../contract";

export { RULES, type RuleName, type Violation };

export interface RuleResult {
	rule: RuleName;
	ok: boolean;
	/** Every violation found, listed or not. */
	violations: number;
	/** How many of them `AuditReport.violations` lists. */
	listed: number;
	/**
	 * False for a log rule when the source holds no such log (an audit over NATS reads rows
	 * only; a store from before the logs): nothing was checked, so nothing was found. Absent
	 * when the rule was checked.
	 */
	checked?: false;
}

/** The log each log rule checks. */
const LOG_OF_RULE: Partial<Record<RuleName, LogSummary["log"]>> = {
	"signature-log": "signatures",
	"lease-log": "leases",
};

export interface AuditReport {
	ok: boolean;
	checked: CollectionCounts;
	rules: RuleResult[];
	/**
	 * Records with no signature while the last run has not completed (running, cancelled or
	 * failed; or no run yet): unfinished work, not violations of one-signature-per-record.
	 */
	unsigned: { records: number; run: { runId: string; status: string } | null };
	/** The transparency logs the source holds (docs/design.md §8.4), on either backend: none in stores from before the logs. */
	logs: LogSummary[];
	/** Every violation of every rule, listed or not. */
	violationCount: number;
	/**
	 * Records with no signature while a follow run is running: waiting for it, not unfinished
	 * work (docs/design.md §7.7); 0 otherwise, when a record with none is rule 1's finding.
	 */
	pending: number;
	/** The first `maxListedPerRule` violations of each rule, in rule order. */
	violations: Violation[];
	/**
	 * Keys retired or revoked (docs/design.md §5.8), in seq order: a verifier refuses a revoked
	 * key's signatures made after `at`. Not violations: leases granted before run out. A revoked
	 * key's `signedAfter` counts its stored signatures made after `at` (by their signedAt).
	 */
	endedKeys: Array<KeyEvent & { signedAfter?: number }>;
}

export interface AuditOptions extends RangeOptions, LogAuditOptions {
	/** Slack between the signers' and the keyring's clocks when placing a signature in its lease. */
	clockToleranceMs?: number;
	/** A broken store must not print a million lines: list this many per rule, count them all. */
	maxListedPerRule?: number;
}

const DEFAULTS = { clockToleranceMs: 1000, maxListedPerRule: 50 };

function isAuditDb(source: AuditDb | AuditSnapshot): source is AuditDb {
	return "sql" in source && "files" in source;
}

/**
 * Audits `source`. An in-memory snapshot is imported first; callers that can should pass an
 * audit database instead (openStoreFiles, importExport, importFromPages), which never holds a
 * collection in memory.
 */
export async function audit(
	source: AuditDb | AuditSnapshot,
	options: AuditOptions = {},
): Promise<AuditReport> {
	if (!isAuditDb(source)) return auditSnapshot(source, options);
	const db = source;
	const { clockToleranceMs, maxListedPerRule: maxListed } = { ...DEFAULTS, ...options };
	// One list per pass, joined in a fixed order: the report does not depend on which thread ran first.
	const keyFindings = new FindingList(maxListed);
	const runFindings = new FindingList(maxListed);
	const leaseFindings = new FindingList(maxListed);
	const recordFindings = new FindingList(maxListed);
	const batchFindings = new FindingList(maxListed);
	const logFindings = new FindingList(maxListed);
	let logs: LogSummary[] = [];
	let unsigned = 0;
	let lastRun: { runId: string; status: string } | null = null;
	const checked = { records: 0, signatures: 0, batches: 0, leases: 0, keys: 0, runs: 0 };
	let endedKeys: AuditReport["endedKeys"] = [];
	let pending = 0;

	await withReadSnapshot(db, async () => {
		const keyEvents = storedKeyEvents(db);
		// A lease a revoked key held ran out as usual (§5.8): what it signed after the revocation is stored.
		const signedAfter = db.sql.prepare(
			"SELECT count(*) AS n FROM rec.signatures WHERE keyId = ? AND signedAt > ?",
		);
		endedKeys = keyEvents
			.filter((event) => event.event !== "added")
			.map((event) =>
				event.event === "revoked"
					? {
							...event,
							signedAfter: Number(
								(signedAfter.get(event.keyId, event.at) as { n: number }).n,
							),
						}
					: event,
			);
		const keys = checkPublicKeys(db, keyFindings);
		const runs = checkRuns(db, runFindings);
		checked.keys = keys.count;
		checked.runs = runs.count;
		lastRun = runs.latest;
		// After a completed run every record must be signed; before, unsigned ones are work left.
		const unsignedIsUnfinished = runs.latest?.status !== "completed";
		// The threads sum the signatures' leaves as they read them (src/audit/leaf-sums.ts).
		const logged = holdsLog(db.sql, "signatures")
			? { key: randomBytes(SUM_KEY_BYTES), size: storedLeafCount(db.sql, "signatures") }
			: null;
		const rowSum = logged && new LeafSum(logged.key);
		const ranges = runRanges(
			db,
			{
				kind: "audit",
				keys: keys.usable,
				clockToleranceMs,
				maxListed,
				unsignedIsUnfinished,
				unsignedPending: [...runs.follow].some((runId) => runs.running.has(runId)),
				signatureLog: logged
					? { key: logged.key.toString("base64"), size: logged.size }
					: undefined,
			},
			options,
			(range) => {
				checked.records += range.records;
				checked.signatures += range.signatures;
				unsigned += range.unsigned ?? 0;
				pending += range.pending ?? 0;
				recordFindings.append(range.findings!);
				if (range.logged) rowSum?.merge(range.logged);
			},
		);
		const summed: SummedRows | undefined = logged
			? {
					...logged,
					sum: ranges.then(
						() => rowSum,
						() => null,
					),
				}
			: undefined;
		const mainPasses = (async () => {
			checked.leases = await checkLeases(db, keys.keyIds, keyEvents, leaseFindings);
			checked.batches = await checkBatches(db, runs, batchFindings);
			logs = await checkLogs(db, options, logFindings, summed);
		})();
		// Both run to the end (the threads must stop before the snapshot ends), then any failure surfaces.
		const outcomes = await Promise.allSettled([ranges, mainPasses]);
		for (const outcome of outcomes) if (outcome.status === "rejected") throw outcome.reason;
	});

	const all = new FindingList(maxListed);
	for (const part of [
		keyFindings,
		runFindings,
		leaseFindings,
		recordFindings,
		batchFindings,
		logFindings,
	])
		all.append(part.data());
	const rules: RuleResult[] = RULES.map((rule, at) => {
		const log = LOG_OF_RULE[rule];
		const result: RuleResult = {
			rule,
			ok: all.counts[at] === 0,
			violations: all.counts[at],
			listed: all.listed[at].length,
		};
		return log && !logs.some((summary) => summary.log === log)
			? { ...result, checked: false }
			: result;
	});
	return {
		ok: rules.every((r) => r.ok),
		checked,
		rules,
		unsigned: { records: unsigned, run: unsigned ? lastRun : null },
		logs,
		violationCount: rules.reduce((sum, r) => sum + r.violations, 0),
		violations: all.listed.flat(),
		endedKeys,
		pending,
	};
}

/** `npm run audit`'s exit code (docs/design.md §9.3): violations first, then work left undone. */
export const AUDIT_EXIT = { passed: 0, violations: 1, error: 2, unsigned: 3 } as const;

export function auditExitCode(report: AuditReport): number {
	if (!report.ok) return AUDIT_EXIT.violations;
	return report.unsigned.records ? AUDIT_EXIT.unsigned : AUDIT_EXIT.passed;
}

/** Imports `snapshot` into temporary files, audits them and removes them. */
export async function auditSnapshot(
	snapshot: AuditSnapshot,
	options: AuditOptions = {},
): Promise<AuditReport> {
	return closeAfter(importSnapshot(snapshot), (db) => audit(db, options));
}
