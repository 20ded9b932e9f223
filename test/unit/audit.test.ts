/**
 * The audit rules on real Ed25519 keys and real jose signatures: a consistent mini-run passes,
 * and each corruption is reported under its rule's name.
 */
import { compactVerify, importJWK } from "jose";
import { buildMiniRun, cloneSnapshot, type MiniRun } from "../support/audit-fixture";
import { auditSnapshot, RULES, type AuditReport, type RuleName } from "../../src/audit/rules";
import { formatReport } from "../../src/audit/format";
import type { AuditSnapshot, SnapshotLease } from "../../src/audit/snapshot";

const failing = (report: AuditReport): RuleName[] =>
	report.rules.filter((r) => !r.ok).map((r) => r.rule);
const messages = (report: AuditReport, rule: RuleName): string[] =>
	report.violations.filter((v) => v.rule === rule).map((v) => v.message);

let mini: MiniRun;
let base: AuditSnapshot;
let copy: AuditSnapshot;

beforeAll(async () => {
	mini = await buildMiniRun();
	base = mini.snapshot;
});
beforeEach(() => {
	copy = cloneSnapshot(base);
});

const signatureOf = (snapshot: AuditSnapshot, recordId: string) =>
	snapshot.signatures.find((s) => s.recordId === recordId)!;
const leaseOf = (snapshot: AuditSnapshot, leaseId: string) =>
	snapshot.leases.find((l) => l.leaseId === leaseId)!;

describe("a consistent mini-run", () => {
	it("passes every rule", async () => {
		const report = await auditSnapshot(base);
		expect(report.violations).toEqual([]);
		expect(report.ok).toBe(true);
		expect(report.rules.map((r) => r.rule)).toEqual([...RULES]);
		expect(report.checked).toEqual({
			records: 15,
			signatures: 15,
			batches: 6,
			leases: 6,
			keys: 3,
			runs: 2,
		});
		// The fixture has what a real store has: a failed batch with no key recorded, retried as attempt 2.
		expect(base.batches[0]).toMatchObject({ status: "failed", keyId: null, leaseId: null });
		expect(base.batches[1]).toMatchObject({ attempt: 2, recordIds: base.batches[0].recordIds });
		expect(formatReport(report, "test")).toContain("Audit PASSED");
	});

	it("signs in the contract's format, which a third party verifies with jose alone", async () => {
		const signature = signatureOf(base, "r-0002");
		const record = base.records.find((r) => r.id === "r-0002")!;
		const [header, , sig] = signature.jws.split(".");
		const payload = Buffer.from(JSON.stringify({ id: record.id, data: record.data })).toString(
			"base64url",
		);
		const jwk = base.jwks.keys.find((k) => k.kid === signature.keyId)!;
		const { protectedHeader } = await compactVerify(
			`${header}.${payload}.${sig}`,
			await importJWK(jwk, "EdDSA"),
		);
		expect(protectedHeader).toEqual({ alg: "EdDSA", kid: signature.keyId });
	});
});

describe("one-signature-per-record", () => {
	it("names a record signed twice and both signatures", async () => {
		copy.signatures.push({ ...signatureOf(copy, "r-0003") });
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["one-signature-per-record"]);
		expect(report.violations[0].ids?.recordId).toBe("r-0003");
		expect(report.violations[0].message).toMatch(/r-0003 has 2 signatures/);
	});

	it("names a record with no signature", async () => {
		copy.signatures = copy.signatures.filter((s) => s.recordId !== "r-0007");
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["one-signature-per-record"]);
		expect(report.violations).toEqual([
			{
				rule: "one-signature-per-record",
				message: "record r-0007 has no signature",
				ids: { recordId: "r-0007" },
			},
		]);
	});

	it("names a signature of an unknown record", async () => {
		copy.records = copy.records.filter((r) => r.id !== "r-0005");
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["one-signature-per-record"]);
		expect(messages(report, "one-signature-per-record")[0]).toMatch(/unknown record r-0005/);
	});
});

