/** Bad input gets a clear client error and changes nothing stored. */
import { Errors } from "moleculer";
import { ConfigError, loadConfig } from "../../src/config";
import type { RunDoc } from "../../src/contract";
import { runToCompletion, startSystem, type TestSystem } from "../support/system";

describe("batcher.start params", () => {
	let system: TestSystem;
	beforeAll(async () => {
		system = await startSystem({ records: 2_000, keys: 2, batchSize: 40 });
	});
	afterAll(() => system.broker.stop());

	test.each([
		["zero", 0],
		["negative", -5],
		["fractional", 1.5],
		["a numeric string", "300"],
		["a word", "abc"],
		["too large", 100_001],
		["a boolean", true],
	])(
		"batchSize %s is a 422 naming the field and the range, and creates no run",
		async (_label, batchSize) => {
			const error: any = await system.broker
				.call("batcher.start", { batchSize })
				.catch((err: any) => err);
			expect(error).toBeInstanceOf(Errors.MoleculerClientError);
			expect(error.code).toBe(422);
			expect(error.type).toBe("INVALID_BATCH_SIZE");
			expect(error.message).toContain("batchSize must be an integer from 1 to 100000");
			expect(error.data).toMatchObject({ field: "batchSize", min: 1, max: 100_000 });
			expect(await system.broker.call("batcher.runs")).toEqual([]);
		},
	);

	test("a missing batchSize takes the configured default; a second start while active is a 409 naming the run", async () => {
		const completion = system.nextCompletion();
		const run = await system.broker.call<RunDoc, object>("batcher.start", {});
		expect(run.batchSize).toBe(40);
		const conflict: any = await system.broker
			.call("batcher.start", { batchSize: 10 })
			.catch((err: any) => err);
		expect(conflict).toBeInstanceOf(Errors.MoleculerClientError);
		expect(conflict.code).toBe(409);
		expect(conflict.type).toBe("RUN_ACTIVE");
		expect(conflict.message).toContain(run.runId);
		expect(conflict.data).toMatchObject({ runId: run.runId, batchSize: 40 });
		const { report } = await completion;
		expect(report.batchSize).toBe(40);
		expect(report.signedThisRun).toBe(2_000);
		const runs = await system.broker.call<RunDoc[]>("batcher.runs");
		expect(runs.map((r) => r.batchSize)).toEqual([40]);
	});

	test("an unknown run id is a 404", async () => {
		const error: any = await system.broker
			.call("batcher.get", { runId: "run-nope" })
			.catch((err: any) => err);
		expect(error.code).toBe(404);
		expect(error.type).toBe("RUN_NOT_FOUND");
	});
});

describe("configuration at start-up", () => {
	test.each([
		["RECORDS", "abc", "RECORDS must be an integer from 1 to 10000000"],
		["RECORDS", "0", "RECORDS must be an integer from 1 to 10000000"],
		["KEYS", "-1", "KEYS must be an integer from 1 to 10000"],
		["KEYS", "2.5", "KEYS must be an integer from 1 to 10000"],
		["BATCH_SIZE", "0", "BATCH_SIZE must be an integer from 1 to 100000"],
		["TRANSPORTER", "redis://x", "TRANSPORTER must be a nats:// URL"],
		[
			"KEYRING_MASTER_KEY",
			"c2hvcnQ=",
			"KEYRING_MASTER_KEY must be the base64 encoding of exactly 32 bytes",
		],
	])("%s=%j is rejected by name", (name, value, message) => {
		expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
		expect(() => loadConfig({ [name]: value })).toThrow(message);
	});

	test("a flag overrides the environment and is named in its error", () => {
		expect(loadConfig({ BATCH_SIZE: "10" }, { "batch-size": "25" }).batchSize).toBe(25);
		expect(() => loadConfig({}, { "batch-size": "0" })).toThrow(
			"--batch-size must be an integer from 1 to 100000",
		);
	});
});

describe("re-running a completed store", () => {
	test("a second run signs nothing", async () => {
		const system = await startSystem({ records: 100, keys: 2 });
		try {
			await runToCompletion(system, 30);
			const second = await runToCompletion(system, 30);
			expect(second.completion.report.signedThisRun).toBe(0);
			expect(await system.broker.call("records.progress")).toEqual({
				records: 100,
				signed: 100,
			});
		} finally {
			await system.broker.stop();
		}
	});
});

describe("idempotent starts", () => {
	test("a start with a known idempotency key returns that run instead of a conflict or a second run", async () => {
		const system = await startSystem({ records: 500, keys: 2 });
		try {
			const completion = system.nextCompletion();
			const first = await system.broker.call<RunDoc, object>("batcher.start", {
				batchSize: 50,
				idempotencyKey: "client-42",
			});
			const again = await system.broker.call<RunDoc, object>("batcher.start", {
				batchSize: 50,
				idempotencyKey: "client-42",
			});
			expect(again.runId).toBe(first.runId);
			await completion;
			const afterEnd = await system.broker.call<RunDoc, object>("batcher.start", {
				batchSize: 50,
				idempotencyKey: "client-42",
			});
			expect(afterEnd).toMatchObject({ runId: first.runId, status: "completed" });
			expect(await system.broker.call<RunDoc[]>("batcher.runs")).toHaveLength(1);
		} finally {
			await system.broker.stop();
		}
	});
});
