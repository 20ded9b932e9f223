/**
 * The audit of the transparency logs (docs/design.md §9.2, rules `signature-log` and
 * `lease-log`) after a real run on the embedded store: untouched, both logs pass; then rows are
 * tampered with in the store files as an intruder would (a signature altered, one deleted, one
 * added, two moved, a lease rewritten), and the audit names each against the last checkpoint,
 * from the store and from its export, and still with the stored checkpoints gone when a
 * checkpoint saved elsewhere is given. A rewritten log no longer matches its checkpoint, and a log
 * cut short of it is named with both readings (a cut, or an export older than it). One
 * record is checked offline from the export (src/audit/verify-record.ts).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { openStoreFiles } from "../../src/audit/audit-db";
import { exportDb, importExport, readExportLogKeys } from "../../src/audit/export-files";
import { proofFromExport, verifyProof } from "../../src/audit/verify-record";
import { audit, type AuditOptions, type AuditReport } from "../../src/audit/rules";
import { loadConfig } from "../../src/config";
import { logVerifierKeys } from "../../src/cli/store";
import { runToCompletion, startSystem } from "../support/system";
import { SqliteLog } from "../../src/tlog/sqlite-log";
import { CheckpointPublisher } from "../../src/tlog/publisher";
import { LOG_ORIGINS, loadLogKey } from "../../src/tlog/log-key";
import { leaseGrantLeaf } from "../../src/tlog/leaves";
import { transaction } from "../../src/store/sqlite";
import type { LeaseDoc } from "../../src/contract";

const RECORDS = 200;
const made: string[] = [];
function tempDir(): string {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "audit-logs-"));
	made.push(dir);
	return dir;
}
afterAll(() => {
	for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

/** A copy of `from`'s three store files in a new folder, to tamper with. */
function copyOfStores(from: string): string {
	const dir = tempDir();
	for (const name of ["records.sqlite", "batcher.sqlite", "keyring.sqlite"])
		fs.copyFileSync(path.join(from, name), path.join(dir, name));
	return dir;
}

/** The logs' verifier keys as an auditor holding DATA_DIR's key files gets them. */
const logKeys = (dataDir: string) => logVerifierKeys(loadConfig({ DATA_DIR: dataDir }));

async function auditStore(dataDir: string, options: AuditOptions): Promise<AuditReport> {
	const db = openStoreFiles(dataDir);
	try {
		return await audit(db, options);
	} finally {
		db.close();
	}
}

const messages = (report: AuditReport, rule: string) =>
	report.violations.filter((v) => v.rule === rule).map((v) => v.message);

