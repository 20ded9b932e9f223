/**
 * The audit's threads on a 5,000-record store with real Ed25519 signatures: the ranges cover
 * every record and signature whatever their size, a tampered signature is caught, and the
 * verification floor counts the same signatures.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { verifyFloor } from "../../src/audit/verify-floor";
import { auditStoreFiles, openStoreFile, writeSignedStore } from "../support/audit-fixture";

let dataDir: string;

beforeAll(() => {
	dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "audit-workers-"));
	writeSignedStore(dataDir, { records: 5000, keys: 7, batchSize: 128 });
});
afterAll(() => {
	fs.rmSync(dataDir, { recursive: true, force: true });
});

const auditStore = (options: Parameters<typeof auditStoreFiles>[1] = {}) =>
	auditStoreFiles(dataDir, options);

function tamper(sql: string, ...params: string[]): void {
	const db = openStoreFile(dataDir, "records");
	try {
		db.prepare(sql).run(...params);
	} finally {
		db.close();
	}
}

describe("the audit's threads", () => {
	it("pass a consistent store, checking every record once whatever the range size", async () => {
		for (const rangeSize of [5000, 333, 64]) {
			const report = await auditStore({ rangeSize, threads: 2 });
			expect(report.violations).toEqual([]);
			expect(report.checked).toEqual({
				records: 5000,
				signatures: 5000,
				batches: 40,
				leases: 40,
				keys: 7,
				runs: 1,
			});
		}
	});

	it("catch one tampered signature among 5,000, and the floor counts it invalid", async () => {
		const db = openStoreFile(dataDir, "records");
		const row = db.prepare("SELECT jws FROM signatures WHERE recordId = 'r-3217'").get() as {
			jws: string;
		};
		db.close();
		const [protectedHeader, , bytes] = row.jws.split(".");
		const flipped = Buffer.from(bytes, "base64url");
		flipped[10] ^= 0x01;
		tamper(
			"UPDATE signatures SET jws = ? WHERE recordId = 'r-3217'",
			`${protectedHeader}..${flipped.toString("base64url")}`,
		);

		const report = await auditStore({ rangeSize: 250 });
		expect(report.ok).toBe(false);
		expect(report.rules.filter((r) => !r.ok).map((r) => r.rule)).toEqual([
			"signature-verifies",
		]);
		expect(report.violations).toEqual([
			{
				rule: "signature-verifies",
				message: expect.stringMatching(
					/^signature of record r-3217 does not verify against key key-00\d \(batch batch-000026, key key-00\d, lease lease-000026\)$/,
				),
				ids: expect.objectContaining({ recordId: "r-3217" }),
			},
		]);
		expect(report.checked.signatures).toBe(5000);

		const floor = await verifyFloor(dataDir, { rangeSize: 700 });
		expect(floor).toMatchObject({ signatures: 5000, valid: 4999 });
		expect(floor.seconds).toBeGreaterThan(0);
	});
});
