/**
 * The export read back line by line (importExport): every bad line is an ExportError naming
 * its file and line; leases carry expiresAt, which bounds a still-active lease in an audit of
 * the export. And the export is written safely: never over a file given as --out, never
 * through a planted link, never leaving a half file that looks complete.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { importSnapshot } from "../../src/audit/import";
import { ExportError, exportDb, importExport, writeExport } from "../../src/audit/export-files";
import { audit, type AuditReport } from "../../src/audit/rules";
import type { AuditSnapshot } from "../../src/audit/snapshot";
import { buildMiniRun, cloneSnapshot } from "../support/audit-fixture";

let snapshot: AuditSnapshot;
let tmp: string;

beforeAll(async () => {
	snapshot = (await buildMiniRun()).snapshot;
});
beforeEach(() => {
	tmp = fs.mkdtempSync(path.join(os.tmpdir(), "audit-export-"));
});
afterEach(() => {
	fs.rmSync(tmp, { recursive: true, force: true });
});

async function auditExport(dir: string): Promise<AuditReport> {
	const db = await importExport(dir);
	try {
		return await audit(db);
	} finally {
		db.close();
	}
}

const failing = (report: AuditReport) => report.rules.filter((r) => !r.ok).map((r) => r.rule);

describe("a corrupted export", () => {
	const corrupt = (file: string, line: string, at: "end" | "start" = "end") => {
		const name = path.join(tmp, file);
		const text = fs.readFileSync(name, "utf8");
		fs.writeFileSync(name, at === "end" ? text + line + "\n" : line + "\n" + text);
	};

	it.each([
		["records.jsonl", "null", /records\.jsonl:16 is not a JSON object \(got null\)$/],
		["records.jsonl", "42", /records\.jsonl:16 is not a JSON object \(got a number\)$/],
		[
			"signatures.jsonl",
			'["r-0001"]',
			/signatures\.jsonl:16 is not a JSON object \(got an array\)$/,
		],
		["batches.jsonl", '{"batchId": "b-1",', /batches\.jsonl:7 is not a JSON object: /],
		[
			"records.jsonl",
			'{"id": 7, "data": "x"}',
			/records\.jsonl:16 has no string "id" \(got 7\)$/,
		],
		[
			"leases.jsonl",
			'{"keyId": "key-000"}',
			/leases\.jsonl:7 has no string "leaseId" \(got nothing\)$/,
		],
	])(
		"%s with the line %s is an ExportError naming the file and line",
		async (file, line, message) => {
			await writeExport(snapshot, tmp);
			corrupt(file, line);
			const error = await importExport(tmp).catch((err: unknown) => err);
			expect(error).toBeInstanceOf(ExportError);
			expect((error as Error).message).toMatch(message);
			expect((error as Error).message).toContain(path.join(tmp, file));
		},
	);

	it("names the line of a bad line in the middle, blank lines counted", async () => {
		await writeExport(snapshot, tmp);
		corrupt("keys.jsonl", "\nnull", "start");
		await expect(importExport(tmp)).rejects.toThrow(
			/keys\.jsonl:2 is not a JSON object \(got null\)$/,
		);
	});

	it("names a bad run and a bad JWKS key", async () => {
		await writeExport(snapshot, tmp);
		fs.writeFileSync(path.join(tmp, "runs.json"), JSON.stringify([snapshot.runs[0], 42]));
		await expect(importExport(tmp)).rejects.toThrow(
			/runs\.json: entry 1 is not a JSON object \(got a number\)$/,
		);
		fs.writeFileSync(path.join(tmp, "jwks.json"), JSON.stringify({ keys: [null] }));
		await expect(importExport(tmp)).rejects.toThrow(
			/jwks\.json: keys\[0\] is not a JSON object$/,
		);
	});

	it("leaves no temporary files behind", async () => {
		await writeExport(snapshot, tmp);
		corrupt("signatures.jsonl", "null");
		const importTmp = fs.mkdtempSync(path.join(os.tmpdir(), "audit-import-parent-"));
		try {
			await expect(importExport(tmp, { tmpDir: importTmp })).rejects.toThrow(ExportError);
			expect(fs.readdirSync(importTmp)).toEqual([]);
		} finally {
			fs.rmSync(importTmp, { recursive: true, force: true });
		}
	});
});

describe("expiresAt in leases.jsonl", () => {
	/** The last lease to end, made still active: its signatures are bounded by its expiry. */
	function withActiveLease(): { broken: AuditSnapshot; leaseId: string } {
		const broken = cloneSnapshot(snapshot);
		const last = broken.leases.reduce((a, b) => ((a.endSeq ?? 0) > (b.endSeq ?? 0) ? a : b));
		Object.assign(last, { end: null, endSeq: null, endedAt: null });
		const signature = broken.signatures.find((s) => s.leaseId === last.leaseId)!;
		signature.signedAt = new Date(Date.parse(last.expiresAt!) + 2000).toISOString();
		return { broken, leaseId: last.leaseId };
	}

	it("is exported with each lease, after grantedAt as section 9 lists it", async () => {
		await writeExport(snapshot, tmp);
		const leases = fs
			.readFileSync(path.join(tmp, "leases.jsonl"), "utf8")
			.trimEnd()
			.split("\n")
			.map((line) => JSON.parse(line));
		expect(Object.keys(leases[0])).toEqual([
			"leaseId",
			"keyId",
			"holder",
			"grantSeq",
			"grantedAt",
			"expiresAt",
			"endSeq",
			"endedAt",
			"end",
		]);
		expect(leases.map((l) => l.expiresAt)).toEqual(snapshot.leases.map((l) => l.expiresAt));
		expect((await auditExport(tmp)).ok).toBe(true);
	});

	it("makes a signature after an active lease's expiry a violation in the audit of the export", async () => {
		const { broken, leaseId } = withActiveLease();
		await writeExport(broken, tmp);
		const report = await auditExport(tmp);
		expect(failing(report)).toEqual(["no-key-overlap"]);
		expect(report.violations[0].message).toMatch(
			new RegExp(
				`outside lease ${leaseId} of key key-00\\d \\(granted .*, expires ${broken.leases.find((l) => l.leaseId === leaseId)!.expiresAt}\\)$`,
			),
		);
	});

	it("is read as unknown from an export written before section 9 listed it: the grant alone bounds the lease", async () => {
		const { broken } = withActiveLease();
		await writeExport(broken, tmp);
		const file = path.join(tmp, "leases.jsonl");
		const old = fs
			.readFileSync(file, "utf8")
			.trimEnd()
			.split("\n")
			.map((line) => {
				const { expiresAt, ...lease } = JSON.parse(line);
				expect(expiresAt).toEqual(expect.any(String));
				return JSON.stringify(lease);
			});
		fs.writeFileSync(file, old.join("\n") + "\n");
		expect((await auditExport(tmp)).ok).toBe(true);
	});
});

