/**
 * A DATA_DIR written by the earlier version (NeDB files, one per collection) is imported once
 * into the SQLite stores when their owners first open them: nothing signed is lost, nothing is
 * signed twice, and the old files are kept under a new name. A records store from before
 * submissions is put in arrival order once; a batcher store from before follow runs gets their
 * columns, and the audit reads such files as they are.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { importJWK, type CryptoKey, type JWK } from "jose";
import type { KeyDoc } from "../../src/contract";
import { generateKeys } from "../../src/keyring/keys";
import { loadMasterKey, unsealPrivateKey } from "../../src/keyring/master-key";
import { closeAfter, openStoreFiles } from "../../src/audit/audit-db";
import { audit } from "../../src/audit/rules";
import { SqliteBatcherStore } from "../../src/batcher/sqlite-store";
import { SqliteRecordsStore } from "../../src/records/sqlite-store";
import { LEGACY_SUFFIX } from "../../src/store/legacy-nedb";
import { buildMiniRun, signRecord, writeStoreFiles } from "../support/audit-fixture";
import { auditSystem, runToCompletion, startSystem } from "../support/system";

/** Writes `docs` as NeDB writes a collection: a JSON document per line, later lines winning. */
function nedbFile(dataDir: string, name: string, lines: object[]): void {
	fs.writeFileSync(
		path.join(dataDir, name),
		lines.map((line) => JSON.stringify(line)).join("\n") + "\n",
	);
}

async function privateKeyOf(doc: KeyDoc, dataDir: string): Promise<CryptoKey> {
	const master = await loadMasterKey({ masterKey: null, dataDir }, false);
	const plaintext = await unsealPrivateKey(doc.sealedPrivateKey, doc.keyId, master);
	return (await importJWK(
		JSON.parse(new TextDecoder().decode(plaintext)) as JWK,
		"EdDSA",
	)) as CryptoKey;
}

test("an earlier version's NeDB store is imported once, then the run signs only what was left", async () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-legacy-"));
	try {
		// The earlier store: 3 keys, 6 records of which 2 were signed by a run under one lease.
		const master = await loadMasterKey({ masterKey: null, dataDir }, true);
		const keys = await generateKeys(3, master);
		nedbFile(dataDir, "keys.db", [
			{ $$indexCreated: { fieldName: "keyId", unique: true } },
			...keys.map((k) => ({ ...k, _id: k.keyId })),
		]);
		const records = Array.from({ length: 6 }, (_, i) => ({
			_id: `rec-00000${i + 1}`,
			data: `data-${i + 1}`,
		}));
		// An update line and a deletion, as NeDB appends them: the last version of each document counts.
		nedbFile(dataDir, "records.db", [
			...records,
			{ ...records[5], data: "replaced-before" },
			records[5],
			{ _id: "rec-gone", data: "x" },
			{ $$deleted: true, _id: "rec-gone" },
		]);
		const key = await privateKeyOf(keys[0], dataDir);
		const lease = {
			_id: "lease-1",
			leaseId: "lease-1",
			keyId: "key-000",
			holder: "signer-old",
			grantSeq: 1,
			grantedAt: "2026-01-01T00:00:00.000Z",
			expiresAt: "2026-01-01T00:00:30.000Z",
			endSeq: 2,
			endedAt: "2026-01-01T00:00:05.000Z",
			end: "released",
		};
		nedbFile(dataDir, "leases.db", [
			{ ...lease, endSeq: null, endedAt: null, end: null },
			lease,
		]);
		const signatures = await Promise.all(
			records.slice(0, 2).map(async (r) => ({
				_id: r._id,
				recordId: r._id,
				keyId: "key-000",
				batchId: "run-old-b000001",
				leaseId: "lease-1",
				jws: await signRecord(key, "key-000", r._id, r.data),
				signedAt: "2026-01-01T00:00:01.000Z",
			})),
		);
		nedbFile(dataDir, "signatures.db", signatures);
		nedbFile(dataDir, "runs.db", [
			{
				_id: "run-old",
				runId: "run-old",
				batchSize: 2,
				status: "completed",
				startedAt: "2026-01-01T00:00:00.000Z",
				finishedAt: "2026-01-01T00:00:06.000Z",
				report: null,
			},
		]);
		nedbFile(dataDir, "batches.db", [
			{
				_id: "run-old-b000001",
				batchId: "run-old-b000001",
				runId: "run-old",
				keyId: "key-000",
				leaseId: "lease-1",
				recordIds: ["rec-000001", "rec-000002"],
				attempt: 1,
				status: "signed",
				startedAt: "2026-01-01T00:00:00.500Z",
				finishedAt: "2026-01-01T00:00:05.500Z",
				stored: 2,
				duplicates: 0,
			},
		]);
		// Audited before any service imported it: the audit says what to do, and changes nothing.
		expect(() => openStoreFiles(dataDir)).toThrow(
			`${dataDir} holds an earlier version's store (records.db, signatures.db, runs.db, batches.db, keys.db, leases.db), not imported yet: start the services on it once (npm start, or npm run serve), which imports it and keeps the old files, then audit`,
		);
		expect(fs.readdirSync(dataDir).filter((f) => f.endsWith(".sqlite"))).toEqual([]);

		const system = await startSystem({ records: 6, keys: 3, dataDir });
		try {
			expect(await system.broker.call("records.progress")).toEqual({ records: 6, signed: 2 });
			// The old files are kept, renamed; the new store files are there.
			const files = fs.readdirSync(dataDir);
			for (const name of [
				"records.db",
				"signatures.db",
				"keys.db",
				"leases.db",
				"runs.db",
				"batches.db",
			]) {
				expect(files).toContain(name + LEGACY_SUFFIX);
				expect(files).not.toContain(name);
			}
			// The keyring took the lease log over: the next grant follows the imported seq, and the
			// least recently used key is one never used before (key-001).
			const { completion } = await runToCompletion(system, 3);
			expect(completion.report).toMatchObject({ signedThisRun: 4, batches: 2 });
			const runs = await system.broker.call<Array<{ runId: string }>>("batcher.runs");
			expect(runs.map((r) => r.runId)).toContain("run-old");
			const status = await system.broker.call<{ lastSeq: number }>("keyring.status");
			expect(status.lastSeq).toBe(2 + 4);
			const verdict = await auditSystem(system.broker);
			expect(verdict.violations).toEqual([]);
			expect(verdict.ok).toBe(true);
		} finally {
			await system.broker.stop();
		}

		// Opened again: nothing imported twice (the old files are gone under their old names).
		const again = await startSystem({ records: 6, keys: 3, dataDir });
		try {
			expect(await again.broker.call("records.progress")).toEqual({ records: 6, signed: 6 });
		} finally {
			await again.broker.stop();
		}
	} finally {
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
});