describe("signature-verifies", () => {
	it("catches tampered record data", async () => {
		copy.records.find((r) => r.id === "r-0004")!.data += "!";
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["signature-verifies"]);
		expect(report.violations).toHaveLength(1);
		expect(report.violations[0]).toMatchObject({ ids: { recordId: "r-0004" } });
		expect(report.violations[0].message).toMatch(/does not verify/);
	});

	it("catches a signature made with another key than its kid says", async () => {
		const signature = signatureOf(copy, "r-0001");
		const other = copy.keys.map((k) => k.keyId).find((k) => k !== signature.keyId)!;
		const record = copy.records.find((r) => r.id === "r-0001")!;
		signature.jws = await mini.sign(other, record.id, record.data, signature.keyId);
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["signature-verifies"]);
		expect(messages(report, "signature-verifies")).toEqual([
			expect.stringMatching(/r-0001 does not verify against key/),
		]);
	});

	it("catches a kid that is not the signature's keyId", async () => {
		const signature = signatureOf(copy, "r-0001");
		const other = copy.keys.map((k) => k.keyId).find((k) => k !== signature.keyId)!;
		const record = copy.records.find((r) => r.id === "r-0001")!;
		signature.jws = await mini.sign(other, record.id, record.data);
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["signature-verifies"]);
		expect(messages(report, "signature-verifies")[0]).toMatch(/kid "key-\d+" but keyId/);
	});

	it("catches a signature that is not detached", async () => {
		const signature = signatureOf(copy, "r-0008");
		const [header, , sig] = signature.jws.split(".");
		signature.jws = `${header}.e30.${sig}`;
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["signature-verifies"]);
		expect(messages(report, "signature-verifies")[0]).toMatch(/not a detached compact JWS/);
	});

	it("catches a key missing from the JWKS and a JWKS key with private material", async () => {
		const used = signatureOf(copy, "r-0001").keyId;
		copy.jwks.keys = copy.jwks.keys.filter((k) => k.kid !== used);
		copy.jwks.keys[0] = { ...copy.jwks.keys[0], d: "AAAA" };
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["signature-verifies"]);
		const found = messages(report, "signature-verifies");
		expect(found).toContain(`key ${used} has no public key in the JWKS`);
		expect(found.some((m) => /carries private key material/.test(m))).toBe(true);
		expect(
			found.some((m) => m.includes(`names key ${used}, which has no usable public key`)),
		).toBe(true);
	});

	it("verifies many signatures in bounded chunks and counts every failure", async () => {
		const big = await buildMiniRun({
			keys: 4,
			runs: [{ batchSize: 40, records: 600 }],
			window: 3,
		});
		expect((await auditSnapshot(big.snapshot, { rangeSize: 64 })).ok).toBe(true);
		for (const id of ["r-0010", "r-0300", "r-0599"])
			big.snapshot.records.find((r) => r.id === id)!.data = "tampered";
		const report = await auditSnapshot(big.snapshot, { rangeSize: 64 });
		expect(failing(report)).toEqual(["signature-verifies"]);
		expect(report.violations.map((v) => v.ids?.recordId)).toEqual([
			"r-0010",
			"r-0300",
			"r-0599",
		]);
	});
});

