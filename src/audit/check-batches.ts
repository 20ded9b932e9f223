/**
 * Rules "one-key-per-batch" and "batch-size" in one pass: batches in batchId order merged with
 * signatures in (batchId, recordId) order, so one batch's signatures are in memory at a time.
 *
 * A batch that has ended must tell the truth about its signatures: it names their one key and
 * lease (a batch with signatures and no key is a finding, whatever the reason), and its status
 * matches them: `failed` has none under it, `partial` some but not all, and it claims no more
 * stored signatures than stand under it (a batch counted from a signer's word, not from the
 * store). (A `signed` batch's records may carry earlier batches' signatures; a record with none
 * is rule 1's finding.)
 * A batch still `pending` is in flight (its key not known yet to the batcher), which only a run
 * still running may have.
 */
import { compareSql, yieldToEventLoop, type AuditDb } from "./audit-db";
import { FindingList, type RuleName } from "./checks";

interface BatchRow {
	batchId: string;
	runId: string;
	keyId: string | null;
	leaseId: string | null;
	recordIds: unknown;
	status: unknown;
	/** Signatures the batch record says it stored; null in stores and exports from before it was kept. */
	stored: unknown;
	/** Why it is smaller than its run's batch size (docs/design.md §7.7); null when full, or in stores from before it was kept. */
	short: unknown;
}

/** [batchId, recordId, keyId, leaseId] */
type SignatureRow = [unknown, string, string, string];

/** Each run's batch sizes: one, unless the store is broken. */
export type RunSizes = Map<string, Set<number>>;

/** What the batch pass needs of the runs: their sizes, which are still running, and which follow. */
export interface RunFacts {
	sizes: RunSizes;
	running: Set<string>;
	/** The last run started, if any: while it has not completed, unsigned records are its unfinished work. */
	latest: { runId: string; status: string } | null;
	follow: Set<string>;
}

/** The columns of `table` (`bat.runs`): a store from an earlier version lacks the newer ones. */
function columnsOf(db: AuditDb, schema: string, table: string): Set<string> {
	return new Set(
		(
			db.sql.prepare(`PRAGMA ${schema}.table_info(${table})`).all() as Array<{ name: string }>
		).map((c) => c.name),
	);
}

/** The run half of rule "batch-size": one valid batch size per run, one document per run. */
export function checkRuns(db: AuditDb, findings: FindingList): RunFacts & { count: number } {
	const rule: RuleName = "batch-size";
	const sizes: RunSizes = new Map();
	const running = new Set<string>();
	const follow = new Set<string>();
	const docs = new Map<string, number>();
	let latest: (RunFacts["latest"] & { startedAt: string }) | null = null;
	const followColumn = columnsOf(db, "bat", "runs").has("follow") ? "follow" : "NULL AS follow";
	for (const run of db.sql
		.prepare(
			`SELECT runId, batchSize, status, startedAt, ${followColumn} FROM bat.runs ORDER BY rowid`,
		)
		.iterate()) {
		const runId = run.runId as string;
		const startedAt = String(run.startedAt);
		if (!latest || startedAt >= latest.startedAt)
			latest = { runId, status: String(run.status), startedAt };
		const batchSize = run.batchSize as number;
		if (run.status === "running") running.add(runId);
		// 1 in the store, "true" (its JSON) in an import.
		if (run.follow === 1 || run.follow === "true") follow.add(runId);
		if (!Number.isInteger(batchSize) || batchSize < 1)
			findings.add(
				rule,
				`run ${runId} has an invalid batch size ${JSON.stringify(batchSize)}`,
				{ runId },
			);
		docs.set(runId, (docs.get(runId) ?? 0) + 1);
		const set = sizes.get(runId);
		if (set) set.add(batchSize);
		else sizes.set(runId, new Set([batchSize]));
	}
	for (const [runId, set] of sizes) {
		if (set.size > 1)
			findings.add(
				rule,
				`run ${runId} has ${set.size} batch sizes: ${[...set].sort((a, b) => a - b).join(", ")}`,
				{ runId },
			);
		else if (docs.get(runId)! > 1)
			findings.add(rule, `run ${runId} is stored ${docs.get(runId)} times`, { runId });
	}
	return {
		sizes,
		running,
		latest: latest && { runId: latest.runId, status: latest.status },
		follow,
		count: [...docs.values()].reduce((sum, n) => sum + n, 0),
	};
}

