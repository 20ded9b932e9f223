/**
 * The batcher's run loop without a broker (src/batcher/batcher.ts): plain objects for the
 * records, the signers and the store, and a clock moved by hand.
 */
import { Batcher, type BatcherOptions } from "../src/batcher/batcher";
import type { BatcherStore, RecordsPort, SignersPort } from "../src/batcher/ports";
import type { BatchDoc, EventMap, RunDoc, SignBatchParams, SignBatchResult } from "../src/contract";
import { advanceUntil, FakeClock, settle } from "./support/fake-clock";

/** Every run and batch document, as the loop wrote them. */
class MemoryBatcherStore implements BatcherStore {
	readonly runs = new Map<string, RunDoc>();
	readonly batches = new Map<string, BatchDoc>();

	async insertRun(run: RunDoc) {
		this.runs.set(run.runId, structuredClone(run));
	}
	async getRun(runId: string) {
		return this.runs.get(runId) ?? null;
	}
	async runByIdempotencyKey(key: string) {
		return [...this.runs.values()].find(r => r.idempotencyKey === key) ?? null;
	}
	async interruptedRun() {
		return [...this.runs.values()].find(r => r.status === "running") ?? null;
	}
	async listRuns() {
		return [...this.runs.values()].sort((a, b) => b.startedAt.localeCompare(a.startedAt));
	}
	async updateRun(runId: string, fields: Partial<RunDoc>) {
		Object.assign(this.runs.get(runId)!, fields);
	}
	async insertBatch(batch: BatchDoc) {
		this.batches.set(batch.batchId, structuredClone(batch));
	}
	async updateBatch(batchId: string, fields: Partial<BatchDoc>) {
		Object.assign(this.batches.get(batchId)!, fields);
	}
	async abandonPending(runId: string, finishedAt: string) {
		let n = 0;
		for (const b of this.batches.values()) if (b.runId === runId && b.status === "pending") Object.assign(b, { status: "abandoned", finishedAt }, n++);
		return n;
	}
	async batchSummary(runId: string) {
		const of = [...this.batches.values()].filter(b => b.runId === runId);
		const byStatus: Record<string, number> = {};
		for (const b of of) byStatus[b.status] = (byStatus[b.status] ?? 0) + 1;
		const signed = of.filter(b => b.status === "signed");
		return { total: of.length, byStatus, stored: signed.reduce((n, b) => n + (b.stored ?? 0), 0), duplicates: signed.reduce((n, b) => n + (b.duplicates ?? 0), 0), keysUsed: new Set(signed.map(b => b.keyId)).size };
	}
}

/** `count` records `r0001`..., some already signed. */
class Records implements RecordsPort {
	readonly ids: string[];
	readonly signed = new Set<string>();
	constructor(count: number) {
		this.ids = Array.from({ length: count }, (_, i) => `r${String(i + 1).padStart(4, "0")}`);
	}
	private payload = (id: string) => ({ id, data: `data-of-${id}` });
	async unsignedPage(after: string | undefined, limit: number) {
		return this.ids.filter(id => (after === undefined || id > after) && !this.signed.has(id)).slice(0, limit).map(this.payload);
	}
	async unsignedAmong(ids: string[]) {
		return ids.filter(id => !this.signed.has(id)).map(this.payload);
	}
	async progress() {
		return { records: this.ids.length, signed: this.signed.size };
	}
	async stats() {
		return { records: this.ids.length, maxRecordBytes: 20 };
	}
}

type Behaviour = (params: SignBatchParams, nodeID: string) => Promise<SignBatchResult>;