describe("the audit of the transparency logs", () => {
	let dataDir: string;
	let options: AuditOptions;
	let leaseCount: number;

	beforeAll(async () => {
		dataDir = tempDir();
		const system = await startSystem({ records: RECORDS, keys: 3, batchSize: 20, dataDir });
		try {
			expect((await runToCompletion(system)).completion.status).toBe("completed");
			const leases = await system.broker.call<{ docs: unknown[] }, object>("keyring.page", {
				collection: "leases",
				limit: 1000,
			});
			leaseCount = leases.docs.length;
		} finally {
			// Stopping publishes the last checkpoints.
			await system.broker.stop();
		}
		options = { logKeys: logKeys(dataDir) };
	});

	test("an untouched store passes both log rules, every leaf under a checkpoint", async () => {
		const report = await auditStore(dataDir, options);
		expect(report.rules.filter((r) => !r.ok)).toEqual([]);
		// Both logs held and checked.
		expect(report.rules.filter((r) => r.checked === false)).toEqual([]);
		expect(report.logs).toEqual([
			expect.objectContaining({
				log: "signatures",
				size: RECORDS,
				checkpointSize: RECORDS,
				pending: 0,
			}),
			expect.objectContaining({
				log: "leases",
				size: 2 * leaseCount,
				checkpointSize: 2 * leaseCount,
				pending: 0,
			}),
		]);
	});

	test("a log cut short of its checkpoint is named, with both readings: a cut, or an older export", async () => {
		const cut = copyOfStores(dataDir);
		const records = new DatabaseSync(path.join(cut, "records.sqlite"));
		// The last five leaf hashes go, as an intruder trimming the log's end would.
		records.exec(
			"UPDATE signature_log_tiles SET hashes = substr(hashes, 1, length(hashes) - 5 * 32) WHERE tile = (SELECT max(tile) FROM signature_log_tiles)",
		);
		records.close();
		const report = await auditStore(cut, options);
		expect(report.ok).toBe(false);
		expect(messages(report, "signature-log")).toContainEqual(
			expect.stringMatching(
				new RegExp(
					`^The signatures log holds ${RECORDS - 5} leaves, fewer than its checkpoint of ${RECORDS} \\(.+\\): leaves ${RECORDS - 5} to ${RECORDS - 1} are missing, cut from its end, or this is an export taken before that checkpoint$`,
				),
			),
		);
	});

	test("a grant logged twice, even under a checkpoint signed with the log's own key, is named", async () => {
		// What a keyring that logged a grant again would leave: the entry names are not unique in
		// the table (src/tlog/sqlite-log.ts), so the audit must tell.
		const twice = tempDir();
		for (const name of fs.readdirSync(dataDir))
			if (fs.statSync(path.join(dataDir, name)).isFile())
				fs.copyFileSync(path.join(dataDir, name), path.join(twice, name));
		const keyring = new DatabaseSync(path.join(twice, "keyring.sqlite"));
		const entry = String(
			keyring.prepare("SELECT entry FROM lease_log_entries WHERE idx = 0").get()!.entry,
		);
		const lease = keyring
			.prepare("SELECT * FROM leases WHERE leaseId = ?")
			.get(entry.slice("grant:".length)) as unknown as LeaseDoc;
		const log = new SqliteLog(keyring, "lease_log", { entries: true });
		const index = transaction(keyring, () => log.append([leaseGrantLeaf(lease)], [entry]));
		const signer = loadLogKey({
			...loadConfig({ DATA_DIR: twice }).logKeys.leases,
			name: LOG_ORIGINS.leases,
		});
		await new CheckpointPublisher(log, signer, { everyMs: 0, warn: () => undefined }).publish();
		keyring.close();
		const report = await auditStore(twice, options);
		expect(messages(report, "lease-log")).toEqual([
			`The ${entry} is logged twice, at leaves 0 and ${index} of the leases log`,
		]);
		expect(report.logs[1]).toMatchObject({ size: index + 1, checkpointSize: index + 1 });
	});

	describe("after tampering with the store's rows", () => {
		let tampered: string;
		let savedCheckpoint: string;
		let deletedIndex: number;
		let leaseId: string;

		beforeAll(() => {
			tampered = tempDir();
			for (const name of fs.readdirSync(dataDir))
				if (
					!name.endsWith("-wal") &&
					!name.endsWith("-shm") &&
					fs.statSync(path.join(dataDir, name)).isFile()
				)
					fs.copyFileSync(path.join(dataDir, name), path.join(tampered, name));
			const records = new DatabaseSync(path.join(tampered, "records.sqlite"));
			savedCheckpoint = String(
				(
					records
						.prepare(
							"SELECT note FROM signature_log_checkpoints ORDER BY size DESC LIMIT 1",
						)
						.get() as { note: string }
				).note,
			);
			records.exec(`UPDATE signatures SET jws = jws || 'x' WHERE recordId = 'rec-000010'`);
			deletedIndex = Number(
				(
					records
						.prepare("SELECT logIndex FROM signatures WHERE recordId = 'rec-000020'")
						.get() as { logIndex: number }
				).logIndex,
			);
			records.exec(`DELETE FROM signatures WHERE recordId = 'rec-000020'`);
			records.exec(`INSERT INTO records (id, data) VALUES ('rec-999999', 'AAAA')`);
			records.exec(
				`INSERT INTO signatures (recordId, keyId, batchId, leaseId, jws, signedAt) SELECT 'rec-999999', keyId, batchId, leaseId, jws, signedAt FROM signatures WHERE recordId = 'rec-000030'`,
			);
			// Two rows trade places in the log.
			const indexOf = (id: string) =>
				Number(
					(
						records
							.prepare("SELECT logIndex FROM signatures WHERE recordId = ?")
							.get(id) as { logIndex: number }
					).logIndex,
				);
			const [a, b] = [indexOf("rec-000040"), indexOf("rec-000050")];
			const move = records.prepare("UPDATE signatures SET logIndex = ? WHERE recordId = ?");
			move.run(b, "rec-000040");
			move.run(a, "rec-000050");
			records.close();
			const keyring = new DatabaseSync(path.join(tampered, "keyring.sqlite"));
			leaseId = String(
				(
					keyring
						.prepare("SELECT leaseId FROM leases ORDER BY grantSeq LIMIT 1 OFFSET 2")
						.get() as { leaseId: string }
				).leaseId,
			);
			keyring.prepare("UPDATE leases SET holder = 'intruder' WHERE leaseId = ?").run(leaseId);
			keyring.close();
		});

		/** What the audit must name, whatever the source. */
		const expectEachNamed = (report: AuditReport) => {
			const signatures = messages(report, "signature-log");
			expect(signatures).toEqual(
				expect.arrayContaining([
					expect.stringMatching(/signature of rec-000010 is not leaf \d+ .*altered/),
					expect.stringContaining(
						`Leaf ${deletedIndex} of the signatures log (in its checkpoint of ${RECORDS}) has no row`,
					),
					expect.stringMatching(/signature of rec-999999 is in no leaf .*added/),
					expect.stringMatching(
						/signature of rec-000040 is leaf \d+ .* but claims leaf \d+: it was moved/,
					),
					expect.stringMatching(
						/signature of rec-000050 is leaf \d+ .* but claims leaf \d+: it was moved/,
					),
				]),
			);
			expect(signatures).toHaveLength(5);
			expect(messages(report, "lease-log")).toEqual([
				expect.stringMatching(
					new RegExp(
						`grant:${leaseId} is not leaf \\d+ of the leases log any more: its row was altered`,
					),
				),
			]);
		};

		test("the store's audit names the altered, deleted, added and moved signatures and the rewritten lease", async () => {
			const report = await auditStore(tampered, options);
			expect(report.ok).toBe(false);
			expectEachNamed(report);
		});

		test("the audit of its export names the same, with the keys and checkpoints the export carries", async () => {
			const out = tempDir();
			const source = openStoreFiles(tampered);
			let counts;
			try {
				counts = await exportDb(source, out, logKeys(dataDir));
			} finally {
				source.close();
			}
			expect(counts).toMatchObject({ signatureLog: RECORDS, leaseLog: 2 * leaseCount });
			expect(counts.checkpoints).toBeGreaterThanOrEqual(2);
			const keys = await readExportLogKeys(out);
			expect(keys).toEqual(options.logKeys);
			const first = JSON.parse(
				fs.readFileSync(path.join(out, "lease-log.jsonl"), "utf8").split("\n")[0],
			);
			expect(first).toEqual({
				index: 0,
				entry: expect.stringMatching(/^grant:/),
				hash: expect.any(String),
			});
			const db = await importExport(out);
			try {
				const report = await audit(db, { logKeys: keys });
				expectEachNamed(report);
				expect(report.logs.map((l) => l.checkpointSize)).toEqual([RECORDS, 2 * leaseCount]);
				// One record checked offline from the export: an untouched one holds, the altered one does not.
				const key = keys.signatures!;
				const intact = verifyProof(await proofFromExport(db, "rec-000011", key), key);
				expect(intact).toMatchObject({ ok: true });
				expect(intact.message).toMatch(/under the checkpoint of 200 leaves/);
				const altered = verifyProof(await proofFromExport(db, "rec-000010", key), key);
				expect(altered).toMatchObject({ ok: false });
				expect(altered.message).toMatch(
					/is not leaf \d+ of the log under the checkpoint of 200/,
				);
				// Against a checkpoint kept elsewhere, too.
				expect(
					verifyProof(await proofFromExport(db, "rec-000011", key, savedCheckpoint), key)
						.ok,
				).toBe(true);
			} finally {
				db.close();
			}
		});

		test("with the stored checkpoints deleted too, a checkpoint saved elsewhere still names each", async () => {
			const records = new DatabaseSync(path.join(tampered, "records.sqlite"));
			records.exec("DELETE FROM signature_log_checkpoints");
			records.close();
			const withoutSaved = await auditStore(tampered, options);
			// Nothing signed vouches for the log: nothing is judged against it.
			expect(withoutSaved.logs[0]).toMatchObject({ checkpointSize: 0, pending: RECORDS });
			const report = await auditStore(tampered, {
				...options,
				checkpoints: [savedCheckpoint],
			});
			expectEachNamed(report);
		});

		test("a log whose hashes were rewritten no longer matches its checkpoint", async () => {
			const rewritten = copyOfStores(tampered);
			const records = new DatabaseSync(path.join(rewritten, "records.sqlite"));
			records.exec(
				"UPDATE signature_log_tiles SET hashes = zeroblob(length(hashes)) WHERE tile = 3",
			);
			records.close();
			const report = await auditStore(rewritten, {
				...options,
				checkpoints: [savedCheckpoint],
			});
			expect(messages(report, "signature-log")).toContainEqual(
				`The signatures log's first ${RECORDS} leaves do not hash to the root of its checkpoint of ${RECORDS} (given): the log itself was rewritten`,
			);
		});
	});
});