// ---------------------------------------------------------------- the pass

function parseRecordIds(recordIds: unknown): string[] | null {
	try {
		const parsed = typeof recordIds === "string" ? JSON.parse(recordIds) : null;
		return Array.isArray(parsed) ? parsed : null;
	} catch {
		return null;
	}
}

/** Checks every batch against its run and its signatures; returns how many batch documents it read. */
export async function checkBatches(
	db: AuditDb,
	runs: RunFacts,
	findings: FindingList,
): Promise<number> {
	const rule: RuleName = "one-key-per-batch";
	const imported = db.kind === "import";
	const shortColumn = columnsOf(db, "bat", "batches").has("short") ? "short" : "NULL AS short";
	const batches = db.sql
		.prepare(
			`SELECT batchId, runId, keyId, leaseId, recordIds, status, stored, ${shortColumn} FROM bat.batches ORDER BY batchId${imported ? ", rowid" : ""}`,
		)
		.iterate() as Iterator<BatchRow>;
	const signatureQuery = db.sql.prepare(
		`SELECT batchId, recordId, keyId, leaseId FROM rec.signatures ORDER BY batchId, recordId${imported ? ", rowid" : ""}`,
	);
	signatureQuery.setReturnArrays(true);
	const signatures = signatureQuery.iterate() as Iterator<SignatureRow>;
	const leaseKey = db.sql.prepare(
		`SELECT leaseId, keyId FROM kr.leases WHERE leaseId = ?${imported ? " ORDER BY rowid LIMIT 1" : ""}`,
	);

	let rows = 0;
	const unknownBatch = ([batchId, recordId]: SignatureRow) =>
		findings.add(rule, `signature of record ${recordId} names unknown batch ${batchId}`, {
			recordId,
			batchId: String(batchId),
		});

	let count = 0;
	let previous: string | null = null;
	let signature = signatures.next();
	try {
		for (let batch = batches.next(); !batch.done; batch = batches.next()) {
			const doc = batch.value;
			const { batchId } = doc;
			count++;
			const recordIds = parseRecordIds(doc.recordIds);
			checkBatchSize(doc, recordIds, runs, findings);
			// A batch id with two documents could carry two keys: rule 3 needs it unique.
			if (batchId === previous) {
				findings.add(rule, `batch ${batchId} is stored twice`, { batchId });
				continue;
			}
			previous = batchId;
			for (
				;
				!signature.done && compareSql(signature.value[0], batchId) < 0;
				signature = signatures.next()
			)
				unknownBatch(signature.value);

			const lease =
				doc.leaseId != null
					? (leaseKey.get(doc.leaseId) as { leaseId: string; keyId: string } | undefined)
					: undefined;
			if (lease && doc.keyId != null && lease.keyId !== doc.keyId)
				findings.add(
					rule,
					`batch ${batchId} records key ${doc.keyId} and lease ${lease.leaseId}, which is a lease of key ${lease.keyId}`,
					{ batchId, leaseId: lease.leaseId },
				);

			let members: Set<string> | null = null;
			const keyIds = new Set<string>();
			const leaseIds = new Set<string>();
			let under = 0;
			for (
				;
				!signature.done && signature.value[0] === batchId;
				signature = signatures.next()
			) {
				const [, recordId, keyId, leaseId] = signature.value;
				members ??= new Set(recordIds ?? []);
				if (!members.has(recordId))
					findings.add(
						rule,
						`signature of record ${recordId} names batch ${batchId}, which does not contain that record`,
						{ recordId, batchId },
					);
				keyIds.add(keyId);
				leaseIds.add(leaseId);
				under++;
				if (++rows % 4096 === 0) await yieldToEventLoop();
			}
			const pending = doc.status === "pending";
			if (keyIds.size) checkBatchSignatures(doc, keyIds, leaseIds, pending, findings);
			if (pending) {
				if (!runs.running.has(doc.runId))
					findings.add(
						rule,
						`batch ${batchId} is still pending, but its run ${doc.runId} is not running`,
						{ batchId, runId: doc.runId },
					);
			} else checkBatchStatus(doc, recordIds?.length ?? 0, under, findings);
		}
		for (; !signature.done; signature = signatures.next()) unknownBatch(signature.value);
	} finally {
		batches.return?.();
		signatures.return?.();
	}
	return count;
}

