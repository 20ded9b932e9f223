/**
 * The audit of the embedded store's own files, written here with the real schema of
 * src/store/schema.ts: read in place and read-only, each rule's violation found, nothing
 * created or changed in the store, and its export round-trips.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { DatabaseSync } from "node:sqlite";
import { openStoreFiles, StoreFilesError } from "../../src/audit/audit-db";
import { exportDb, readExport } from "../../src/audit/export-files";
import type { AuditReport, RuleName } from "../../src/audit/rules";
import type { AuditSnapshot } from "../../src/audit/snapshot";
import { KEY_LIFECYCLE_COLUMNS } from "../../src/store/schema";
import {
	auditStoreFiles,
	buildMiniRun,
	openStoreFile,
	SEALED,
	writeStoreFiles,
} from "../support/audit-fixture";

const failing = (report: AuditReport): RuleName[] =>
	report.rules.filter((r) => !r.ok).map((r) => r.rule);
const messages = (report: AuditReport, rule: RuleName): string[] =>
	report.violations.filter((v) => v.rule === rule).map((v) => v.message);

let snapshot: AuditSnapshot;
let dataDir: string;

beforeAll(async () => {
	snapshot = (await buildMiniRun()).snapshot;
});
beforeEach(() => {
	dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "audit-store-"));
	writeStoreFiles(snapshot, dataDir);
});
afterEach(() => {
	fs.rmSync(dataDir, { recursive: true, force: true });
});

const auditStore = (options: Parameters<typeof auditStoreFiles>[1] = {}) =>
	auditStoreFiles(dataDir, options);

/** Changes the store as its owner could (or a bug in it would): through its own file. */
function change(
	owner: "records" | "batcher" | "keyring",
	sql: string,
	...params: Array<string | number | null>
): void {
	const db: DatabaseSync = openStoreFile(dataDir, owner);
	try {
		db.prepare(sql).run(...params);
	} finally {
		db.close();
	}
}

const fileHashes = () =>
	Object.fromEntries(
		fs
			.readdirSync(dataDir)
			.filter((f) => f.endsWith(".sqlite"))
			.map((f) => [
				f,
				createHash("sha256")
					.update(fs.readFileSync(path.join(dataDir, f)))
					.digest("hex"),
			]),
	);

describe("the store's own files", () => {
	it("pass every rule, read in place without changing a byte", async () => {
		const before = fileHashes();
		const report = await auditStore();
		expect(report.violations).toEqual([]);
		expect(report.ok).toBe(true);
		expect(report.checked).toEqual({
			records: 15,
			signatures: 15,
			batches: 6,
			leases: 6,
			keys: 3,
			runs: 2,
		});
		expect(fileHashes()).toEqual(before);
	});

	it("are read while their owner holds them open and keeps writing", async () => {
		const owner = openStoreFile(dataDir, "records");
		try {
			owner.prepare("INSERT INTO records (id, data) VALUES (?, ?)").run("r-9999", "late");
			const report = await auditStore();
			expect(report.violations).toEqual([
				{
					rule: "one-signature-per-record",
					message: "record r-9999 has no signature",
					ids: { recordId: "r-9999" },
				},
			]);
		} finally {
			owner.close();
		}
	});

	it("are refused when missing, naming what is missing and what to run, and nothing is created", () => {
		const empty = fs.mkdtempSync(path.join(os.tmpdir(), "audit-empty-"));
		try {
			expect(() => openStoreFiles(empty)).toThrow(StoreFilesError);
			expect(() => openStoreFiles(empty)).toThrow(
				/missing records\.sqlite, batcher\.sqlite, keyring\.sqlite\): run npm start first, or pass --data-dir/,
			);
			fs.rmSync(path.join(dataDir, "batcher.sqlite"));
			expect(() => openStoreFiles(dataDir)).toThrow(
				/^No embedded store in .* \(missing batcher\.sqlite\)/,
			);
			expect(fs.readdirSync(empty)).toEqual([]);
			expect(fs.existsSync(path.join(dataDir, "batcher.sqlite"))).toBe(false);
		} finally {
			fs.rmSync(empty, { recursive: true, force: true });
		}
	});

	it("are refused when a file is not that owner's store", () => {
		fs.renameSync(path.join(dataDir, "records.sqlite"), path.join(dataDir, "elsewhere.sqlite"));
		fs.copyFileSync(path.join(dataDir, "batcher.sqlite"), path.join(dataDir, "records.sqlite"));
		expect(() => openStoreFiles(dataDir)).toThrow(
			/records\.sqlite is not the records store: it has no table records, signatures/,
		);
	});

	it("refuse every write through the audit's connection", () => {
		const db = openStoreFiles(dataDir);
		try {
			expect(() => db.sql.exec("DELETE FROM rec.signatures")).toThrow(/readonly/);
		} finally {
			db.close();
		}
	});

	it("export exactly the snapshot they hold, public data only", async () => {
		const out = path.join(dataDir, "export");
		const db = openStoreFiles(dataDir);
		try {
			expect(await exportDb(db, out)).toEqual({
				dir: out,
				records: 15,
				signatures: 15,
				batches: 6,
				leases: 6,
				keys: 3,
				runs: 2,
				// The fixture's store keeps no transparency log.
				signatureLog: 0,
				leaseLog: 0,
				checkpoints: 0,
			});
		} finally {
			db.close();
		}
		expect(await readExport(out)).toEqual(snapshot);
		for (const file of fs.readdirSync(out))
			expect(fs.readFileSync(path.join(out, file), "utf8")).not.toMatch(
				new RegExp(`${SEALED}|sealedPrivateKey|publicJwk`),
			);
	});
});