describe("one-key-per-batch", () => {
	it("catches a batch whose signatures use two keys", async () => {
		// batch-0002 and batch-0003 were signed at the same time under their own leases.
		const a = copy.batches.find((b) => b.batchId === "batch-0002")!;
		const b = copy.batches.find((b) => b.batchId === "batch-0003")!;
		const signature = signatureOf(copy, a.recordIds[0]);
		const record = copy.records.find((r) => r.id === signature.recordId)!;
		Object.assign(signature, {
			keyId: b.keyId,
			leaseId: b.leaseId,
			jws: await mini.sign(b.keyId!, record.id, record.data),
		});
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["one-key-per-batch"]);
		const found = messages(report, "one-key-per-batch");
		expect(found).toContain(
			`batch batch-0002 has signatures made with 2 keys: ${[a.keyId, b.keyId].sort().join(", ")}`,
		);
		expect(
			found.some((m) =>
				m.startsWith(
					`batch batch-0002 records key ${a.keyId} but its signatures use ${b.keyId}`,
				),
			),
		).toBe(true);
	});

	it("catches a batch doc whose key differs from its signatures'", async () => {
		const batch = copy.batches.find((b) => b.batchId === "batch-0004")!;
		const signedWith = batch.keyId;
		batch.keyId = copy.keys.map((k) => k.keyId).find((k) => k !== batch.keyId)!;
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["one-key-per-batch"]);
		expect(messages(report, "one-key-per-batch")).toEqual([
			`batch batch-0004 records key ${batch.keyId} and lease ${batch.leaseId}, which is a lease of key ${signedWith}`,
			`batch batch-0004 records key ${batch.keyId} but its signatures use ${signedWith}`,
		]);
	});

	it("catches a batch doc whose lease is of another key than the batch records", async () => {
		const batch = copy.batches.find((b) => b.batchId === "batch-0001")!;
		batch.keyId = "key-002";
		batch.leaseId = copy.leases.find((l) => l.keyId !== "key-002")!.leaseId;
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["one-key-per-batch"]);
		expect(messages(report, "one-key-per-batch")[0]).toMatch(
			/^batch batch-0001 records key key-002 and lease .*, which is a lease of key key-00[01]$/,
		);
	});

	it("catches a failed batch with no key whose records are signed under it: a reply lost, not settled from its signatures", async () => {
		// What a batcher that took a lost reply for a failure wrote: batch-0002 signed, recorded as failed with no key.
		const batch = copy.batches.find((b) => b.batchId === "batch-0002")!;
		const { keyId, leaseId } = batch;
		Object.assign(batch, { status: "failed", keyId: null, leaseId: null });
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["one-key-per-batch"]);
		expect(messages(report, "one-key-per-batch")).toEqual([
			`batch batch-0002 records no key but its signatures use ${keyId}`,
			`batch batch-0002 records no lease but its signatures use ${leaseId}`,
			`batch batch-0002 is recorded "failed" but ${batch.recordIds.length} of its ${batch.recordIds.length} records are signed under it`,
		]);
	});

	it("catches a partial batch with nothing or everything signed under it, and a status no batch has", async () => {
		Object.assign(
			copy.batches.find((b) => b.batchId === "batch-0001")!,
			{ status: "partial" },
		);
		Object.assign(
			copy.batches.find((b) => b.batchId === "batch-0002")!,
			{ status: "partial" },
		);
		Object.assign(
			copy.batches.find((b) => b.batchId === "batch-0003")!,
			{ status: "done" },
		);
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["one-key-per-batch"]);
		expect(messages(report, "one-key-per-batch")).toEqual([
			`batch batch-0001 is recorded "partial" but none of its records is signed under it`,
			expect.stringMatching(
				/^batch batch-0002 is recorded "partial" but all \d+ of its records are signed under it$/,
			),
			`batch batch-0003 is recorded "done" but that is not a status a batch can have`,
		]);
	});

	it("a pending batch is in flight: its signatures need not match a key it has not learnt yet, but only a running run may have one", async () => {
		const batch = copy.batches.find((b) => b.batchId === "batch-0002")!;
		Object.assign(batch, { status: "pending", keyId: null, leaseId: null, finishedAt: null });
		const run = copy.runs.find((r) => r.runId === batch.runId)!;
		run.status = "running";
		expect((await auditSnapshot(copy)).violations).toEqual([]);
		run.status = "completed";
		const report = await auditSnapshot(copy);
		expect(messages(report, "one-key-per-batch")).toEqual([
			`batch batch-0002 is still pending, but its run ${run.runId} is not running`,
		]);
	});

	it("catches a batch that claims more stored signatures than stand under it (counted from a signer's word)", async () => {
		const batch = copy.batches.find((b) => b.batchId === "batch-0003")!;
		const under = copy.signatures.filter((s) => s.batchId === "batch-0003").length;
		batch.stored = under;
		expect((await auditSnapshot(copy)).violations).toEqual([]);
		batch.stored = under + 100;
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["one-key-per-batch"]);
		expect(messages(report, "one-key-per-batch")).toEqual([
			`batch batch-0003 claims ${under + 100} stored signatures but ${under} stand under it`,
		]);
	});

	it("catches a signature naming a batch that does not hold its record", async () => {
		signatureOf(copy, "r-0001").batchId = "batch-0006";
		const report = await auditSnapshot(copy);
		expect(failing(report)).toContain("one-key-per-batch");
		expect(messages(report, "one-key-per-batch")[0]).toMatch(
			/names batch batch-0006, which does not contain that record/,
		);
	});
});