/** Signer nodes whose `signBatch` does what the test says; every call is kept. */
class Signers implements SignersPort {
	nodes: string[];
	readonly calls: Array<{ params: SignBatchParams; nodeID: string }> = [];
	inFlight = 0;
	maxInFlight = 0;
	constructor(nodes: string[], private readonly records: Records, private readonly clock: FakeClock, public behaviour?: Behaviour) {
		this.nodes = nodes;
	}
	available() {
		return this.nodes;
	}
	waitForAny(timeoutMs: number) {
		return this.clock.sleep(timeoutMs);
	}
	/** A transport taking at most this many bytes per message (null: in-process, no limit). */
	maxPayload: number | null = null;
	maxMessageBytes() {
		return this.maxPayload;
	}
	/** Signs every record of the batch with a key of its own. */
	sign: Behaviour = async (params, nodeID) => {
		let stored = 0;
		for (const id of params.records.map(r => r.id)) if (!this.records.signed.has(id)) (this.records.signed.add(id), stored++);
		return { batchId: params.batchId, keyId: `key-${this.calls.length % 3}`, leaseId: `lease-${params.batchId}`, signer: nodeID, stored, duplicates: params.records.map(r => r.id).length - stored, leaseWaitMs: 0 };
	};
	async signBatch(params: SignBatchParams, options: { nodeID?: string }) {
		const nodeID = options.nodeID ?? "(any)";
		this.calls.push({ params, nodeID });
		this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
		try {
			return await (this.behaviour ?? this.sign)(params, nodeID);
		} finally {
			this.inFlight--;
		}
	}
}

interface Harness {
	batcher: Batcher;
	store: MemoryBatcherStore;
	records: Records;
	signers: Signers;
	clock: FakeClock;
	events: Array<{ event: keyof EventMap; payload: any }>;
	completed(): Promise<EventMap["run.completed"]>;
}

const OPTIONS: BatcherOptions = { batchSize: 10, window: 3, resumeOnStart: true, maxAttempts: 3, signTimeoutMs: 60_000, stopSettleMs: 1_000 };

function harness(records: number, options: Partial<BatcherOptions> = {}, store = new MemoryBatcherStore(), nodes = ["signer-1"]): Harness {
	const clock = new FakeClock();
	const recordsPort = new Records(records);
	const signers = new Signers(nodes, recordsPort, clock);
	const events: Harness["events"] = [];
	let onCompleted: ((event: EventMap["run.completed"]) => void) | null = null;
	const batcher = new Batcher({ ...OPTIONS, ...options }, {
		store,
		records: recordsPort,
		signers,
		emit: (event, payload) => {
			events.push({ event, payload });
			if (event === "run.completed") onCompleted?.(payload as EventMap["run.completed"]);
		},
		clock,
		logger: { info() {}, warn() {}, error() {} },
		nodeStopping: () => false
	});
	return {
		batcher, store, records: recordsPort, signers, clock, events,
		completed: () => new Promise(resolve => (onCompleted = resolve))
	};
}

