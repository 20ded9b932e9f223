/**
 * `npm run audit` and `npm run export` on the embedded store's files (dist/, as users run
 * them): no service started, with or without an owner holding the files, exit codes 0/1/2/3,
 * and the export's safety checks seen from the command line.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildMiniRun, openStoreFile, writeStoreFiles } from "../support/audit-fixture";
import { runCli } from "../support/cli";

let root: string;
let dataDir: string;

/** node:sqlite's ExperimentalWarning is Node's to print: kept off stderr here as the npm scripts should. */
const QUIET = {
	NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --disable-warning=ExperimentalWarning`,
};
const env = (extra: Record<string, string> = {}) => ({ DATA_DIR: dataDir, ...QUIET, ...extra });

beforeAll(async () => {
	root = fs.mkdtempSync(path.join(os.tmpdir(), "audit-files-cli-"));
	dataDir = path.join(root, "data");
	writeStoreFiles((await buildMiniRun()).snapshot, dataDir);
});
afterAll(() => {
	fs.rmSync(root, { recursive: true, force: true });
});

describe("npm run audit on the store's files", () => {
	it("passes and exits 0 while an owner holds the files open", async () => {
		const owner = openStoreFile(dataDir, "records");
		try {
			const result = await runCli("audit.js", [], env());
			expect(result.stderr).toBe("");
			expect(result.code).toBe(0);
			expect(result.stdout).toContain(`Audit of embedded store in ${dataDir}`);
			expect(result.stdout).toMatch(
				/15 records, 15 signatures, 6 batches, 6 leases, 3 keys, 2 runs/,
			);
			expect(result.stdout).toMatch(/Audit PASSED/);
		} finally {
			owner.close();
		}
	});

	it("prints JSON with --json and takes --data-dir over DATA_DIR", async () => {
		const result = await runCli(
			"audit.js",
			["--json", "--data-dir", dataDir],
			env({ DATA_DIR: path.join(root, "elsewhere") }),
		);
		expect(result.code).toBe(0);
		const report = JSON.parse(result.stdout);
		expect(report).toMatchObject({
			source: `embedded store in ${dataDir}`,
			ok: true,
			violationCount: 0,
		});
		expect(fs.existsSync(path.join(root, "elsewhere"))).toBe(false);
	});

	it("exits 1 naming the violation", async () => {
		const owner = openStoreFile(dataDir, "records");
		const { data } = owner.prepare("SELECT data FROM records WHERE id = 'r-0004'").get() as {
			data: string;
		};
		owner.prepare("UPDATE records SET data = 'tampered' WHERE id = 'r-0004'").run();
		try {
			const result = await runCli("audit.js", ["--max-listed", "5"], env());
			expect(result.code).toBe(1);
			expect(result.stdout).toContain("FAIL signature-verifies (1 violation)");
			expect(result.stdout).toMatch(/signature of record r-0004 does not verify/);
		} finally {
			owner.prepare("UPDATE records SET data = ? WHERE id = 'r-0004'").run(data);
			owner.close();
		}
	});

	it("exits 3 when every rule holds but the last run has not completed its records", async () => {
		const records = openStoreFile(dataDir, "records");
		const batcher = openStoreFile(dataDir, "batcher");
		records.prepare("INSERT INTO records (id, data) VALUES ('r-9000', 'new')").run();
		batcher
			.prepare(
				"INSERT INTO runs (runId, batchSize, status, startedAt) VALUES ('run-late', 5, 'cancelled', '2999-01-01T00:00:00.000Z')",
			)
			.run();
		try {
			const result = await runCli("audit.js", [], env());
			expect(result.code).toBe(3);
			expect(result.stdout).toContain(
				"UNSIGNED 1 record: run run-late is cancelled, so they are work not done yet, not violations",
			);
			expect(result.stdout).toContain("PASS one-signature-per-record");
		} finally {
			records.prepare("DELETE FROM records WHERE id = 'r-9000'").run();
			batcher.prepare("DELETE FROM runs WHERE runId = 'run-late'").run();
			records.close();
			batcher.close();
		}
	});

	it("exits 2 with one line when there is no store, and creates none", async () => {
		const empty = path.join(root, "empty");
		fs.mkdirSync(empty);
		const result = await runCli("audit.js", [], env({ DATA_DIR: empty }));
		expect(result.code).toBe(2);
		expect(result.stdout).toBe("");
		expect(result.stderr).toBe(
			`audit: No embedded store in ${empty} (missing records.sqlite, batcher.sqlite, keyring.sqlite): run npm start first, or pass --data-dir\n`,
		);
		expect(fs.readdirSync(empty)).toEqual([]);
	});
});

describe("npm run export on the store's files", () => {
	it("fails at once when --out is a file, before reading any store", async () => {
		const file = path.join(root, "a-file");
		fs.writeFileSync(file, "keep me");
		const result = await runCli(
			"export.js",
			["--out", file],
			env({ DATA_DIR: path.join(root, "no-store-here") }),
		);
		expect(result.code).toBe(2);
		expect(result.stderr).toBe(
			`export: ${file} is a file, not a folder: name a folder to write the export into (it is created if needed)\n`,
		);
		expect(fs.readFileSync(file, "utf8")).toBe("keep me");
		expect(fs.existsSync(path.join(root, "no-store-here"))).toBe(false);
	});

	it("refuses a symbolic link planted in the output folder", async () => {
		const out = path.join(root, "planted");
		fs.mkdirSync(out);
		const victim = path.join(root, "victim");
		fs.writeFileSync(victim, "precious");
		fs.symlinkSync(victim, path.join(out, "records.jsonl"));
		const result = await runCli("export.js", ["--out", out], env());
		expect(result.code).toBe(2);
		expect(result.stderr).toContain(
			`${path.join(out, "records.jsonl")} is a symbolic link: refusing to write the export through it`,
		);
		expect(fs.readFileSync(victim, "utf8")).toBe("precious");
	});

	it("writes an export that audits clean, and a corrupted one is an error naming its line", async () => {
		const out = path.join(root, "export");
		const exported = await runCli("export.js", ["--out", out], env());
		expect(exported.stderr).toBe("");
		expect(exported.code).toBe(0);
		expect(exported.stdout).toBe(
			`Exported embedded store in ${dataDir} to ${out}: 15 records, 15 signatures, 6 batches, 6 leases, 3 keys (public JWKS), 2 runs\n`,
		);
		expect((await runCli("audit.js", ["--from", out], QUIET)).code).toBe(0);

		fs.appendFileSync(path.join(out, "records.jsonl"), "null\n");
		const audited = await runCli("audit.js", ["--from", out], QUIET);
		expect(audited.code).toBe(2);
		expect(audited.stderr).toBe(
			`audit: ${path.join(out, "records.jsonl")}:16 is not a JSON object (got null)\n`,
		);
	});
});