describe("writing an export safely", () => {
	it("fails at once when --out is a file, and leaves it as it was", async () => {
		const file = path.join(tmp, "not-a-folder");
		fs.writeFileSync(file, "keep me");
		const db = importSnapshot(snapshot);
		try {
			const error = await exportDb(db, file).catch((err: unknown) => err);
			expect(error).toBeInstanceOf(ExportError);
			expect((error as Error).message).toBe(
				`${file} is a file, not a folder: name a folder to write the export into (it is created if needed)`,
			);
		} finally {
			db.close();
		}
		expect(fs.readFileSync(file, "utf8")).toBe("keep me");
	});

	it("never writes through a symbolic link planted in the output folder", async () => {
		const out = path.join(tmp, "out");
		fs.mkdirSync(out);
		const victim = path.join(tmp, "victim.txt");
		fs.writeFileSync(victim, "precious");
		fs.symlinkSync(victim, path.join(out, "signatures.jsonl"));
		const error = await writeExport(snapshot, out).catch((err: unknown) => err);
		expect(error).toBeInstanceOf(ExportError);
		expect((error as Error).message).toBe(
			`${path.join(out, "signatures.jsonl")} is a symbolic link: refusing to write the export through it (remove it, or choose another --out)`,
		);
		expect(fs.readFileSync(victim, "utf8")).toBe("precious");
		expect(fs.lstatSync(path.join(out, "signatures.jsonl")).isSymbolicLink()).toBe(true);
		// Nothing else was written either: the check comes before any file.
		expect(fs.readdirSync(out)).toEqual(["signatures.jsonl"]);
	});

	it("leaves the previous export whole and no temporary file when writing fails half way", async () => {
		await writeExport(snapshot, tmp);
		const before = Object.fromEntries(
			fs.readdirSync(tmp).map((f) => [f, fs.readFileSync(path.join(tmp, f), "utf8")]),
		);
		const changed = cloneSnapshot(snapshot);
		changed.records[0].data = "changed";
		const db = importSnapshot(changed);
		// The store goes away after records.jsonl and signatures.jsonl are written.
		const sql = new Proxy(db.sql, {
			get(target, property) {
				const value = Reflect.get(target, property);
				if (property !== "prepare")
					return typeof value === "function" ? value.bind(target) : value;
				return (text: string) => {
					if (text.includes("bat.batches")) throw new Error("disk I/O error");
					return target.prepare(text);
				};
			},
		});
		try {
			await expect(exportDb({ ...db, sql, close: () => db.close() }, tmp)).rejects.toThrow(
				/disk I\/O error/,
			);
		} finally {
			db.close();
		}
		expect(
			Object.fromEntries(
				fs.readdirSync(tmp).map((f) => [f, fs.readFileSync(path.join(tmp, f), "utf8")]),
			),
		).toEqual(before);
	});
});