describe("no-key-overlap", () => {
	it("catches two active leases of one key", async () => {
		const last = copy.leases.reduce((a, b) => ((a.endSeq ?? 0) > (b.endSeq ?? 0) ? a : b));
		const maxSeq = last.endSeq!;
		Object.assign(last, { end: null, endSeq: null, endedAt: null });
		const second: SnapshotLease = {
			leaseId: "lease-9999",
			keyId: last.keyId,
			holder: "signer-9",
			grantSeq: maxSeq + 1,
			grantedAt: new Date(Date.parse(last.grantedAt) + 1000).toISOString(),
			endSeq: null,
			endedAt: null,
			end: null,
			expiresAt: new Date(Date.parse(last.grantedAt) + 31_000).toISOString(),
		};
		copy.leases.push(second);
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["no-key-overlap"]);
		expect(messages(report, "no-key-overlap")).toEqual([
			`lease lease-9999 (seq ${maxSeq + 1}) granted key ${last.keyId}, which was not free (held by lease ${last.leaseId})`,
		]);
	});

	it("catches a signature made after its lease ended, beyond the clock tolerance", async () => {
		const signature = signatureOf(copy, "r-0010");
		const lease = leaseOf(copy, signature.leaseId);
		signature.signedAt = new Date(Date.parse(lease.endedAt!) + 5000).toISOString();
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["no-key-overlap"]);
		expect(messages(report, "no-key-overlap")[0]).toMatch(
			/r-0010 was made at .*, outside lease/,
		);
		// Within the tolerance it is accepted: signers and the keyring have different clocks.
		expect((await auditSnapshot(copy, { clockToleranceMs: 6000 })).ok).toBe(true);
	});

	it("catches a signature under a lease of another key", async () => {
		const signature = signatureOf(copy, "r-0011");
		signature.leaseId = copy.leases.find((l) => l.keyId !== signature.keyId)!.leaseId;
		const report = await auditSnapshot(copy);
		expect(failing(report)).toContain("no-key-overlap");
		expect(messages(report, "no-key-overlap")[0]).toMatch(
			/r-0011 is made with key .* under lease .*, which is a lease of key/,
		);
	});

	it("bounds a still-active lease by its expiry when the store knows it", async () => {
		const last = copy.leases.reduce((a, b) => ((a.endSeq ?? 0) > (b.endSeq ?? 0) ? a : b));
		Object.assign(last, { end: null, endSeq: null, endedAt: null });
		expect((await auditSnapshot(copy)).ok).toBe(true);
		const signature = copy.signatures.find((s) => s.leaseId === last.leaseId)!;
		signature.signedAt = new Date(Date.parse(last.expiresAt!) + 2000).toISOString();
		expect(failing(await auditSnapshot(copy))).toEqual(["no-key-overlap"]);
	});

	it("catches a lease ended before it was granted and a reused seq", async () => {
		const [first] = copy.leases;
		first.endSeq = first.grantSeq;
		const report = await auditSnapshot(copy);
		expect(failing(report)).toContain("no-key-overlap");
		const found = messages(report, "no-key-overlap");
		expect(found).toContain(
			`seq ${first.grantSeq} is used by both lease ${first.leaseId} and lease ${first.leaseId}; the lease log must be totally ordered`,
		);
		expect(found).toContain(
			`lease ${first.leaseId} ends at seq ${first.grantSeq}, not after its grant at seq ${first.grantSeq}`,
		);
	});
});

