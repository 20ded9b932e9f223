/**
 * The two logs in their owners' embedded stores (docs/design.md §8.4): records logs every
 * stored signature and the keyring every lease grant and end, in commit order, in the write
 * transaction of the row; rows stored before the log existed enter it once, in store order; the
 * checkpoints a publisher signs open with the log's verifier key, never go back and are each
 * consistent with the one before; the log key is made once, 0600, under DATA_DIR.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { LeaseDoc, SignatureDoc } from "../../src/contract";
import { SqliteKeyringStore } from "../../src/keyring/sqlite-store";
import { SqliteRecordsStore } from "../../src/records/sqlite-store";
import { KEYRING_SCHEMA, RECORDS_SCHEMA } from "../../src/store/schema";
import { openCheckpoint } from "../../src/tlog/checkpoint";
import { leaseEndLeaf, leaseGrantLeaf, signatureLeaf } from "../../src/tlog/leaves";
import { loadLogKey } from "../../src/tlog/log-key";
import { leafHash, verifyConsistency } from "../../src/tlog/merkle";
import { generateNoteSigner, parseVerifierKey } from "../../src/tlog/note";
import { CheckpointPublisher, checkpointOf } from "../../src/tlog/publisher";
import { CHECKPOINT_EVERY_MS } from "../../src/tlog/service-log";
import { mth, piece, SIGNED_AT } from "../support/tlog";

const made: string[] = [];
function tempDir(): string {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tlog-stores-"));
	made.push(dir);
	return dir;
}
afterAll(() => {
	for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

describe("the signature log in the records store", () => {
	test("every stored signature is a leaf, in commit order; duplicates are not; the root is the rows'", async () => {
		const dir = tempDir();
		const store = SqliteRecordsStore.open(dir);
		await store.insertRecords(
			["r1", "r2", "r3", "r4", "r5"].map((id) => ({ id, data: `d-${id}` })),
		);
		await store.storeSignatures(piece(["r3", "r1"], "b1"));
		expect(await store.storeSignatures(piece(["r1", "r2", "r2", "r5"], "b2"))).toEqual({
			stored: 2,
			duplicates: 2,
		});
		await store.storeSignatures(piece(["r4"], "b3"));
		const order = ["r3", "r1", "r2", "r5", "r4"];
		const leaves: Buffer[] = [];
		for (const id of order) {
			const row = (await store.signature(id))!;
			leaves.push(leafHash(signatureLeaf(row)));
			expect((await store.loggedSignature(id))!.logIndex).toBe(leaves.length - 1);
		}
		// The leaves are hashed on the log's own thread: settled, the tree holds them all.
		await store.signatureLog.settle();
		expect(await store.signatureLog!.size()).toBe(5);
		expect(store.signatureLog.leafHashes(0, 5)).toEqual(leaves);
		expect((await store.signatureLog!.root(5)).equals(mth(leaves))).toBe(true);
		await store.close();
		const reopened = SqliteRecordsStore.open(dir);
		expect((await reopened.signatureLog!.root(5)).equals(mth(leaves))).toBe(true);
		await reopened.close();
	});

	test("a store written before the log existed is logged once, in store order, and a row added later is not taken in", async () => {
		const dir = tempDir();
		const old = new DatabaseSync(path.join(dir, "records.sqlite"));
		// The schema of the version before the log: no logIndex column.
		old.exec(RECORDS_SCHEMA.replace(/,\s*--[^\n]*\n\s*logIndex INTEGER/, ""));
		const rows: SignatureDoc[] = ["r2", "r1", "r3"].map((recordId) => ({
			recordId,
			keyId: "key-001",
			batchId: "old-b1",
			leaseId: "old-l1",
			jws: `old-${recordId}`,
			signedAt: SIGNED_AT,
		}));
		for (const s of rows)
			old.prepare(
				"INSERT INTO signatures (recordId, keyId, batchId, leaseId, jws, signedAt) VALUES (?, ?, ?, ?, ?, ?)",
			).run(s.recordId, s.keyId, s.batchId, s.leaseId, s.jws, s.signedAt);
		old.close();
		const lines: string[] = [];
		const store = SqliteRecordsStore.open(dir, (line) => lines.push(line));
		expect(lines).toContain("The signature log took in 3 signatures stored before it existed");
		const byId = [...rows].sort((a, b) => a.recordId.localeCompare(b.recordId));
		expect(
			(await store.signatureLog!.root(3)).equals(
				mth(byId.map((s) => leafHash(signatureLeaf(s)))),
			),
		).toBe(true);
		await store.close();
		// A row slipped in behind the owner's back is not absorbed on the next start.
		const side = new DatabaseSync(path.join(dir, "records.sqlite"));
		side.prepare(
			"INSERT INTO signatures (recordId, keyId, batchId, leaseId, jws, signedAt) VALUES ('r9', 'key-001', 'b9', 'l9', 'forged', ?)",
		).run(SIGNED_AT);
		side.close();
		const again = SqliteRecordsStore.open(dir, (line) => lines.push(line));
		expect(await again.signatureLog!.size()).toBe(3);
		expect(lines).toHaveLength(1);
		expect((await again.loggedSignature("r9"))!.logIndex).toBeNull();
		expect((await again.loggedSignature("r3"))!.logIndex).toBe(2);
		await again.close();
	});

	test("rows numbered in the log but not yet hashed when the process stopped are hashed at the next start", async () => {
		const dir = tempDir();
		const store = SqliteRecordsStore.open(dir);
		await store.insertRecords(["r1", "r2"].map((id) => ({ id, data: id })));
		await store.storeSignatures(piece(["r1"], "b1"));
		await store.close();
		// As a crash leaves it: the row committed with its index, its leaf hash never written.
		const side = new DatabaseSync(path.join(dir, "records.sqlite"));
		side.prepare(
			"INSERT INTO signatures (recordId, keyId, batchId, leaseId, jws, signedAt, logIndex) VALUES ('r2', 'key-000', 'b2', 'lease-b2', 'jws-r2', ?, 1)",
		).run(SIGNED_AT);
		side.close();
		const reopened = SqliteRecordsStore.open(dir);
		expect(await reopened.signatureLog.size()).toBe(2);
		expect(reopened.signatureLog.leafHashes(1, 2)).toEqual([
			leafHash(signatureLeaf((await reopened.signature("r2"))!)),
		]);
		await reopened.close();
	});
});

describe("the lease log in the keyring store", () => {
	const lease = (leaseId: string, keyId: string, grantSeq: number): LeaseDoc => ({
		leaseId,
		keyId,
		holder: "signer-1",
		grantSeq,
		grantedAt: SIGNED_AT,
		expiresAt: "2025-01-01T00:00:30.000Z",
		endSeq: null,
		endedAt: null,
		end: null,
	});

	test("grants and ends are leaves in commit order; a renewal, a refused grant and a refused end are not", async () => {
		const store = SqliteKeyringStore.open("");
		const outcome = await store.claimRole({
			holder: "k",
			host: "h",
			pid: 1,
			now: SIGNED_AT,
			expiresAt: "2025-01-01T00:01:00.000Z",
			mayTakeOver: () => true,
		});
		const epoch = "claimed" in outcome ? outcome.claimed.epoch : 0;
		await store.insertLease(lease("l1", "key-000", 1), epoch);
		// A refused grant (its write rolled back to its savepoint) leaves no leaf behind.
		await expect(store.insertLease(lease("l1", "key-002", 9), epoch)).rejects.toThrow();
		await store.insertLease(lease("l2", "key-001", 2), epoch);
		await store.renewLease("l1", "2025-01-01T00:00:50.000Z", epoch);
		const ending = { end: "released" as const, endSeq: 3, endedAt: "2025-01-01T00:00:40.000Z" };
		expect(await store.endLease("l1", ending, epoch)).toBe(1);
		expect(await store.endLease("l1", { ...ending, endSeq: 4 }, epoch)).toBe(0);
		const expected = [
			leaseGrantLeaf(lease("l1", "key-000", 1)),
			leaseGrantLeaf(lease("l2", "key-001", 2)),
			leaseEndLeaf({
				leaseId: "l1",
				keyId: "key-000",
				...ending,
				expiresAt: "2025-01-01T00:00:50.000Z",
			}),
		];
		// The group appends its writes' leaves when it commits, at the end of the turn.
		expect(await store.leaseLog!.size()).toBe(0);
		await store.durable();
		expect(await store.leaseLog!.size()).toBe(3);
		expect((await store.leaseLog!.root(3)).equals(mth(expected.map((l) => leafHash(l))))).toBe(
			true,
		);
		await store.close();
	});

	test("leases stored before the log existed enter it once, grants and ends in seq order", async () => {
		const dir = tempDir();
		const old = new DatabaseSync(path.join(dir, "keyring.sqlite"));
		old.exec(KEYRING_SCHEMA);
		const insert = old.prepare("INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
		insert.run("l1", "key-000", "s", 1, SIGNED_AT, SIGNED_AT, 3, SIGNED_AT, "released");
		insert.run("l2", "key-001", "s", 2, SIGNED_AT, SIGNED_AT, null, null, null);
		old.close();
		const store = SqliteKeyringStore.open(dir);
		const l1 = { ...lease("l1", "key-000", 1), expiresAt: SIGNED_AT, holder: "s" };
		const expected = [
			leaseGrantLeaf(l1),
			leaseGrantLeaf({ ...lease("l2", "key-001", 2), holder: "s" }),
			leaseEndLeaf({ ...l1, endSeq: 3, endedAt: SIGNED_AT, end: "released" }),
		];
		expect((await store.leaseLog!.root(3)).equals(mth(expected.map((l) => leafHash(l))))).toBe(
			true,
		);
		await store.close();
	});
});

describe("checkpoints and the log key", () => {
	test("a publisher signs checkpoints only as the log grows, each consistent with the last, and refuses a log that shrank", async () => {
		const dir = tempDir();
		const store = SqliteRecordsStore.open(dir);
		await store.insertRecords(["r1", "r2", "r3"].map((id) => ({ id, data: id })));
		const signer = generateNoteSigner("record-signer/signatures");
		const warnings: string[] = [];
		const publisher = new CheckpointPublisher(store.signatureLog!, signer, {
			everyMs: 60_000,
			warn: (line) => warnings.push(line),
		});
		await store.storeSignatures(piece(["r1"], "b1"));
		const first = (await publisher.publish())!;
		expect(await publisher.publish()).toEqual(first);
		await store.storeSignatures(piece(["r2", "r3"], "b2"));
		const second = (await publisher.stop())!;
		const verifier = parseVerifierKey(publisher.verifierKey);
		const [a, b] = [
			openCheckpoint(first.note, verifier),
			openCheckpoint(second.note, verifier),
		];
		expect([a.size, b.size]).toEqual([1, 3]);
		expect(b.root.equals(await store.signatureLog!.root(3))).toBe(true);
		expect(
			verifyConsistency(
				1,
				3,
				await store.signatureLog!.consistencyProof(1, 3),
				a.root,
				b.root,
			),
		).toBe(true);
		expect(checkpointOf((await store.signatureLog!.latestCheckpoint())!)).toEqual(b);
		await store.close();

		// Someone deletes the last signature and its leaf hash: the next start signs nothing smaller.
		const side = new DatabaseSync(path.join(dir, "records.sqlite"));
		side.exec("DELETE FROM signatures WHERE logIndex = 2");
		side.exec("UPDATE signature_log_tiles SET hashes = substr(hashes, 1, 64) WHERE tile = 0");
		side.close();
		const tampered = SqliteRecordsStore.open(dir);
		const next = new CheckpointPublisher(tampered.signatureLog!, signer, {
			everyMs: 60_000,
			warn: (line) => warnings.push(line),
		});
		expect((await next.publish())!.size).toBe(3);
		expect(warnings).toEqual([
			"Log record-signer/signatures: the log holds 2 entries, fewer than its last checkpoint's 3: no checkpoint is signed",
		]);
		await tampered.close();
	});

	test("while entries arrive, a checkpoint at least every second (CHECKPOINT_EVERY_MS), each consistent with the one before", async () => {
		const store = SqliteRecordsStore.open("");
		const ids = Array.from({ length: 40 }, (_, i) => `r${String(i).padStart(2, "0")}`);
		await store.insertRecords(ids.map((id) => ({ id, data: id })));
		const signer = generateNoteSigner("record-signer/signatures");
		const publisher = new CheckpointPublisher(store.signatureLog, signer, {
			everyMs: CHECKPOINT_EVERY_MS,
			warn: () => undefined,
		});
		publisher.start();
		// An entry every 100 ms for 3.5 s.
		const started = Date.now();
		for (const id of ids.slice(0, 35)) {
			await store.storeSignatures(piece([id], `b-${id}`));
			await new Promise((resolve) => setTimeout(resolve, 100));
		}
		const lastEntryAt = Date.now();
		// The last entry is in a checkpoint within a second (and a scheduling margin).
		while ((await store.signatureLog.latestCheckpoint())?.size !== 35)
			if (Date.now() - lastEntryAt > CHECKPOINT_EVERY_MS + 1_000)
				throw new Error("no checkpoint of the last entry within a second");
			else await new Promise((resolve) => setTimeout(resolve, 20));
		await publisher.stop();
		const checkpoints = await store.signatureLog.checkpoints(0, 100);
		const verifier = parseVerifierKey(publisher.verifierKey);
		const opened = checkpoints.map((c) => openCheckpoint(c.note, verifier));
		// About one a second over 3.5 s of entries; none a second and a half after the one before.
		expect(checkpoints.length).toBeGreaterThanOrEqual(3);
		const times = [started, ...checkpoints.map((c) => Date.parse(c.publishedAt))];
		for (let i = 1; i < times.length; i++)
			expect(times[i] - times[i - 1]).toBeLessThan(CHECKPOINT_EVERY_MS + 500);
		for (let i = 1; i < opened.length; i++) {
			expect(opened[i].size).toBeGreaterThan(opened[i - 1].size);
			expect(
				verifyConsistency(
					opened[i - 1].size,
					opened[i].size,
					await store.signatureLog.consistencyProof(opened[i - 1].size, opened[i].size),
					opened[i - 1].root,
					opened[i].root,
				),
			).toBe(true);
		}
		await store.close();
	});

	test("the log key is made once under DATA_DIR, mode 0600, and read back; a key given as a variable wins", () => {
		const dir = tempDir();
		const file = path.join(dir, "signature-log.key");
		const made = loadLogKey({ key: null, keyFile: file, name: "record-signer/signatures" });
		expect(fs.statSync(file).mode & 0o777).toBe(0o600);
		const again = loadLogKey({ key: null, keyFile: file, name: "ignored" });
		expect(again.publicKey.equals(made.publicKey)).toBe(true);
		expect(again.name).toBe("record-signer/signatures");
		const given = loadLogKey({ key: fs.readFileSync(file, "utf8"), keyFile: null, name: "x" });
		expect(given.keyId).toBe(made.keyId);
	});
});