describe("each rule's violation in the store's files", () => {
	it("one-signature-per-record: a signature lost, a signature of a record that is gone", async () => {
		change("records", "DELETE FROM signatures WHERE recordId = ?", "r-0007");
		change("records", "DELETE FROM records WHERE id = ?", "r-0005");
		const report = await auditStore();
		expect(failing(report)).toEqual(["one-signature-per-record"]);
		expect(messages(report, "one-signature-per-record")).toEqual([
			"record r-0007 has no signature",
			expect.stringMatching(/^1 signature\(s\) for unknown record r-0005 \(batch /),
		]);
	});

	it("signature-verifies: tampered data, a foreign header", async () => {
		change("records", "UPDATE records SET data = 'tampered' WHERE id = ?", "r-0004");
		change(
			"records",
			"UPDATE signatures SET jws = 'eyJhbGciOiJub25lIn0..AAAA' WHERE recordId = ?",
			"r-0009",
		);
		const report = await auditStore();
		expect(failing(report)).toEqual(["signature-verifies"]);
		expect(messages(report, "signature-verifies")).toEqual([
			expect.stringMatching(
				/^signature of record r-0004 does not verify against key key-00\d/,
			),
			'signature of record r-0009 has alg "none", not "EdDSA"',
		]);
	});

	it("one-key-per-batch: a batch recording another key than its signatures and lease", async () => {
		const batch = snapshot.batches.find((b) => b.batchId === "batch-0004")!;
		const other = snapshot.keys.map((k) => k.keyId).find((k) => k !== batch.keyId)!;
		change("batcher", "UPDATE batches SET keyId = ? WHERE batchId = ?", other, batch.batchId);
		const report = await auditStore();
		expect(failing(report)).toEqual(["one-key-per-batch"]);
		expect(messages(report, "one-key-per-batch")).toEqual([
			`batch batch-0004 records key ${other} and lease ${batch.leaseId}, which is a lease of key ${batch.keyId}`,
			`batch batch-0004 records key ${other} but its signatures use ${batch.keyId}`,
		]);
	});

	it("no-key-overlap: a lease granted while its key was held, a signature after its lease ended", async () => {
		// The last lease to end: moving its end later changes nothing else in the log.
		const held = snapshot.leases.reduce((a, b) => ((a.endSeq ?? 0) > (b.endSeq ?? 0) ? a : b));
		const last = held.endSeq!;
		change("keyring", "UPDATE leases SET endSeq = ? WHERE leaseId = ?", last + 2, held.leaseId);
		// The store's unique keys allow this lease; rule 2 does not: its key was still held.
		change(
			"keyring",
			`INSERT INTO leases (leaseId, keyId, holder, grantSeq, grantedAt, expiresAt, endSeq, endedAt, "end") VALUES ('lease-9999', ?, 'signer-9', ?, ?, ?, ?, ?, 'released')`,
			held.keyId,
			last + 1,
			held.grantedAt,
			held.expiresAt,
			last + 3,
			held.endedAt,
		);
		const late = snapshot.signatures.find((s) => s.leaseId === "lease-0002")!;
		const endedAt = Date.parse(
			snapshot.leases.find((l) => l.leaseId === "lease-0002")!.endedAt!,
		);
		change(
			"records",
			"UPDATE signatures SET signedAt = ? WHERE recordId = ?",
			new Date(endedAt + 5000).toISOString(),
			late.recordId,
		);
		const report = await auditStore();
		expect(failing(report)).toEqual(["no-key-overlap"]);
		expect(messages(report, "no-key-overlap")).toEqual([
			`lease lease-9999 (seq ${last + 1}) granted key ${held.keyId}, which was not free (held by lease ${held.leaseId})`,
			`lease lease-9999 (seq ${last + 3}) ended while not the active lease of key ${held.keyId}`,
			expect.stringMatching(
				new RegExp(
					`^signature of record ${late.recordId} was made at .*, outside lease lease-0002`,
				),
			),
		]);
	});

	it("lru-order: a grant that skipped the least recently used free key", async () => {
		const skewed = await buildMiniRun({
			chooseKey: (free, n) => (n === 3 ? free[1] : free[0]),
		});
		fs.rmSync(dataDir, { recursive: true, force: true });
		writeStoreFiles(skewed.snapshot, dataDir);
		const report = await auditStore();
		expect(failing(report)).toEqual(["lru-order"]);
		expect(messages(report, "lru-order")).toEqual([
			expect.stringMatching(
				/^lease lease-0004 \(seq \d+\) was granted key key-001 while key-000 was the least recently used free key$/,
			),
		]);
	});

	it("lru-order: a lease granted on a key after it was retired, or before it was added", async () => {
		// A store an earlier version wrote has no lifecycle columns: the keyring adds them on open.
		for (const [column, type] of Object.entries(KEY_LIFECYCLE_COLUMNS))
			change("keyring", `ALTER TABLE keys ADD COLUMN ${column} ${type}`);
		const byGrant = [...snapshot.leases].sort((a, b) => a.grantSeq - b.grantSeq);
		const last = byGrant.at(-1)!;
		const early = byGrant[0];
		// The last lease moved to the end of the log, its key retired before it; another key "added" after its first grant.
		const maxSeq = Math.max(...snapshot.leases.map((l) => l.endSeq ?? l.grantSeq));
		change(
			"keyring",
			"UPDATE leases SET grantSeq = grantSeq + 1000, endSeq = endSeq + 1000 WHERE leaseId = ?",
			last.leaseId,
		);
		change("keyring", "UPDATE keys SET retiredSeq = ? WHERE keyId = ?", maxSeq + 1, last.keyId);
		const otherKey = snapshot.keys.map((k) => k.keyId).find((k) => k !== early.keyId)!;
		change("keyring", "UPDATE keys SET addedSeq = ? WHERE keyId = ?", maxSeq + 2000, otherKey);
		const tampered = await auditStore();
		expect(failing(tampered)).toContain("lru-order");
		expect(messages(tampered, "lru-order")).toEqual(
			expect.arrayContaining([
				`lease ${last.leaseId} (seq ${last.grantSeq + 1000}) granted key ${last.keyId} after it was retired at seq ${maxSeq + 1}: only active keys are granted`,
				expect.stringMatching(
					new RegExp(
						`granted key ${otherKey} before it was added: only active keys are granted$`,
					),
				),
			]),
		);
		expect(tampered.endedKeys).toEqual([
			expect.objectContaining({ keyId: last.keyId, event: "retired", seq: maxSeq + 1 }),
		]);
	});

	it("batch-size: batches larger than their run's batch size", async () => {
		change("batcher", "UPDATE runs SET batchSize = 2 WHERE runId = 'run-2'");
		const report = await auditStore({ maxListedPerRule: 1 });
		expect(failing(report)).toEqual(["batch-size"]);
		expect(report.rules.find((r) => r.rule === "batch-size")).toEqual({
			rule: "batch-size",
			ok: false,
			violations: 3,
			listed: 1,
		});
	});
});