describe("lru-order", () => {
	it("catches a grant that skipped the least recently used free key", async () => {
		// Grant 3 is the first of run 2, when the free queue is key-000, key-001, key-002.
		const skewed = await buildMiniRun({
			chooseKey: (free, n) => (n === 3 ? free[1] : free[0]),
		});
		const report = await auditSnapshot(skewed.snapshot);
		expect(failing(report)).toEqual(["lru-order"]);
		expect(report.violations).toHaveLength(1);
		expect(report.violations[0].message).toMatch(
			/^lease lease-0004 \(seq \d+\) was granted key key-001 while key-000 was the least recently used free key$/,
		);
	});

	it("catches a never-used key granted out of order", async () => {
		const skewed = await buildMiniRun({
			chooseKey: (free, n) => (n === 0 ? free[2] : free[0]),
		});
		const report = await auditSnapshot(skewed.snapshot);
		expect(failing(report)).toEqual(["lru-order"]);
		expect(report.violations[0].ids).toMatchObject({ keyId: "key-002", expected: "key-000" });
	});
});

describe("batch-size", () => {
	it("catches a batch larger than its run's batch size", async () => {
		copy.runs[1].batchSize = 2;
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["batch-size"]);
		expect(messages(report, "batch-size")).toContain(
			"batch batch-0004 has 3 records, more than run run-2's batch size 2",
		);
		expect(report.rules.find((r) => r.rule === "batch-size")!.violations).toBe(3);
	});

	it("catches a run with two batch sizes", async () => {
		copy.runs.push({ ...copy.runs[1], batchSize: 5 });
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["batch-size"]);
		expect(messages(report, "batch-size")).toEqual(["run run-2 has 2 batch sizes: 3, 5"]);
	});

	it("catches a batch of an unknown run", async () => {
		copy.batches[5].runId = "run-404";
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["batch-size"]);
		expect(messages(report, "batch-size")).toEqual([
			`batch ${copy.batches[5].batchId} names unknown run run-404`,
		]);
	});
});

describe("the report", () => {
	it("lists at most maxListedPerRule violations per rule but counts them all", async () => {
		copy.signatures = [];
		const report = await auditSnapshot(copy, { maxListedPerRule: 4 });
		const rule = report.rules.find((r) => r.rule === "one-signature-per-record")!;
		expect(rule).toEqual({
			rule: "one-signature-per-record",
			ok: false,
			violations: 15,
			listed: 4,
		});
		expect(report.violations).toHaveLength(4);
		expect(report.violationCount).toBe(15);
		const text = formatReport(report, "test");
		expect(text).toContain("FAIL one-signature-per-record (15 violations)");
		expect(text).toContain("... and 11 more");
		expect(text).toContain("PASS lru-order");
		expect(text).toMatch(/Audit FAILED: 15 violations of one-signature-per-record/);
	});
});

describe("a source with no transparency logs (an audit over NATS, a store from before them)", () => {
	it("says the log rules were not checked, rather than that they passed", async () => {
		const report = await auditSnapshot(copy);
		expect(report.logs).toEqual([]);
		expect(report.rules.filter((r) => r.checked === false).map((r) => r.rule)).toEqual([
			"signature-log",
			"lease-log",
		]);
		const text = formatReport(report, "test");
		expect(text).toContain("NOT CHECKED signature-log: this source holds no such log");
		expect(text).not.toContain("PASS signature-log");
		expect(text).toContain("PASS lru-order");
		expect(text).toContain(
			"Audit PASSED: every rule holds but signature-log and lease-log, not checked here",
		);
	});
});

