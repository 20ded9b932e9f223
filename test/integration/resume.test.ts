/** Crash and resume: `npm start` killed hard mid-run, started again on the same DATA_DIR. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { storeFile } from "../../src/store/sqlite";
import { auditSystem, startSystem } from "../support/system";
import { runCli, startCli } from "../support/cli";
import { until } from "../support/cluster";

/** Signatures in the records store, read beside the process that writes it. */
function signaturesStored(dataDir: string): number {
	const file = storeFile(dataDir, "records");
	if (!fs.existsSync(file)) return 0;
	const db = new DatabaseSync(file, { readOnly: true });
	try {
		return Number(
			(db.prepare("SELECT count(*) AS n FROM signatures").get() as { n: number }).n,
		);
	} catch {
		return 0; // not created yet
	} finally {
		db.close();
	}
}

test("a run killed with SIGKILL mid-way resumes on the next start and finishes with the audit passing", async () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-resume-"));
	const env = { DATA_DIR: dataDir, RECORDS: "30000", KEYS: "10", BATCH_SIZE: "100" };
	try {
		const first = startCli("start.js", [], env);
		await until(
			"npm start to store 3,000 signatures",
			60_000,
			() => signaturesStored(dataDir) >= 3_000 || first.child.exitCode !== null,
			20,
		);
		first.child.kill("SIGKILL");
		const killed = await first.finished;
		expect(killed.signal).toBe("SIGKILL");
		const signedBeforeCrash = signaturesStored(dataDir);
		expect(signedBeforeCrash).toBeGreaterThan(0);
		expect(signedBeforeCrash).toBeLessThan(30_000);

		const second = await runCli("start.js", ["--batch-size", "250"], env);
		expect(second.stdout).toMatch(
			/Resuming interrupted run run-\S+ with its batch size 100 \(not 250/,
		);
		expect(second.stdout).toContain("Audit PASSED: 30000/30000 records signed, 0 violations");
		// Its time runs from the first start, the stop included, and the report says so.
		expect(second.stdout).toMatch(
			/time +[\d.]+ s, [\d,]+ records\/s since it started; it resumed at \S+Z after a stop, whose time counts/,
		);
		expect(second.code).toBe(0);

		// The stores themselves: one signature per record, one run, one batch size.
		const system = await startSystem({
			records: 30_000,
			keys: 10,
			dataDir,
			settings: { batcher: { resumeOnStart: false } },
		});
		try {
			expect(await system.broker.call("records.progress")).toEqual({
				records: 30_000,
				signed: 30_000,
			});
			const runs =
				await system.broker.call<Array<{ batchSize: number; status: string }>>(
					"batcher.runs",
				);
			expect(runs).toHaveLength(1);
			expect(runs[0]).toMatchObject({ batchSize: 100, status: "completed" });
			const verdict = await auditSystem(system.broker);
			expect(verdict.violations).toEqual([]);
		} finally {
			await system.broker.stop();
		}
	} finally {
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
});
