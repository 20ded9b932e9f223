/**
 * Group commit (src/store/sqlite.ts): writes asked for together are committed in one
 * transaction, each caller answered once it committed, and a write that fails fails alone.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { GroupCommit } from "../../src/store/sqlite";

let dir: string;
let db: DatabaseSync;

beforeEach(() => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "group-commit-"));
	db = new DatabaseSync(path.join(dir, "test.sqlite"));
	db.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER)");
});

afterEach(() => {
	db.close();
	fs.rmSync(dir, { recursive: true, force: true });
});

const rows = () => db.prepare("SELECT id, n FROM t ORDER BY id").all();
const insert = (id: string, n: number) => () =>
	Number(db.prepare("INSERT INTO t (id, n) VALUES (?, ?)").run(id, n).changes);

test("writes asked for together commit in one transaction, in the order asked", async () => {
	const writes = new GroupCommit(db);
	const begun = jest.spyOn(db, "exec");
	const answers = await Promise.all(
		[insert("a", 1), insert("b", 2), insert("c", 3)].map((w) => writes.run(w)),
	);
	expect(answers).toEqual([1, 1, 1]);
	expect(rows()).toEqual([
		{ id: "a", n: 1 },
		{ id: "b", n: 2 },
		{ id: "c", n: 3 },
	]);
	// One transaction for the three: one BEGIN, one COMMIT.
	const statements = begun.mock.calls.map(([sql]) => sql);
	expect(statements.filter((sql) => /^BEGIN/.test(sql))).toHaveLength(1);
	expect(statements.filter((sql) => sql === "COMMIT")).toHaveLength(1);
	// Asked in two turns of the event loop: two transactions.
	await writes.run(insert("d", 4));
	await writes.run(insert("e", 5));
	expect(begun.mock.calls.filter(([sql]) => /^BEGIN/.test(sql))).toHaveLength(3);
});

test("a write that fails fails alone, and leaves nothing of itself", async () => {
	const writes = new GroupCommit(db);
	const twoStatements = () => {
		db.prepare("INSERT INTO t (id, n) VALUES (?, ?)").run("half", 9);
		// A duplicate key: the whole write must be undone, its first insert included.
		return db.prepare("INSERT INTO t (id, n) VALUES (?, ?)").run("x", 0);
	};
	const outcomes = await Promise.allSettled([
		writes.run(insert("x", 1)),
		writes.run(twoStatements),
		writes.run(insert("y", 2)),
	]);
	expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
	expect(String((outcomes[1] as PromiseRejectedResult).reason)).toMatch(/UNIQUE/);
	expect(rows()).toEqual([
		{ id: "x", n: 1 },
		{ id: "y", n: 2 },
	]);
});

test("flush makes the waiting writes at once (before a close)", async () => {
	const writes = new GroupCommit(db);
	const pending = writes.run(insert("z", 7));
	writes.flush();
	expect(rows()).toEqual([{ id: "z", n: 7 }]);
	await expect(pending).resolves.toBe(1);
});
