/**
 * The export of docs/design.md §8.3: exactly the contract's files and fields, nothing secret,
 * and an audit of the export reaches the same verdict as an audit of the snapshot it came from.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildMiniRun, cloneSnapshot } from "../support/audit-fixture";
import {
	EXPORT_FILES,
	ExportError,
	LOG_FILES,
	readExport,
	writeExport,
} from "../../src/audit/export-files";
import { auditSnapshot, type AuditReport } from "../../src/audit/rules";
import { EXPORT_FIELDS, type AuditSnapshot } from "../../src/audit/snapshot";

let snapshot: AuditSnapshot;
let tmp: string;

beforeAll(async () => {
	snapshot = (await buildMiniRun()).snapshot;
});
beforeEach(() => {
	tmp = fs.mkdtempSync(path.join(os.tmpdir(), "export-test-"));
});
afterEach(() => {
	fs.rmSync(tmp, { recursive: true, force: true });
});

/** What the export holds of a snapshot: all of it, `expiresAt` included since docs/design.md §8.3 lists it. */
function asExported(source: AuditSnapshot): AuditSnapshot {
	return cloneSnapshot(source);
}

const lines = (file: string) =>
	fs
		.readFileSync(file, "utf8")
		.trimEnd()
		.split("\n")
		.map((line) => JSON.parse(line));
const verdict = (report: AuditReport) => report.rules.map((r) => `${r.rule}:${r.violations}`);

describe("writeExport / readExport", () => {
	it("round-trips a snapshot", async () => {
		const dir = path.join(tmp, "nested", "out");
		const written = await writeExport(snapshot, dir);
		expect(written).toEqual({
			dir,
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
		expect(await readExport(dir)).toEqual(asExported(snapshot));
	});

	it("writes exactly the contract's files and fields, one JSON object per line", async () => {
		await writeExport(snapshot, tmp);
		expect(fs.readdirSync(tmp).sort()).toEqual(
			[...Object.values(EXPORT_FILES), ...Object.values(LOG_FILES)].sort(),
		);
		for (const collection of ["records", "signatures", "batches", "leases", "keys"] as const) {
			const docs = lines(path.join(tmp, EXPORT_FILES[collection]));
			expect(docs).toHaveLength(snapshot[collection].length);
			for (const doc of docs)
				expect(Object.keys(doc)).toEqual([...EXPORT_FIELDS[collection]]);
		}
		const runs = JSON.parse(fs.readFileSync(path.join(tmp, "runs.json"), "utf8"));
		expect(runs.map((run: object) => Object.keys(run))).toEqual(
			snapshot.runs.map(() => [...EXPORT_FIELDS.runs]),
		);
		const jwks = JSON.parse(fs.readFileSync(path.join(tmp, "jwks.json"), "utf8"));
		expect(jwks.keys.map((k: { kid: string }) => k.kid)).toEqual([
			"key-000",
			"key-001",
			"key-002",
		]);
		for (const jwk of jwks.keys)
			expect(Object.keys(jwk).sort()).toEqual(["crv", "kid", "kty", "x"]);
		// Ids are strings and times ISO-8601 UTC.
		const [batch] = lines(path.join(tmp, "batches.jsonl"));
		expect(batch.recordIds.every((id: unknown) => typeof id === "string")).toBe(true);
		expect(batch.startedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
	});

	it("never writes private or stored-only fields, even when handed them", async () => {
		const leaky = cloneSnapshot(snapshot) as unknown as Record<
			string,
			Array<Record<string, unknown>>
		> & { jwks: { keys: Array<Record<string, unknown>> } };
		leaky.keys[0].sealedPrivateKey = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.SECRET";
		leaky.keys[0].publicJwk = { kty: "OKP" };
		leaky.signatures[0]._id = "r-0001";
		leaky.jwks.keys[0] = { ...leaky.jwks.keys[0], d: "cHJpdmF0ZS1rZXktbWF0ZXJpYWw" };
		await writeExport(leaky as unknown as AuditSnapshot, tmp);
		for (const file of fs.readdirSync(tmp)) {
			const text = fs.readFileSync(path.join(tmp, file), "utf8");
			expect(text).not.toMatch(
				/sealedPrivateKey|SECRET|publicJwk|"_id"|"d"\s*:|cHJpdmF0ZS1rZXktbWF0ZXJpYWw/,
			);
		}
	});

	it("names the missing file when the folder is not an export", async () => {
		await writeExport(snapshot, tmp);
		fs.rmSync(path.join(tmp, "leases.jsonl"));
		await expect(readExport(tmp)).rejects.toThrow(ExportError);
		await expect(readExport(tmp)).rejects.toThrow(/is not an export: missing leases\.jsonl/);
		await expect(readExport(path.join(tmp, "nope"))).rejects.toThrow(/is not a directory/);
	});

	it("names the file and line of a broken JSON line", async () => {
		await writeExport(snapshot, tmp);
		fs.appendFileSync(path.join(tmp, "signatures.jsonl"), "{not json\n");
		await expect(readExport(tmp)).rejects.toThrow(/signatures\.jsonl:16 is not a JSON object/);
	});
});

describe("auditing an export", () => {
	it("passes when the snapshot passes", async () => {
		await writeExport(snapshot, tmp);
		const report = await auditSnapshot(await readExport(tmp));
		expect(report.ok).toBe(true);
		expect(report.checked).toEqual((await auditSnapshot(snapshot)).checked);
	});

	it("fails the same way as the snapshot it came from", async () => {
		const broken = cloneSnapshot(snapshot);
		broken.signatures.push({ ...broken.signatures[2] });
		broken.signatures = broken.signatures.filter((s) => s.recordId !== "r-0009");
		broken.records.find((r) => r.id === "r-0012")!.data = "tampered";
		broken.runs[1].batchSize = 2;
		broken.leases[3].keyId = broken.leases[4].keyId;
		const direct = await auditSnapshot(broken);
		await writeExport(broken, tmp);
		const fromExport = await auditSnapshot(await readExport(tmp));
		expect(direct.ok).toBe(false);
		expect(verdict(fromExport)).toEqual(verdict(direct));
		expect(fromExport.violations).toEqual(direct.violations);
	});
});
