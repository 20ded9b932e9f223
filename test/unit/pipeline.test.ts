/** End to end on the embedded store, in one process: every scenario ends with the audit. */
import { pageAll } from "../../src/audit/collect";
import type { BatchDoc, KeyInfo, LeaseDoc, SignatureDoc } from "../../src/contract";
import { operatorRequests, ticketFor } from "../support/signer-proofs";
import { auditSystem, runToCompletion, startSystem, type TestSystem } from "../support/system";

describe("a run on the embedded store", () => {
	let system: TestSystem | undefined;
	afterEach(async () => {
		await system?.broker.stop();
		system = undefined;
	});

	test("10,000 records, 10 keys, batch size 97: every record signed once, audit passes", async () => {
		system = await startSystem({ records: 10_000, keys: 10 });
		const { run, completion } = await runToCompletion(system, 97);
		expect(run.batchSize).toBe(97);
		expect(completion.status).toBe("completed");
		expect(completion.report.signedThisRun).toBe(10_000);
		expect(completion.report.batches).toBe(Math.ceil(10_000 / 97));
		expect(completion.report.keysUsed).toBe(10);

		const signatures = await pageAll<SignatureDoc>(system!.broker, "records", "signatures");
		expect(new Set(signatures.map((s) => s.recordId)).size).toBe(10_000);
		const batches = await pageAll<BatchDoc>(system!.broker, "batcher", "batches");
		expect(Math.max(...batches.map((b) => b.recordIds.length))).toBe(97);

		const verdict = await auditSystem(system.broker);
		expect(verdict.violations).toEqual([]);
		expect(verdict.ok).toBe(true);
	});

	test("keys added, retired and revoked while a run goes on: it completes, the new keys sign, no lease is granted on the ended ones after they end, and the audit passes", async () => {
		system = await startSystem({ records: 6_000, keys: 3, window: 4 });
		const { broker } = system;
		const operator = operatorRequests();
		const completion = system.nextCompletion();
		await broker.call("batcher.start", { batchSize: 20 });
		// Each change once the run has signed a little more.
		const signedSoFar = async () =>
			(await broker.call<{ signed: number }>("records.progress")).signed;
		const after = async (signed: number) => {
			while ((await signedSoFar()) < signed) await new Promise((r) => setTimeout(r, 5));
		};
		await after(500);
		await broker.call("keyring.addKeys", operator.add(2));
		await after(1_500);
		const retired = await broker.call<KeyInfo, object>(
			"keyring.retireKey",
			operator.retire("key-000"),
		);
		await after(2_500);
		const revoked = await broker.call<KeyInfo, object>(
			"keyring.revokeKey",
			operator.revoke("key-001", "a test revocation"),
		);
		const event = await completion;
		expect(event.status).toBe("completed");
		expect(event.report.signedThisRun).toBe(6_000);

		const leases = await pageAll<LeaseDoc>(broker, "keyring", "leases");
		const keysUsed = new Set(leases.map((l) => l.keyId));
		expect(keysUsed).toEqual(new Set(["key-000", "key-001", "key-002", "key-003", "key-004"]));
		// No lease on a key after it ended: each ended key's grants all came before its end.
		const endedAt = new Map([
			["key-000", retired.since!],
			["key-001", revoked.since!],
		]);
		for (const lease of leases)
			if (endedAt.has(lease.keyId))
				expect(Date.parse(lease.grantedAt)).toBeLessThanOrEqual(
					Date.parse(endedAt.get(lease.keyId)!),
				);
		const verdict = await auditSystem(broker);
		expect(verdict.violations).toEqual([]);
		expect(verdict.ok).toBe(true);
		expect(verdict.endedKeys.map((k) => [k.keyId, k.event])).toEqual([
			["key-000", "retired"],
			["key-001", "revoked"],
		]);
	});

	test("batch size 1 on 500 records: 500 batches of one", async () => {
		system = await startSystem({ records: 500, keys: 5 });
		const { completion } = await runToCompletion(system, 1);
		expect(completion.report.batches).toBe(500);
		expect(completion.report.signedThisRun).toBe(500);
		expect((await auditSystem(system.broker)).ok).toBe(true);
	});

	test("a batch size larger than the record count makes one batch", async () => {
		system = await startSystem({ records: 250, keys: 3 });
		const { run, completion } = await runToCompletion(system, 1000);
		expect(run.batchSize).toBe(1000);
		expect(completion.report.batches).toBe(1);
		expect(completion.report.keysUsed).toBe(1);
		expect((await auditSystem(system.broker)).ok).toBe(true);
	});

	test("3 keys with an in-flight window of 12: signers wait for keys, and no key is shared", async () => {
		system = await startSystem({ records: 3_000, keys: 3, window: 12 });
		const { completion } = await runToCompletion(system, 50);
		expect(completion.report.signedThisRun).toBe(3_000);
		const metrics = await system.broker.call<{
			leaseWaitMs: { count: number; max: number };
			keyUses: Record<string, number>;
		}>("metrics.snapshot");
		// 12 batches in flight over 3 keys: most acquires must have queued at the keyring.
		expect(metrics.leaseWaitMs.count).toBe(60);
		expect(metrics.leaseWaitMs.max).toBeGreaterThan(0);
		expect(Object.keys(metrics.keyUses).sort()).toEqual(["key-000", "key-001", "key-002"]);
		const keyring = await system.broker.call<{ waiting: number; leased: number }>(
			"keyring.status",
		);
		expect(keyring).toMatchObject({ waiting: 0, leased: 0 });
		expect((await auditSystem(system.broker)).ok).toBe(true);
	});

	test("a run over an all-signed store signs nothing and still completes", async () => {
		system = await startSystem({ records: 300, keys: 2 });
		await runToCompletion(system, 100);
		const { completion } = await runToCompletion(system, 100);
		expect(completion.status).toBe("completed");
		expect(completion.report.signedThisRun).toBe(0);
		expect(completion.report.batches).toBe(0);
		expect((await auditSystem(system.broker)).ok).toBe(true);
	});
});

