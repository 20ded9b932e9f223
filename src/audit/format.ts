/** The audit report as operators read it on a terminal: counts, a verdict per rule, each violation. */
import type { AuditReport } from "./rules";

export const plural = (n: number, word: string, words = `${word}s`) =>
	`${n} ${n === 1 ? word : words}`;

export function formatReport(report: AuditReport, source: string): string {
	const { checked } = report;
	const lines = [
		`Audit of ${source}`,
		`  ${plural(checked.records, "record")}, ${plural(checked.signatures, "signature")}, ${plural(checked.batches, "batch", "batches")}, ` +
			`${plural(checked.leases, "lease")}, ${plural(checked.keys, "key")}, ${plural(checked.runs, "run")}`,
	];
	for (const log of report.logs)
		lines.push(
			`  the ${log.log} log: ${plural(log.size, "leaf", "leaves")}, ${plural(log.checkpoints, "checkpoint")}, the last verified of ${log.checkpointSize}` +
				(log.pending
					? ` (${plural(log.pending, "leaf", "leaves")} after it, not yet checkpointed)`
					: ""),
		);
	if (report.pending)
		lines.push(
			`  ${plural(report.pending, "record")} pending: unsigned, waiting for the follow run that is running`,
		);
	for (const rule of report.rules) {
		if (rule.checked === false && rule.ok) {
			lines.push(
				`NOT CHECKED ${rule.rule}: this source holds no such log (an audit over NATS reads rows only: audit the store files, MongoDB or an export to check it)`,
			);
			continue;
		}
		lines.push(
			`${rule.ok ? "PASS" : "FAIL"} ${rule.rule}${rule.ok ? "" : ` (${plural(rule.violations, "violation")})`}`,
		);
		for (const violation of report.violations)
			if (violation.rule === rule.rule) lines.push(`  - ${violation.message}`);
		if (rule.violations > rule.listed)
			lines.push(`  ... and ${rule.violations - rule.listed} more`);
	}
	for (const key of report.endedKeys)
		lines.push(
			key.event === "revoked"
				? `Key ${key.keyId} revoked at ${key.at} (seq ${key.seq})${key.reason ? `: ${key.reason}` : ""}; refuse its signatures made after that${key.signedAfter ? `. WARNING: ${plural(key.signedAfter, "signature")} of it ${key.signedAfter === 1 ? "was" : "were"} made after that, by a lease it held when revoked; a verifier refuses them, so their records have no signature a verifier accepts (one signature per record: they are not signed again)` : ""}`
				: `Key ${key.keyId} retired at ${key.at} (seq ${key.seq}, ${key.reason ?? "operator"}); its signatures stand`,
		);
	const { unsigned } = report;
	if (unsigned.records)
		lines.push(
			`UNSIGNED ${plural(unsigned.records, "record")}: ${unsigned.run ? `run ${unsigned.run.runId} is ${unsigned.run.status}` : "no run has started"}, so they are work not done yet, not violations`,
		);
	const unchecked = report.rules.filter((r) => r.checked === false).map((r) => r.rule);
	lines.push(
		report.ok
			? `Audit PASSED: every rule holds${unchecked.length ? ` but ${unchecked.join(" and ")}, not checked here` : ""}${unsigned.records ? `; ${plural(unsigned.records, "record")} not signed yet` : ""}`
			: `Audit FAILED: ${plural(report.violationCount, "violation")} of ${report.rules
					.filter((r) => !r.ok)
					.map((r) => r.rule)
					.join(", ")}`,
	);
	return lines.join("\n") + "\n";
}
