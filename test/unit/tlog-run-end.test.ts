/**
 * A checkpoint at the end of every run, for both logs (docs/design.md §8.4), on a real embedded
 * system: the timer that checkpoints a growing log is set to an hour here, so a checkpoint that
 * covers every signature and every lease grant and end right after a run ends can only be the
 * run's end. A cancelled run ends too, and so does the run that finishes the records after it.
 */
import type { ServiceBroker } from "moleculer";
import type { LogCheckpoint, RunDoc } from "../../src/contract";
import { openCheckpoint } from "../../src/tlog/checkpoint";
import { parseVerifierKey } from "../../src/tlog/note";
import { startSystem, type TestSystem } from "../support/system";
import { waitFor } from "../support/http";

const HOUR = 3_600_000;
const RECORDS = 2_000;

describe("a checkpoint at the end of every run, for both logs", () => {
	let system: TestSystem;
	let broker: ServiceBroker;

	beforeAll(async () => {
		system = await startSystem({
			records: RECORDS,
			keys: 3,
			batchSize: 20,
			window: 2,
			settings: {
				records: { checkpointEveryMs: HOUR },
				keyring: { checkpointEveryMs: HOUR },
			},
		});
		broker = system.broker;
	});
	afterAll(() => system?.broker.stop());

	const checkpointOf = async (action: string) => {
		const state = await broker.call<LogCheckpoint, object>(action, {});
		if (!state.checkpoint) return null;
		// The note opens with the log's own verifier key: its size is what the log signed.
		return openCheckpoint(state.checkpoint.note, parseVerifierKey(state.verifierKey)).size;
	};
	const signatureCount = async () =>
		(await broker.call<{ signed: number }, object>("records.progress", {})).signed;
	const leases = async () =>
		(
			await broker.call<{ docs: Array<{ endSeq: number | null }> }, object>("keyring.page", {
				collection: "leases",
				limit: 5000,
			})
		).docs;
	/** A lease's grant is one leaf, its end another. */
	const leaseLeaves = async () =>
		(await leases()).reduce((sum, lease) => sum + (lease.endSeq ? 2 : 1), 0);

	/** Waits (well under the hour of the timer) for both logs' checkpoints to cover what is stored. */
	const bothCheckpointed = () =>
		waitFor(
			"checkpoints of every signature and every lease entry",
			async () => {
				const [signatures, leases] = await Promise.all([
					checkpointOf("records.logCheckpoint"),
					checkpointOf("keyring.logCheckpoint"),
				]);
				const expected = [await signatureCount(), await leaseLeaves()];
				return signatures === expected[0] && leases === expected[1] && expected;
			},
			5_000,
		);

	test("before any run, neither log has a checkpoint (the timer has not fired)", async () => {
		expect(await checkpointOf("records.logCheckpoint")).toBeNull();
		expect(await checkpointOf("keyring.logCheckpoint")).toBeNull();
	});

	test("a cancelled run ends with a checkpoint of each log covering all it stored", async () => {
		const completion = system.nextCompletion();
		const run = await broker.call<RunDoc, object>("batcher.start", {});
		await waitFor("a first batch signed", async () => (await signatureCount()) > 0);
		await broker.call("batcher.cancel", { runId: run.runId });
		expect((await completion).status).toBe("cancelled");
		const [signatures, leaseEntries] = await bothCheckpointed();
		expect(signatures).toBeGreaterThan(0);
		expect(signatures).toBeLessThan(RECORDS);
		expect(leaseEntries).toBeGreaterThan(0);
	});

	test("the next run, which signs the rest, ends with checkpoints of everything", async () => {
		const completion = system.nextCompletion();
		await broker.call("batcher.start", {});
		expect((await completion).status).toBe("completed");
		const [signatures, leaseEntries] = await bothCheckpointed();
		expect(signatures).toBe(RECORDS);
		// Every lease of both runs was granted and ended: both are in the checkpoint.
		const all = await leases();
		expect(all.every((lease) => lease.endSeq !== null)).toBe(true);
		expect(leaseEntries).toBe(2 * all.length);
	});
});