describe("revoked keys (docs/design.md §5.8)", () => {
	it("counts and names a revoked key's signatures made after its revocation, which a verifier refuses", async () => {
		const keyId = copy.signatures[0].keyId;
		const times = copy.signatures
			.filter((s) => s.keyId === keyId)
			.map((s) => s.signedAt)
			.sort();
		expect(times.length).toBeGreaterThan(1);
		// Revoked just before its last signature (the lease it held then ran out as usual), after every other event.
		const lastSeq = Math.max(...copy.leases.flatMap((l) => [l.grantSeq, l.endSeq ?? 0]));
		const key = copy.keys.find((k) => k.keyId === keyId)!;
		Object.assign(key, {
			revokedSeq: lastSeq + 1,
			revokedAt: new Date(Date.parse(times[times.length - 1]) - 1).toISOString(),
			revokedReason: "compromised",
		});
		const report = await auditSnapshot(copy);
		expect(report.endedKeys).toEqual([
			expect.objectContaining({ keyId, event: "revoked", signedAfter: 1 }),
		]);
		expect(formatReport(report, "test")).toContain(
			`Key ${keyId} revoked at ${key.revokedAt} (seq ${lastSeq + 1}): compromised; refuse its signatures made after that. WARNING: 1 signature of it was made after that`,
		);
		// Revoked after its last signature: nothing to say.
		key.revokedAt = new Date(Date.parse(times[times.length - 1]) + 1).toISOString();
		const after = await auditSnapshot(copy);
		expect(after.endedKeys[0].signedAfter).toBe(0);
		expect(formatReport(after, "test")).not.toContain("WARNING");
	});
});

describe("follow runs (docs/design.md §7.7)", () => {
	const runOf = (snapshot: AuditSnapshot, runId: string) =>
		snapshot.runs.find((r) => r.runId === runId)!;

	it("while one is running, a record with no signature is pending, not a violation; cancelled, it is work left undone (issue 23); completed, it is rule 1's finding", async () => {
		runOf(copy, "run-2").follow = true;
		runOf(copy, "run-2").status = "running";
		const waiting = copy.signatures.pop()!;
		const report = await auditSnapshot(copy);
		expect(report.violations).toEqual([]);
		expect(report).toMatchObject({ ok: true, pending: 1 });
		expect(formatReport(report, "test")).toContain(
			"1 record pending: unsigned, waiting for the follow run that is running",
		);

		runOf(copy, "run-2").status = "cancelled";
		const cancelled = await auditSnapshot(copy);
		expect(cancelled.pending).toBe(0);
		expect(cancelled.violations).toEqual([]);
		expect(cancelled.unsigned).toEqual({
			records: 1,
			run: { runId: "run-2", status: "cancelled" },
		});

		runOf(copy, "run-2").status = "completed";
		const ended = await auditSnapshot(copy);
		expect(ended.pending).toBe(0);
		expect(messages(ended, "one-signature-per-record")).toEqual([
			`record ${waiting.recordId} has no signature`,
		]);
	});

	it("a follow run's batch smaller than its size must say why; a full one must not say it is short", async () => {
		runOf(copy, "run-1").follow = true;
		const small = copy.batches.find((b) => b.runId === "run-1" && b.recordIds.length < 4)!;
		const report = await auditSnapshot(copy);
		expect(failing(report)).toEqual(["batch-size"]);
		expect(messages(report, "batch-size")[0]).toContain(
			`batch ${small.batchId} of follow run run-1 has ${small.recordIds.length} records, fewer than its batch size 4, and does not say it lingered`,
		);

		for (const batch of copy.batches)
			if (batch.runId === "run-1" && batch.recordIds.length < 4)
				batch.short = batch.attempt > 1 ? "retry" : "lingered";
		expect((await auditSnapshot(copy)).violations).toEqual([]);

		const full = copy.batches.find((b) => b.runId === "run-2" && b.recordIds.length === 3)!;
		full.short = "lingered";
		expect(messages(await auditSnapshot(copy), "batch-size")).toEqual([
			`batch ${full.batchId} is full (3 records) but says it is short ("lingered")`,
		]);
	});
});