test("a records store from before submissions opens once into arrival order: its records numbered in id order, submissions after them", async () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-arrivals-"));
	try {
		// The previous version's records.sqlite: records without arrival columns, one signed.
		const old = new DatabaseSync(path.join(dataDir, "records.sqlite"));
		old.exec(`
			CREATE TABLE records (id TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
			CREATE TABLE signatures (recordId TEXT PRIMARY KEY, keyId TEXT NOT NULL, batchId TEXT NOT NULL,
				leaseId TEXT NOT NULL, jws TEXT NOT NULL, signedAt TEXT NOT NULL) WITHOUT ROWID;
			INSERT INTO records VALUES ('rec-3', 'c'), ('rec-1', 'a'), ('rec-2', 'b');
			INSERT INTO signatures VALUES ('rec-2', 'key-000', 'b1', 'l1', 'jws', '2026-01-01T00:00:00.000Z');
		`);
		old.close();
		const lines: string[] = [];
		const store = SqliteRecordsStore.open(dataDir, (line) => lines.push(line));
		expect(lines).toContain("Numbered 3 records in arrival order (id order), once");
		expect(await store.recordCount()).toBe(3);
		await store.submitRecords(
			[{ id: "new-0", data: "n" }],
			"alice",
			"2026-01-02T00:00:00.000Z",
		);
		expect((await store.unsignedArrivals(0, 10)).map((r) => [r.id, r.seq])).toEqual([
			["rec-1", 1],
			["rec-3", 3],
			["new-0", 4],
		]);
		expect(await store.record("rec-1")).toEqual({
			id: "rec-1",
			data: "a",
			submittedBy: null,
			submittedAt: null,
		});
		await store.close();

		// Opened again: nothing numbered twice.
		lines.length = 0;
		const again = SqliteRecordsStore.open(dataDir, (line) => lines.push(line));
		expect(lines).toEqual([]);
		expect((await again.unsignedArrivals(0, 10)).map((r) => r.seq)).toEqual([1, 3, 4]);
		await again.close();
	} finally {
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
});

test("a batcher store and audit of files from before follow runs: the batcher adds the columns once; the audit reads old files as they are", async () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-batcher-old-"));
	try {
		const mini = await buildMiniRun();
		writeStoreFiles(mini.snapshot, dataDir);
		// As the previous version's files were: no runs.follow, no batches.short.
		const old = new DatabaseSync(path.join(dataDir, "batcher.sqlite"));
		old.exec("ALTER TABLE runs DROP COLUMN follow; ALTER TABLE batches DROP COLUMN short;");
		old.close();
		const verdict = await closeAfter(openStoreFiles(dataDir), (db) => audit(db));
		expect(verdict.violations).toEqual([]);
		expect(verdict).toMatchObject({ ok: true, pending: 0 });

		const store = SqliteBatcherStore.open(dataDir);
		expect((await store.getRun("run-2"))?.follow).toBeUndefined();
		await store.insertRun({
			runId: "run-follow",
			batchSize: 3,
			status: "running",
			startedAt: "2026-01-02T00:00:00.000Z",
			finishedAt: null,
			follow: true,
		});
		await store.insertBatch({
			batchId: "run-follow-b000001",
			runId: "run-follow",
			keyId: null,
			leaseId: null,
			recordIds: ["r-0001"],
			attempt: 1,
			status: "pending",
			startedAt: "2026-01-02T00:00:01.000Z",
			finishedAt: null,
			short: "lingered",
		});
		expect(await store.interruptedRun()).toMatchObject({ runId: "run-follow", follow: true });
		expect((await store.pendingBatches("run-follow"))[0]).toMatchObject({ short: "lingered" });
		await store.close();
	} finally {
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
});
