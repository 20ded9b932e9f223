/**
 * The stored log (src/tlog/sqlite-log.ts) on a real SQLite database: appends in bulks of any
 * size give RFC 6962's roots and proofs (checked against the recursive definition), a rolled
 * back append leaves nothing behind, and proofs at 10 million leaves take under 10 ms. The 10M
 * tree is built in SQL (every leaf the same, so every complete subtree of a level has one hash,
 * written as the log itself stores it); the log then reads it back like any other. What an owner
 * answers about its log (src/tlog/log-reads.ts) goes no further than its latest checkpoint.
 */
import { DatabaseSync } from "node:sqlite";
import { transaction } from "../../src/store/sqlite";
import { leafHash, nodeHash, verifyConsistency, verifyInclusion } from "../../src/tlog/merkle";
import { LogReads } from "../../src/tlog/log-reads";
import { generateNoteSigner } from "../../src/tlog/note";
import { CheckpointPublisher } from "../../src/tlog/publisher";
import { SqliteLog, STORED_LEVEL_STEP, TILE_LEAVES } from "../../src/tlog/sqlite-log";
import { mth } from "../support/tlog";

const leaf = (i: number) => `leaf ${i}`;

describe("the stored log (src/tlog/sqlite-log.ts)", () => {
	test("bulk appends of any size give the roots and proofs of RFC 6962, read back after a reopen", async () => {
		const db = new DatabaseSync(":memory:");
		const log = new SqliteLog(db, "test_log", { entries: true });
		const hashes: Buffer[] = [];
		let next = 0;
		for (const bulk of [1, 2, 3, 15, 16, 17, 1, 31, 64, 100, 7, 300]) {
			const leaves = Array.from({ length: bulk }, (_, i) => leaf(next + i));
			const start = transaction(db, () =>
				log.append(
					leaves,
					leaves.map((_, i) => `e${next + i}`),
				),
			);
			expect(start).toBe(next);
			for (const l of leaves) hashes.push(leafHash(l));
			next += bulk;
			expect(await log.size()).toBe(next);
			expect((await log.root(next)).equals(mth(hashes))).toBe(true);
		}
		const reopened = new SqliteLog(db, "test_log", { entries: true });
		expect(reopened.currentRoot().equals(mth(hashes))).toBe(true);
		for (const size of [1, 16, 17, 255, 256, 257, next]) {
			const root = mth(hashes.slice(0, size));
			expect((await reopened.root(size)).equals(root)).toBe(true);
			for (const index of [0, Math.floor(size / 2), size - 1]) {
				const proof = await reopened.inclusionProof(index, size);
				expect(verifyInclusion(hashes[index], index, size, proof, root)).toBe(true);
			}
			for (const older of [1, 15, 16, size - 1].filter((m) => m > 0 && m <= size)) {
				const proof = await reopened.consistencyProof(older, size);
				expect(
					verifyConsistency(older, size, proof, mth(hashes.slice(0, older)), root),
				).toBe(true);
			}
		}
		expect(reopened.leafHashes(299, 302)).toEqual(hashes.slice(299, 302));
		// Each leaf's entry name, in log order.
		const names = db.prepare("SELECT idx, entry FROM test_log_entries ORDER BY idx").all();
		expect(names.map((row) => [Number(row.idx), row.entry])).toEqual(
			Array.from({ length: next }, (_, i) => [i, `e${i}`]),
		);
		db.close();
	});

	test("an append whose transaction rolls back leaves the log as it was, after reload()", async () => {
		const db = new DatabaseSync(":memory:");
		const log = new SqliteLog(db, "test_log", { entries: true });
		transaction(db, () => log.append(["a"], ["a"]));
		const root = log.currentRoot();
		expect(() =>
			transaction(db, () => {
				log.append(["b"], ["b"]);
				throw new Error("refused");
			}),
		).toThrow("refused");
		log.reload();
		expect(await log.size()).toBe(1);
		expect(log.currentRoot().equals(root)).toBe(true);
		expect(db.prepare("SELECT count(*) AS n FROM test_log_entries").get()!.n).toBe(1);
		db.close();
	});

	test("a file whose entry names were unique is rebuilt once without that index, its names, order and tree kept", async () => {
		const db = new DatabaseSync(":memory:");
		const first = new SqliteLog(db, "old_log", { entries: true });
		transaction(db, () => first.append(["grant l1", "end l1"], ["grant:l1", "end:l1"]));
		const root = first.currentRoot();
		// The table as the previous version made it: the names unique.
		db.exec(
			"CREATE TABLE t (idx INTEGER PRIMARY KEY, entry TEXT NOT NULL UNIQUE); INSERT INTO t SELECT idx, entry FROM old_log_entries; DROP TABLE old_log_entries; ALTER TABLE t RENAME TO old_log_entries",
		);
		const indexes = () =>
			db
				.prepare(
					"SELECT count(*) AS n FROM sqlite_master WHERE type = 'index' AND tbl_name = 'old_log_entries'",
				)
				.get()!.n;
		const names = () =>
			db
				.prepare("SELECT idx, entry FROM old_log_entries ORDER BY idx")
				.all()
				.map((row) => [Number(row.idx), row.entry]);
		expect(indexes()).toBe(1);
		const log = new SqliteLog(db, "old_log", { entries: true });
		expect(indexes()).toBe(0);
		expect(names()).toEqual([
			[0, "grant:l1"],
			[1, "end:l1"],
		]);
		expect(log.currentRoot().equals(root)).toBe(true);
		// A second open finds nothing to do, and the log goes on.
		const again = new SqliteLog(db, "old_log", { entries: true });
		transaction(db, () => again.append(["grant l2"], ["grant:l2"]));
		expect(names()).toEqual([
			[0, "grant:l1"],
			[1, "end:l1"],
			[2, "grant:l2"],
		]);
		db.close();
	});

	test("at 10 million leaves, an inclusion proof for a row found by its id and a consistency proof take under 10 ms each", async () => {
		const SIZE = 10_000_000;
		const db = new DatabaseSync(":memory:");
		new SqliteLog(db, "big_log");
		// Rows that hold their leaf's index, as the signatures do (signatures.logIndex).
		db.exec("CREATE TABLE big_rows (id TEXT PRIMARY KEY, logIndex INTEGER) WITHOUT ROWID");
		const same = leafHash("the same leaf");
		const perLevel = [same];
		for (let level = 1; level <= 24; level++)
			perLevel.push(nodeHash(perLevel[level - 1], perLevel[level - 1]));
		db.prepare(
			"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) " +
				"INSERT INTO big_rows (id, logIndex) SELECT printf('rec-%08d', i), i FROM n",
		).run(SIZE);
		db.prepare(
			"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) " +
				"INSERT INTO big_log_tiles (tile, hashes) SELECT i, ? FROM n",
		).run(SIZE / TILE_LEAVES, Buffer.concat(Array(TILE_LEAVES).fill(same)));
		for (let level = STORED_LEVEL_STEP; 2 ** level <= SIZE; level += STORED_LEVEL_STEP)
			db.prepare(
				"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) " +
					"INSERT INTO big_log_nodes (level, idx, hash) SELECT ?, i, ? FROM n",
			).run(Math.floor(SIZE / 2 ** level), level, perLevel[level]);
		/** The root of n identical leaves, by RFC 6962's split. */
		const rootOf = (n: number): Buffer => {
			let k = 1;
			while (k * 2 < n) k *= 2;
			return n === 1
				? same
				: n === 2 * k
					? perLevel[Math.log2(n)]
					: nodeHash(perLevel[Math.log2(k)], rootOf(n - k));
		};
		const log = new SqliteLog(db, "big_log");
		const indexOf = db.prepare("SELECT logIndex FROM big_rows WHERE id = ?");
		expect(await log.size()).toBe(SIZE);
		const root = rootOf(SIZE);
		expect(log.currentRoot().equals(root)).toBe(true);

		const timings: number[] = [];
		for (const index of [0, 1, 4_999_999, 8_388_607, 8_388_608, 9_999_998, SIZE - 1]) {
			const started = process.hrtime.bigint();
			const found = Number(indexOf.get(`rec-${String(index).padStart(8, "0")}`)!.logIndex);
			const [hash] = log.leafHashes(found, found + 1);
			const proof = await log.inclusionProof(found, SIZE);
			timings.push(Number(process.hrtime.bigint() - started) / 1e6);
			expect(verifyInclusion(hash, index, SIZE, proof, root)).toBe(true);
		}
		for (const older of [1, 1_000_000, 8_388_608, 9_999_999]) {
			const started = process.hrtime.bigint();
			const proof = await log.consistencyProof(older, SIZE);
			const olderRoot = await log.root(older);
			timings.push(Number(process.hrtime.bigint() - started) / 1e6);
			expect(olderRoot.equals(rootOf(older))).toBe(true);
			expect(verifyConsistency(older, SIZE, proof, olderRoot, root)).toBe(true);
		}
		timings.sort((a, b) => a - b);
		expect(timings[Math.floor(timings.length / 2)]).toBeLessThan(10);
		expect(timings[timings.length - 1]).toBeLessThan(50);
		db.close();
	}, 180_000);
});