describe("duplicate delivery", () => {
	test("the same records handed to two signers at once, as two batches: one signature per record, the rest counted as duplicates", async () => {
		const system = await startSystem({ records: 200, keys: 4 });
		try {
			const { records } = await system.broker.call<
				{ records: Array<{ id: string; data: string }> },
				object
			>("records.unsignedPage", { limit: 200 });
			expect(records).toHaveLength(200);
			const node = system.broker.nodeID;
			const batch = (batchId: string) => ({
				batchId,
				runId: "test-run",
				records,
				ticket: ticketFor(node, records, batchId),
			});
			const results = await Promise.all([
				system.broker.call<{ stored: number; duplicates: number; keyId: string }, object>(
					"signer.signBatch",
					batch("manual-batch-1"),
				),
				system.broker.call<{ stored: number; duplicates: number; keyId: string }, object>(
					"signer.signBatch",
					batch("manual-batch-2"),
				),
			]);
			expect(results[0].stored + results[1].stored).toBe(200);
			expect(results[0].duplicates + results[1].duplicates).toBe(200);
			expect(results[0].keyId).not.toBe(results[1].keyId);
			const progress = await system.broker.call<{ signed: number }>("records.progress");
			expect(progress.signed).toBe(200);
			const signatures = await pageAll<SignatureDoc>(system.broker, "records", "signatures");
			expect(signatures).toHaveLength(200);
		} finally {
			await system.broker.stop();
		}
	});

	test("the same batch and ticket handed to signer.signBatch twice: the second is refused as a replay, nothing is signed twice", async () => {
		const system = await startSystem({ records: 50, keys: 4 });
		try {
			const { records } = await system.broker.call<
				{ records: Array<{ id: string; data: string }> },
				object
			>("records.unsignedPage", { limit: 50 });
			const params = {
				batchId: "manual-batch-3",
				runId: "test-run",
				records,
				ticket: ticketFor(system.broker.nodeID, records, "manual-batch-3"),
			};
			const first = await system.broker.call<{ stored: number }, object>(
				"signer.signBatch",
				params,
			);
			expect(first.stored).toBe(50);
			await expect(system.broker.call("signer.signBatch", params)).rejects.toMatchObject({
				code: 403,
				type: "DISPATCH_TICKET_REPLAYED",
			});
			const signatures = await pageAll<SignatureDoc>(system.broker, "records", "signatures");
			expect(signatures).toHaveLength(50);
			expect(new Set(signatures.map((s) => s.batchId))).toEqual(new Set(["manual-batch-3"]));
		} finally {
			await system.broker.stop();
		}
	});
});