/**
 * What a batch's signatures used against what the batch recorded: one key and one lease, the
 * ones it names. A pending batch has not learnt them yet: only its signatures' own agreement counts.
 */
function checkBatchSignatures(
	batch: BatchRow,
	keyIds: Set<string>,
	leaseIds: Set<string>,
	pending: boolean,
	findings: FindingList,
): void {
	const rule: RuleName = "one-key-per-batch";
	const { batchId } = batch;
	const used = [
		{ noun: "key", field: "keyId", made: "with", ids: keyIds, recorded: batch.keyId },
		{ noun: "lease", field: "leaseId", made: "under", ids: leaseIds, recorded: batch.leaseId },
	] as const;
	for (const { noun, field, made, ids } of used)
		if (ids.size > 1)
			findings.add(
				rule,
				`batch ${batchId} has signatures made ${made} ${ids.size} ${noun}s: ${[...ids].sort().join(", ")}`,
				{ batchId, [`${field}s`]: [...ids].sort().join(",") },
			);
	if (pending) return;
	for (const { noun, field, ids, recorded } of used) {
		const others = [...ids].filter((id) => id !== recorded).sort();
		if (others.length)
			findings.add(
				rule,
				recorded == null
					? `batch ${batchId} records no ${noun} but its signatures use ${others.join(", ")}`
					: `batch ${batchId} records ${noun} ${recorded} but its signatures use ${others.join(", ")}`,
				{ batchId, [field]: String(recorded) },
			);
	}
}

/** An ended batch's status against its signatures: `failed` none under it, `partial` some but not all. */
function checkBatchStatus(
	batch: BatchRow,
	size: number,
	under: number,
	findings: FindingList,
): void {
	const rule: RuleName = "one-key-per-batch";
	const { batchId, status } = batch;
	const says = (truth: string) =>
		findings.add(rule, `batch ${batchId} is recorded ${JSON.stringify(status)} but ${truth}`, {
			batchId,
			status: String(status),
		});
	if (typeof batch.stored === "number" && batch.stored > under)
		findings.add(
			rule,
			`batch ${batchId} claims ${batch.stored} stored signatures but ${under} stand under it`,
			{ batchId, stored: String(batch.stored) },
		);
	if (status === "failed" || status === "abandoned") {
		if (under > 0) says(`${under} of its ${size} records are signed under it`);
	} else if (status === "partial") {
		if (under === 0) says("none of its records is signed under it");
		else if (under >= size) says(`all ${size} of its records are signed under it`);
	} else if (status !== "signed") says("that is not a status a batch can have");
}

/** Why a batch may be smaller than its run's batch size (docs/design.md §7.7). */
const SHORT_REASONS = new Set(["lingered", "last", "retry"]);

/**
 * The batch half of rule "batch-size": no batch larger than its run's batch size; in a follow
 * run, none smaller unless it says why (it lingered, ended the records, or retries a failed
 * batch's), and none that says so while full.
 */
function checkBatchSize(
	batch: BatchRow,
	recordIds: string[] | null,
	runs: RunFacts,
	findings: FindingList,
): void {
	const rule: RuleName = "batch-size";
	const sizes = runs.sizes.get(batch.runId);
	if (!sizes)
		return findings.add(rule, `batch ${batch.batchId} names unknown run ${batch.runId}`, {
			batchId: batch.batchId,
			runId: batch.runId,
		});
	const batchSize = Math.min(...sizes);
	const size = recordIds ? recordIds.length : NaN;
	if (!(size <= batchSize))
		findings.add(
			rule,
			`batch ${batch.batchId} has ${size} records, more than run ${batch.runId}'s batch size ${batchSize}`,
			{ batchId: batch.batchId, runId: batch.runId },
		);
	else if (
		runs.follow.has(batch.runId) &&
		size < batchSize &&
		!SHORT_REASONS.has(String(batch.short))
	)
		findings.add(
			rule,
			`batch ${batch.batchId} of follow run ${batch.runId} has ${size} records, fewer than its batch size ${batchSize}, and does not say it lingered (short: ${JSON.stringify(batch.short)})`,
			{ batchId: batch.batchId, runId: batch.runId },
		);
	else if (size === batchSize && batch.short != null)
		findings.add(
			rule,
			`batch ${batch.batchId} is full (${size} records) but says it is short (${JSON.stringify(batch.short)})`,
			{ batchId: batch.batchId, runId: batch.runId },
		);
}