describe("what an owner answers about its log (src/tlog/log-reads.ts)", () => {
	test("proofs only up to the latest checkpoint: a newer leaf waits for the next one; an older checkpoint's size gets its note", async () => {
		const db = new DatabaseSync(":memory:");
		const log = new SqliteLog(db, "reads_log");
		const publisher = new CheckpointPublisher(log, generateNoteSigner("test/reads"), {
			everyMs: 60_000,
			warn: () => undefined,
		});
		const reads = new LogReads(log, publisher, "reads");
		await expect(reads.inclusion(0)).rejects.toMatchObject({ type: "NO_CHECKPOINT" });
		transaction(db, () => log.append([leaf(0), leaf(1), leaf(2)]));
		const first = (await publisher.publish())!;
		transaction(db, () => log.append([leaf(3), leaf(4)]));
		// Leaf 4 is stored but no checkpoint covers it yet.
		await expect(reads.inclusion(4)).rejects.toMatchObject({
			type: "NOT_YET_CHECKPOINTED",
			data: { logIndex: 4, checkpointSize: 3 },
		});
		await expect(reads.consistency(1, 5)).rejects.toMatchObject({
			type: "INVALID_TREE_SIZE",
			data: { field: "to", value: 5 },
		});
		await publisher.publish();
		expect(await reads.inclusion(4)).toMatchObject({ treeSize: 5, logIndex: 4 });
		// An earlier checkpoint's size: its own note; a size nobody signed: the proof, no note.
		expect((await reads.inclusion(1, 3)).checkpoint).toBe(first.note);
		const unsigned = await reads.inclusion(1, 4);
		expect(unsigned.checkpoint).toBeNull();
		expect(
			verifyInclusion(
				leafHash(leaf(1)),
				1,
				4,
				unsigned.proof.map((h) => Buffer.from(h, "base64")),
				await log.root(4),
			),
		).toBe(true);
		expect((await reads.checkpoint()).verifierKey).toBe(publisher.verifierKey);
		db.close();
	});
});
