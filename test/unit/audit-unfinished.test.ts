/**
 * The audit tells a broken rule from unfinished work (docs/design.md §9.2, §9.3): while the last
 * run is running, or once it was cancelled, the records it has not signed are counted as
 * unsigned, not listed as one-signature-per-record violations; after a completed run, a record
 * with no signature is a violation again (test/unit/audit-store.test.ts adds a record after
 * completed runs). A real system with no signer holds its run open.
 */
import { auditExitCode, AUDIT_EXIT, type AuditReport } from "../../src/audit/rules";
import { formatReport } from "../../src/audit/format";
import { waitFor } from "../support/http";
import { auditSystem, startSystem, type TestSystem } from "../support/system";

const RECORDS = 120;

describe("unsigned records of a run that has not completed", () => {
	let system: TestSystem;
	beforeAll(async () => {
		// No signer: the run stays running, every record unsigned, until it is cancelled.
		system = await startSystem({
			records: RECORDS,
			keys: 2,
			batchSize: 10,
			services: ["records", "keyring", "batcher", "metrics"],
		});
	});
	afterAll(() => system?.broker.stop());

	const expectUnfinished = (report: AuditReport, runId: string, status: string) => {
		expect(report.rules.find((r) => r.rule === "one-signature-per-record")).toMatchObject({
			ok: true,
			violations: 0,
		});
		expect(report.unsigned).toEqual({ records: RECORDS, run: { runId, status } });
		expect(auditExitCode(report)).toBe(report.ok ? AUDIT_EXIT.unsigned : AUDIT_EXIT.violations);
		expect(formatReport(report, "test")).toContain(
			`UNSIGNED ${RECORDS} records: run ${runId} is ${status}, so they are work not done yet, not violations`,
		);
	};

	test("before any run, and while one runs, unsigned records are work left, with exit code 3", async () => {
		const before = await auditSystem(system.broker);
		expect(before.ok).toBe(true);
		expect(before.unsigned).toEqual({ records: RECORDS, run: null });
		expect(auditExitCode(before)).toBe(AUDIT_EXIT.unsigned);

		const run = await system.broker.call<{ runId: string }, object>("batcher.start", {});
		const report = await auditSystem(system.broker);
		expectUnfinished(report, run.runId, "running");
		expect(report.ok).toBe(true);
	});

	test("once the run is cancelled, the same records are still unsigned, not violations", async () => {
		const { run } = await system.broker.call<{ run: { runId: string } }>("batcher.status");
		await system.broker.call("batcher.cancel", { runId: run.runId });
		await waitFor("the run cancelled", async () => {
			const status = await system.broker.call<{ run: { status: string } }>("batcher.status");
			return status.run.status === "cancelled";
		});
		const report = await auditSystem(system.broker);
		expectUnfinished(report, run.runId, "cancelled");
		expect(report.violations).toEqual([]);
	});
});