describe("the batcher's run loop", () => {
	test("pages every unsigned record in ascending batches of the run's size, at most `window` in flight, and reports", async () => {
		const h = harness(95);
		h.records.signed.add("r0003");
		const done = h.completed();
		const run = await h.batcher.start({ batchSize: 10 });
		const completion = await done;

		expect(run).toMatchObject({ batchSize: 10, status: "running", replayed: false });
		const sent = h.signers.calls.map(c => c.params.records.map(r => r.id));
		expect(sent).toHaveLength(10);
		expect(sent.every(ids => ids.length <= 10)).toBe(true);
		expect(sent.flat()).toEqual(h.records.ids.filter(id => id !== "r0003"));
		expect(h.signers.maxInFlight).toBeLessThanOrEqual(3);
		expect(completion).toMatchObject({ status: "completed", error: null, report: { runId: run.runId, batchSize: 10, records: 95, signedThisRun: 94, batches: 10, failedBatches: 0, keysUsed: 3 } });
		expect(h.store.runs.get(run.runId)).toMatchObject({ status: "completed", report: { signedThisRun: 94 } });
		expect([...h.store.batches.values()].every(b => b.status === "signed" && b.keyId && b.leaseId)).toBe(true);
		expect(h.events.map(e => e.event).filter(e => e !== "batch.signed")).toEqual(["run.started", "run.completed"]);
	});

	test("a failed batch's still-unsigned records go again as a new batch, under a new id and the next attempt", async () => {
		const h = harness(30);
		let failures = 0;
		h.signers.behaviour = async (params, node) => {
			if (params.records.map(r => r.id)[0] === "r0011" && failures++ === 0) {
				// Half the batch got stored before the failure.
				for (const id of params.records.map(r => r.id).slice(0, 5)) h.records.signed.add(id);
				throw new Error("signer-1 went away");
			}
			return h.signers.sign(params, node);
		};
		const done = h.completed();
		await h.batcher.start({});
		const completion = await advanceUntil(h.clock, done);

		const batches = [...h.store.batches.values()];
		const failed = batches.filter(b => b.status === "failed");
		expect(failed).toHaveLength(1);
		expect(failed[0]).toMatchObject({ attempt: 1, error: "signer-1 went away", recordIds: h.records.ids.slice(10, 20) });
		const retry = batches.find(b => b.attempt === 2)!;
		expect(retry.batchId).not.toBe(failed[0].batchId);
		expect(retry.recordIds).toEqual(h.records.ids.slice(15, 20));
		expect(completion.status).toBe("completed");
		expect(h.records.signed.size).toBe(30);
	});

	test("records that keep failing fail the run, naming the batch and the last error", async () => {
		const h = harness(20, { maxAttempts: 2 });
		h.signers.behaviour = async params => {
			throw new Error(`no key for ${params.batchId}`);
		};
		const done = h.completed();
		await h.batcher.start({});
		const completion = await advanceUntil(h.clock, done);
		expect(completion.status).toBe("failed");
		expect(completion.error).toMatch(/records of batch run-\S+ failed 2 times; last error: no key for/);
		expect(h.store.runs.get(completion.report.runId)).toMatchObject({ status: "failed", error: completion.error });
	});

	test("each batch goes to the available signer with the fewest batches in flight", async () => {
		const h = harness(60, { window: 4 }, undefined, ["fast", "slow"]);
		// Every batch waits until the test lets it finish, so the loads are exactly what was sent.
		const gates: Array<{ node: string; open(): void }> = [];
		h.signers.behaviour = async (params, node) => {
			await new Promise<void>(open => gates.push({ node, open }));
			return h.signers.sign(params, node);
		};
		const done = h.completed();
		await h.batcher.start({});
		while (h.signers.calls.length < 4) await settle();
		// The window filled evenly: each pick took the less busy node.
		expect(h.signers.calls.map(c => c.nodeID).sort()).toEqual(["fast", "fast", "slow", "slow"]);
		// The fast node finishes its two; the slow one still holds two, so both free slots go to the fast one.
		for (const gate of gates.filter(g => g.node === "fast")) gate.open();
		while (h.signers.calls.length < 6) await settle();
		expect(h.signers.calls.slice(4).map(c => c.nodeID)).toEqual(["fast", "fast"]);
		const open = () => gates.splice(0).forEach(gate => gate.open());
		while (!(await Promise.race([done.then(() => true), settle().then(() => false)]))) open();
		expect(h.signers.calls.filter(c => c.nodeID === "fast").length).toBe(4);
	});

	test("with no signer available it waits instead of failing batches", async () => {
		const h = harness(15);
		h.signers.nodes = [];
		const done = h.completed();
		await h.batcher.start({});
		await settle();
		expect(h.signers.calls).toHaveLength(0);
		h.signers.nodes = ["late-signer"];
		await h.clock.advance(1_000);
		const completion = await done;
		expect(completion.report).toMatchObject({ signedThisRun: 15, failedBatches: 0 });
		expect(h.signers.calls.every(c => c.nodeID === "late-signer")).toBe(true);
	});

	test("an interrupted run resumes with its own batch size; its pending batches are marked abandoned", async () => {
		const store = new MemoryBatcherStore();
		const startedAt = new Date(Date.parse("2025-12-31T23:00:00Z")).toISOString();
		await store.insertRun({ _id: "run-old", runId: "run-old", batchSize: 7, status: "running", startedAt, finishedAt: null, report: null });
		await store.insertBatch({ _id: "run-old-b000001", batchId: "run-old-b000001", runId: "run-old", keyId: null, leaseId: null, recordIds: ["r0001"], attempt: 1, status: "pending", startedAt, finishedAt: null });
		const h = harness(20, { batchSize: 300 }, store);
		const done = h.completed();
		await h.batcher.resumeInterrupted();
		const completion = await done;
		expect(completion.report).toMatchObject({ runId: "run-old", batchSize: 7, signedThisRun: 20 });
		expect(h.signers.calls.every(c => c.params.records.map(r => r.id).length <= 7)).toBe(true);
		expect(store.batches.get("run-old-b000001")!.status).toBe("abandoned");
		// New batch ids continue after the stored ones.
		expect(h.signers.calls[0].params.batchId).toBe("run-old-b000002");
		expect(h.events[0]).toMatchObject({ event: "run.started", payload: { runId: "run-old", resumed: true } });
	});

	test("start refuses a wrong batch size (422, naming the field and range) and a second run while one is active (409)", async () => {
		const h = harness(50);
		for (const bad of [0, -1, 1.5, 100_001, "300", true])
			await expect(h.batcher.start({ batchSize: bad })).rejects.toMatchObject({ code: 422, type: "INVALID_BATCH_SIZE", data: { field: "batchSize", min: 1, max: 100_000 } });
		expect(h.store.runs.size).toBe(0);
		let hold!: () => void;
		const gate = new Promise<void>(resolve => (hold = resolve));
		h.signers.behaviour = async (params, node) => (await gate, h.signers.sign(params, node));
		const done = h.completed();
		const first = await h.batcher.start({ batchSize: 25 });
		await expect(h.batcher.start({ batchSize: 25 })).rejects.toMatchObject({ code: 409, type: "RUN_ACTIVE", data: { runId: first.runId, batchSize: 25 } });
		hold();
		await done;
	});

	test("a batch size whose batches cannot reach a signer in one message is refused at the start, naming the limit and the largest that fits", async () => {
		const h = harness(50);
		// 20 bytes per record (stats) + 24 of JSON: 1,000 records take about 45 KB.
		h.signers.maxPayload = 32 * 1024;
		const refused = await h.batcher.start({ batchSize: 1_000 }).then(() => null, (err: Error) => err);
		expect(refused).toMatchObject({ code: 422, type: "BATCH_TOO_LARGE", data: { field: "batchSize", value: 1_000, max: 721, maxPayload: 32 * 1024 } });
		expect(refused!.message).toMatch(/batchSize 1000 does not fit one message to a signer: .* at most 32 KB \(its max_payload\)\. Use a batch size of at most 721/);
		expect(h.store.runs.size).toBe(0);
		const done = h.completed();
		await h.batcher.start({ batchSize: 721 });
		expect((await done).status).toBe("completed");
	});

	test("a store or records outage pauses dispatch: nothing fails, the run completes when they answer again", async () => {
		const store = new MemoryBatcherStore();
		const h = harness(40, { batchSize: 10 }, store);
		const unhandled: unknown[] = [];
		const onUnhandled = (reason: unknown) => unhandled.push(reason);
		process.on("unhandledRejection", onUnhandled);
		try {
			// The batcher's store is down for its first 5 writes, the records service for its first 3 pages.
			let storeDown = 5;
			const insertBatch = store.insertBatch.bind(store);
			store.insertBatch = async batch => {
				if (storeDown-- > 0) throw new Error("MongoNetworkError: connection refused");
				return insertBatch(batch);
			};
			let recordsDown = 3;
			const unsignedPage = h.records.unsignedPage.bind(h.records);
			h.records.unsignedPage = async (after, limit) => {
				if (recordsDown-- > 0) throw new Error("records is not reachable");
				return unsignedPage(after, limit);
			};
			const done = h.completed();
			await h.batcher.start({});
			const completion = await advanceUntil(h.clock, done);
			expect(completion).toMatchObject({ status: "completed", report: { signedThisRun: 40, batches: 4, failedBatches: 0 } });
			expect(storeDown).toBeLessThan(0);
			expect(recordsDown).toBeLessThan(0);
			expect([...store.batches.values()].every(b => b.status === "signed")).toBe(true);
			expect(unhandled).toEqual([]);
		} finally {
			process.off("unhandledRejection", onUnhandled);
		}
	});

	test("an idempotency key gives back its run, even after the run ended; reused with another request it is a 422", async () => {
		const h = harness(10);
		const done = h.completed();
		const first = await h.batcher.start({ batchSize: 5, idempotencyKey: "client-1" });
		await done;
		const again = await h.batcher.start({ batchSize: 5, idempotencyKey: "client-1" });
		expect(again).toMatchObject({ runId: first.runId, replayed: true, status: "completed" });
		await expect(h.batcher.start({ batchSize: 6, idempotencyKey: "client-1" })).rejects.toMatchObject({ code: 422, type: "IDEMPOTENCY_KEY_REUSED" });
		await expect(h.batcher.start({ idempotencyKey: "é" })).rejects.toMatchObject({ code: 422, type: "INVALID_IDEMPOTENCY_KEY" });
		expect(h.store.runs.size).toBe(1);
	});
});
