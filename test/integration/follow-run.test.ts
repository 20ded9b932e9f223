/**
 * Follow runs end to end (docs/design.md §7.7), on real services, a real gateway and the
 * embedded store in files: started over HTTP with `follow: true`, fed with POST /api/records,
 * each record signed within LINGER_MS and a little; the batch records say which batches
 * lingered; the audit counts waiting records as pending; a restarted long-running node resumes
 * the run; `npm start` ends an interrupted one, says so, and signs what waits as its own run.
 */
import fs from "node:fs";
import { loadConfig } from "../../src/config";
import { logVerifierKeys } from "../../src/cli/store";
import os from "node:os";
import path from "node:path";
import { closeAfter, openStoreFiles } from "../../src/audit/audit-db";
import { audit } from "../../src/audit/rules";
import type { BatchDoc } from "../../src/contract";
import { runCli } from "../support/cli";
import { request, startApiSystem, waitFor, type ApiSystem } from "../support/http";

/** The audit of the store files, its logs' checkpoints opened with the keys the nodes made there. */
const auditFiles = (dataDir: string) =>
	closeAfter(openStoreFiles(dataDir), (db) =>
		audit(db, { logKeys: logVerifierKeys(loadConfig({ DATA_DIR: dataDir })) }),
	);

describe("a follow run", () => {
	let dataDir: string;
	let system: ApiSystem | null = null;
	let token: string;

	beforeAll(() => {
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "follow-run-"));
	});
	afterAll(async () => {
		await system?.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	});

	const start = (env: Record<string, string> = {}) =>
		startApiSystem({
			records: 120,
			keys: 4,
			batchSize: 50,
			dataDir,
			env,
			api: { startRateLimit: { window: 60_000, limit: 100 } },
		});
	const submit = (records: Array<{ id: string; data: string }>) =>
		request(system!.baseUrl, "POST", "/api/records", { body: { records }, token });
	const signatureOf = async (id: string) =>
		(await request(system!.baseUrl, "GET", `/api/records/${id}`)).body.signature;
	const batches = async () =>
		(
			await system!.broker.call<{ docs: BatchDoc[] }, object>("batcher.page", {
				collection: "batches",
				limit: 1000,
			})
		).docs;

	test("started over HTTP, it signs the store, then each record submitted within LINGER_MS and a little; full batches have the run's size, smaller ones say they lingered", async () => {
		system = await start();
		token = await system.token("runs:write records:write");
		const started = await request(system.baseUrl, "POST", "/api/batcher/start", {
			body: { batchSize: 50, follow: true },
			token,
		});
		expect(started.status).toBe(202);
		expect(started.body).toMatchObject({ follow: true, batchSize: 50, status: "running" });
		const runId = started.body.runId as string;
		await waitFor(
			"the 120 seeded records signed",
			async () =>
				(await system!.broker.call<{ signed: number }>("records.progress")).signed === 120,
		);

		// One record at a time: each is signed LINGER_MS (200) after it arrived, and a little.
		const lags: number[] = [];
		for (let i = 0; i < 5; i++) {
			const sentAt = Date.now();
			expect((await submit([{ id: `one-${i}`, data: `payload ${i}` }])).status).toBe(202);
			await waitFor(`one-${i} signed`, () => signatureOf(`one-${i}`), 5_000, 5);
			lags.push(Date.now() - sentAt);
		}
		expect(Math.max(...lags)).toBeLessThan(200 + 300);
		expect(Math.min(...lags)).toBeGreaterThanOrEqual(190);

		// A full batch's worth goes at once, without lingering.
		const sentAt = Date.now();
		const fifty = Array.from({ length: 50 }, (_, i) => ({ id: `full-${i}`, data: "x" }));
		expect((await submit(fifty)).status).toBe(202);
		await waitFor("the 50 signed", () => signatureOf("full-49"), 5_000, 5);
		expect(Date.now() - sentAt).toBeLessThan(200);

		const ofRun = (await batches()).filter((b) => b.runId === runId);
		expect(ofRun.every((b) => b.recordIds.length <= 50)).toBe(true);
		for (const batch of ofRun)
			expect([batch.recordIds.length, batch.short]).toEqual(
				batch.recordIds.length === 50 ? [50, null] : [batch.recordIds.length, "lingered"],
			);
		expect(ofRun.filter((b) => b.short === "lingered").length).toBeGreaterThanOrEqual(6);

		// The run goes on: status says so, and the audit passes over the stores.
		const status = await request(system.baseUrl, "GET", "/api/batcher/status");
		expect(status.body).toMatchObject({ active: true, run: { runId, follow: true } });
		const verdict = await auditFiles(dataDir);
		expect(verdict.violations).toEqual([]);
		expect(verdict.pending).toBe(0);
	}, 60_000);

	test("while it runs, another start is 409 RUN_ACTIVE", async () => {
		const second = await request(system!.baseUrl, "POST", "/api/batcher/start", {
			body: { batchSize: 50 },
			token,
		});
		expect(second.status).toBe(409);
		expect(second.body.type).toBe("RUN_ACTIVE");
	});

	test("a restarted long-running node resumes it; records waiting are pending for the audit, not unsigned work left undone", async () => {
		const { runId } = (await request(system!.baseUrl, "GET", "/api/batcher/status")).body
			.run as { runId: string };
		await system!.stop();
		// Records linger a minute now: they wait while the audit looks.
		system = await start({ LINGER_MS: "60000" });
		const status = await request(system.baseUrl, "GET", "/api/batcher/status");
		expect(status.body).toMatchObject({ active: true, run: { runId, follow: true } });

		expect(
			(
				await submit([
					{ id: "waits-1", data: "a" },
					{ id: "waits-2", data: "b" },
				])
			).status,
		).toBe(202);
		const verdict = await auditFiles(dataDir);
		expect(verdict.violations).toEqual([]);
		expect(verdict).toMatchObject({ ok: true, pending: 2 });
		expect(await signatureOf("waits-1")).toBeNull();
		await system.stop();
		system = null;
	}, 60_000);

	test("npm start finds it interrupted, says so, ends it and signs what waits as its own run", async () => {
		const job = await runCli("start.js", [], {
			DATA_DIR: dataDir,
			RECORDS: "120",
			KEYS: "4",
			BATCH_SIZE: "50",
		});
		expect(job.stdout).toMatch(
			/Follow run run-\S+ was interrupted: npm start never follows, so it ended it \(cancelled\)/,
		);
		expect(job.stdout).toContain("Audit PASSED: 177/177 records signed, 0 violations");
		expect(job.code).toBe(0);

		system = await start({ LINGER_MS: "60000" });
		const runs = (await request(system.baseUrl, "GET", "/api/runs")).body as Array<{
			status: string;
			follow?: boolean;
		}>;
		expect(runs.map((r) => [r.status, Boolean(r.follow)])).toEqual([
			["completed", false],
			["cancelled", true],
		]);
		expect((await request(system.baseUrl, "GET", "/api/batcher/status")).body.active).toBe(
			false,
		);
	}, 120_000);
});
