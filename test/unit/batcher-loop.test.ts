/**
 * The batcher's run loop without a broker (src/batcher/batcher.ts): plain objects for the
 * records, the signers and the store, and a clock moved by hand.
 */
import { Errors } from "moleculer";
import { Batcher, type BatcherOptions } from "../../src/batcher/batcher";
import { retryDelayMs } from "../../src/batcher/planner";
import type { BatcherStore, RecordsPort, SignersPort } from "../../src/batcher/ports";
import type {
	BatchDoc,
	EventMap,
	RunDoc,
	SignBatchParams,
	SignBatchResult,
} from "../../src/contract";
import { until } from "../support/cluster";
import { advanceUntil, FakeClock, settle } from "../support/fake-clock";

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
		return [...this.runs.values()].find((r) => r.idempotencyKey === key) ?? null;
	}
	async interruptedRun() {
		return [...this.runs.values()].find((r) => r.status === "running") ?? null;
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
	async pendingBatches(runId: string) {
		return [...this.batches.values()]
			.filter((b) => b.runId === runId && b.status === "pending")
			.map((b) => structuredClone(b));
	}
	async batchSummary(runId: string) {
		const of = [...this.batches.values()].filter((b) => b.runId === runId);
		const byStatus: Record<string, number> = {};
		for (const b of of) byStatus[b.status] = (byStatus[b.status] ?? 0) + 1;
		const signed = of.filter((b) => b.status === "signed" || b.status === "partial");
		return {
			total: of.length,
			byStatus,
			stored: signed.reduce((n, b) => n + (b.stored ?? 0), 0),
			duplicates: signed.reduce((n, b) => n + (b.duplicates ?? 0), 0),
			keysUsed: new Set(signed.map((b) => b.keyId)).size,
		};
	}
}

/** `count` records `r0001`..., some already signed; each signature names its batch, key and lease; a closed batch takes none. */
class Records implements RecordsPort {
	readonly ids: string[];
	readonly signed = new Map<string, { batchId: string; keyId: string; leaseId: string }>();
	readonly closed = new Set<string>();
	constructor(count: number) {
		this.ids = Array.from({ length: count }, (_, i) => `r${String(i + 1).padStart(4, "0")}`);
	}
	private payload = (id: string) => ({ id, data: `data-of-${id}` });
	/** When each submitted record arrived (seeded ones have no time); a record's seq is its place in `ids`. */
	readonly submittedAt = new Map<string, string>();
	/** Submits `ids` at `at` (ms), after every record stored so far. */
	arrive(ids: string[], at: number): void {
		for (const id of ids) {
			this.ids.push(id);
			this.submittedAt.set(id, new Date(at).toISOString());
		}
	}
	async unsignedArrivals(afterSeq: number, limit: number) {
		return this.ids
			.map((id, i) => ({
				...this.payload(id),
				seq: i + 1,
				submittedAt: this.submittedAt.get(id) ?? null,
			}))
			.filter((r) => r.seq > afterSeq && !this.signed.has(r.id))
			.slice(0, limit);
	}
	/** Stores signatures of `ids` under a batch, as records.storeSignatures does; returns how many were new. */
	store(batchId: string, keyId: string, leaseId: string, ids: string[]): number {
		if (this.closed.has(batchId)) throw new Error(`BATCH_CLOSED: ${batchId}`);
		let stored = 0;
		for (const id of ids) {
			if (this.signed.has(id)) continue;
			this.signed.set(id, { batchId, keyId, leaseId });
			stored++;
		}
		return stored;
	}
	async unsignedPage(after: string | undefined, limit: number) {
		return this.ids
			.filter((id) => (after === undefined || id > after) && !this.signed.has(id))
			.slice(0, limit)
			.map(this.payload);
	}
	async unsignedAmong(ids: string[]) {
		return ids.filter((id) => !this.signed.has(id)).map(this.payload);
	}
	async progress() {
		return { records: this.ids.length, signed: this.signed.size };
	}
	async stats() {
		return { records: this.ids.length, maxRecordBytes: 20, lastSeq: this.ids.length };
	}
	async closeBatch(batchId: string, recordIds: string[]) {
		this.closed.add(batchId);
		return {
			signed: await this.signedUnder(batchId),
			unsigned: await this.unsignedAmong(recordIds),
		};
	}
	async signedUnder(batchId: string) {
		const groups = new Map<string, { keyId: string; leaseId: string; count: number }>();
		for (const signature of this.signed.values()) {
			if (signature.batchId !== batchId) continue;
			const group = groups.get(signature.leaseId) ?? {
				keyId: signature.keyId,
				leaseId: signature.leaseId,
				count: 0,
			};
			group.count++;
			groups.set(signature.leaseId, group);
		}
		return [...groups.values()];
	}
}

type Behaviour = (params: SignBatchParams, nodeID: string) => Promise<SignBatchResult>;

/** Signer nodes whose `signBatch` does what the test says; every call is kept. */
class Signers implements SignersPort {
	nodes: string[];
	readonly calls: Array<{ params: SignBatchParams; nodeID: string }> = [];
	/** Batch id -> node, while its `signBatch` runs there: what `inFlight` answers unless `answer` says otherwise. */
	readonly running = new Map<string, string>();
	answer?: (nodeID: string) => Promise<string[]>;
	probes: string[] = [];
	active = 0;
	maxInFlight = 0;
	constructor(
		nodes: string[],
		private readonly records: Records,
		private readonly clock: FakeClock,
		public behaviour?: Behaviour,
	) {
		this.nodes = nodes;
	}
	available() {
		return this.nodes;
	}
	waitForAny(timeoutMs: number) {
		return this.clock.sleep(timeoutMs);
	}
	/** Whether a keyring is on the bus, as the batcher's registry sees it. */
	keyring = true;
	keyringAvailable() {
		return this.keyring;
	}
	/** The keyring's keys, as keyring.status counts them (null: no keyring answers). */
	keys: { keys: number; active: number } | null = { keys: 3, active: 3 };
	async keyringKeys() {
		return this.keyring ? this.keys : null;
	}
	/** A transport taking at most this many bytes per message (null: in-process, no limit). */
	maxPayload: number | null = null;
	maxMessageBytes() {
		return this.maxPayload;
	}
	/** The key a batch is signed with: one of three, by the order of the calls. */
	keyOf = (batchId: string) =>
		`key-${this.calls.findIndex((c) => c.params.batchId === batchId) % 3}`;
	/** Signs every record of the batch with its key, under a lease of its own, and stores the signatures. */
	sign: Behaviour = async (params, nodeID) => {
		const ids = params.records.map((r) => r.id);
		const keyId = this.keyOf(params.batchId);
		const stored = this.records.store(params.batchId, keyId, `lease-${params.batchId}`, ids);
		return {
			batchId: params.batchId,
			keyId,
			leaseId: `lease-${params.batchId}`,
			signer: nodeID,
			stored,
			duplicates: ids.length - stored,
			leaseWaitMs: 0,
		};
	};
	async signBatch(params: SignBatchParams, options: { nodeID?: string; signal: AbortSignal }) {
		const nodeID = options.nodeID ?? "(any)";
		this.calls.push({ params, nodeID });
		this.running.set(params.batchId, nodeID);
		this.maxInFlight = Math.max(this.maxInFlight, ++this.active);
		// As src/broker/lost-requests.ts does: an abort fails the call at once, whatever the signer does.
		const aborted = new Promise<never>((_, reject) =>
			options.signal.addEventListener(
				"abort",
				() => reject(new Error(`aborted: ${(options.signal.reason as Error).message}`)),
				{ once: true },
			),
		);
		const work = (this.behaviour ?? this.sign)(params, nodeID).finally(() =>
			this.running.delete(params.batchId),
		);
		work.catch(() => undefined);
		try {
			return await Promise.race([work, aborted]);
		} finally {
			this.active--;
		}
	}
	async inFlight(nodeID: string) {
		this.probes.push(nodeID);
		if (this.answer) return this.answer(nodeID);
		return [...this.running].filter(([, node]) => node === nodeID).map(([batchId]) => batchId);
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

const OPTIONS: BatcherOptions = {
	batchSize: 10,
	window: 3,
	resumeOnStart: true,
	maxAttempts: 3,
	signTimeoutMs: 60_000,
	stopSettleMs: 1_000,
	probeAfterMs: 3_000,
	lingerMs: 200,
	interruptedFollow: "resume",
};

function harness(
	records: number,
	options: Partial<BatcherOptions> = {},
	store = new MemoryBatcherStore(),
	nodes = ["signer-1"],
): Harness {
	const clock = new FakeClock();
	const recordsPort = new Records(records);
	const signers = new Signers(nodes, recordsPort, clock);
	const events: Harness["events"] = [];
	let onCompleted: ((event: EventMap["run.completed"]) => void) | null = null;
	const batcher = new Batcher(
		{ ...OPTIONS, ...options },
		{
			store,
			records: recordsPort,
			signers,
			emit: (event, payload) => {
				events.push({ event, payload });
				if (event === "run.completed") onCompleted?.(payload as EventMap["run.completed"]);
			},
			clock,
			logger: { info() {}, warn() {}, error() {} },
			nodeStopping: () => false,
		},
	);
	return {
		batcher,
		store,
		records: recordsPort,
		signers,
		clock,
		events,
		completed: () => new Promise((resolve) => (onCompleted = resolve)),
	};
}

/** Records' 403 to a close proof it does not take, as it reaches the batcher over the bus. */
const closeRefused = () =>
	new Errors.MoleculerClientError(
		"records.closeBatch carries no close proof of the batcher",
		403,
		"CLOSE_PROOF_INVALID",
	);

/** A signer's call that no node took, as Moleculer carries the error back to the batcher. */
const notOffered = (action: string, words = "is not available", type = "SERVICE_NOT_AVAILABLE") =>
	Object.assign(new Error(`Service '${action}' ${words}.`), {
		type,
		data: { action, nodeID: null },
	});

/** Signers with no key for any batch: every batch sent fails, its error naming the batch. */
const noKeyFor: Behaviour = async (params) => {
	throw new Error(`no key for ${params.batchId}`);
};

/** Lets the loop run (real time, no clock moved) until `count` batches have gone to the signers. */
function callsReach(h: Harness, count: number): Promise<boolean> {
	return until(
		`${count} batches sent to the signers`,
		5_000,
		async () => {
			await settle();
			return h.signers.calls.length >= count;
		},
		0,
	);
}

describe("the batcher's run loop", () => {
	test("pages every unsigned record in ascending batches of the run's size, at most `window` in flight, and reports", async () => {
		const h = harness(95);
		h.records.store("earlier-batch", "key-x", "lease-x", ["r0003"]);
		const done = h.completed();
		const run = await h.batcher.start({ batchSize: 10 });
		const completion = await done;

		expect(run).toMatchObject({ batchSize: 10, status: "running", replayed: false });
		const sent = h.signers.calls.map((c) => c.params.records.map((r) => r.id));
		expect(sent).toHaveLength(10);
		expect(sent.every((ids) => ids.length <= 10)).toBe(true);
		expect(sent.flat()).toEqual(h.records.ids.filter((id) => id !== "r0003"));
		expect(h.signers.maxInFlight).toBeLessThanOrEqual(3);
		expect(completion).toMatchObject({
			status: "completed",
			error: null,
			report: {
				runId: run.runId,
				batchSize: 10,
				records: 95,
				signedThisRun: 94,
				batches: 10,
				failedBatches: 0,
				keysUsed: 3,
			},
		});
		expect(h.store.runs.get(run.runId)).toMatchObject({
			status: "completed",
			report: { signedThisRun: 94 },
		});
		expect(
			[...h.store.batches.values()].every(
				(b) => b.status === "signed" && b.keyId && b.leaseId,
			),
		).toBe(true);
		expect(h.events.map((e) => e.event).filter((e) => e !== "batch.signed")).toEqual([
			"run.started",
			"run.completed",
		]);
	});

	test("a batch that fails after storing part of its signatures is recorded partial, naming their key and lease; the rest go again as a new batch", async () => {
		const h = harness(30);
		let failures = 0;
		h.signers.behaviour = async (params, node) => {
			if (params.records.map((r) => r.id)[0] === "r0011" && failures++ === 0) {
				// Half the batch got stored before the failure.
				h.records.store(
					params.batchId,
					"key-7",
					"lease-half",
					params.records.map((r) => r.id).slice(0, 5),
				);
				throw new Error("signer-1 went away");
			}
			return h.signers.sign(params, node);
		};
		const done = h.completed();
		await h.batcher.start({});
		const completion = await advanceUntil(h.clock, done);

		const batches = [...h.store.batches.values()];
		const partial = batches.filter((b) => b.status !== "signed");
		expect(partial).toEqual([
			expect.objectContaining({
				status: "partial",
				attempt: 1,
				keyId: "key-7",
				leaseId: "lease-half",
				signer: "signer-1",
				stored: 5,
				unsigned: 5,
				error: "signer-1 went away",
				recordIds: h.records.ids.slice(10, 20),
			}),
		]);
		const retry = batches.find((b) => b.attempt === 2)!;
		expect(retry.batchId).not.toBe(partial[0].batchId);
		expect(retry.recordIds).toEqual(h.records.ids.slice(15, 20));
		expect(completion.status).toBe("completed");
		expect(completion.report).toMatchObject({ signedThisRun: 30, failedBatches: 0 });
		expect(h.records.signed.size).toBe(30);
		expect(h.events.find((e) => e.event === "batch.failed")).toMatchObject({
			payload: { batchId: partial[0].batchId, stored: 5 },
		});
	});

	test.each([
		["is not available", "SERVICE_NOT_AVAILABLE"],
		// A keyring still being elected has not registered its service yet.
		["is not found", "SERVICE_NOT_FOUND"],
	])(
		"while no keyring answers (keyring.acquire %s), batches wait and use up no attempts; the run goes on once one is back",
		async (words, type) => {
			const h = harness(40, { maxAttempts: 2 });
			// The keyring's host is cut off: the signers find no keyring for 30 s of the batcher's clock.
			const back = h.clock.now() + 30_000;
			h.signers.behaviour = async (params, node) => {
				if (h.clock.now() < back) {
					h.signers.keyring = false;
					throw notOffered("keyring.acquire", words, type);
				}
				h.signers.keyring = true;
				return h.signers.sign(params, node);
			};
			const done = h.completed();
			await h.batcher.start({ batchSize: 10 });
			// The batcher's registry sees the keyring back a little before the signers do.
			const completion = await advanceUntil(h.clock, done);
			expect(completion).toMatchObject({ status: "completed", error: null });
			expect(h.records.signed.size).toBe(40);
			const batches = [...h.store.batches.values()];
			// Far more failures than two attempts would allow, none of them counted.
			const failed = batches.filter((b) => b.status === "failed");
			expect(failed.length).toBeGreaterThan(2);
			expect(batches.every((b) => b.attempt === 1)).toBe(true);
			// While no keyring was seen, at most the window went out each second, not a storm of batches.
			expect(failed.length).toBeLessThan(3 * 40);
		},
	);

	test("a failed batch's records go again after a growing backoff, even with room in the window: a second of failures uses a few of ten attempts, and the run completes", async () => {
		// Two batches and room for six: a failed batch's records find a free place at once.
		const h = harness(20, { maxAttempts: 10, window: 6 });
		// Every batch fails at once for the first 1,050 ms.
		const healed = h.clock.now() + 1_050;
		const sentAt = new Map<string, number[]>();
		h.signers.behaviour = async (params, node) => {
			for (const record of params.records)
				sentAt.set(record.id, [...(sentAt.get(record.id) ?? []), h.clock.now()]);
			if (h.clock.now() < healed) return noKeyFor(params, node);
			return h.signers.sign(params, node);
		};
		const done = h.completed();
		await h.batcher.start({ batchSize: 10 });
		const completion = await advanceUntil(h.clock, done, 10);
		expect(completion).toMatchObject({ status: "completed", error: null });
		expect(h.records.signed.size).toBe(20);
		const attempts = [...h.store.batches.values()].map((batch) => batch.attempt);
		expect(Math.max(...attempts)).toBeGreaterThan(1);
		// 50 + 50 + 100 + 200 + 400 + 800 ms: the seventh try is past the second.
		expect(Math.max(...attempts)).toBeLessThanOrEqual(7);
		// Every record waited out its backoff before each try after a failure.
		for (const times of sentAt.values())
			for (let attempt = 1; attempt < times.length; attempt++)
				expect(times[attempt] - times[attempt - 1]).toBeGreaterThanOrEqual(
					retryDelayMs(attempt),
				);
	});

	test("records a signer cannot store because it has not heard of the records service yet (a node that just started) go again at the same attempt after a pause, and the run completes", async () => {
		const h = harness(20, { maxAttempts: 2, window: 6 });
		// Moleculer tells the other nodes of a node's services up to a second after it starts.
		const announced = h.clock.now() + 1_050;
		h.signers.behaviour = async (params, node) => {
			if (h.clock.now() < announced) throw notOffered("records.storeSignatures");
			return h.signers.sign(params, node);
		};
		const done = h.completed();
		await h.batcher.start({ batchSize: 10 });
		const completion = await advanceUntil(h.clock, done, 10);
		expect(completion).toMatchObject({ status: "completed", error: null });
		expect(h.records.signed.size).toBe(20);
		const batches = [...h.store.batches.values()];
		// Failures that used no attempt (two would have failed the run)...
		expect(batches.filter((b) => b.status === "failed").length).toBeGreaterThan(0);
		expect(batches.every((b) => b.attempt === 1)).toBe(true);
		// ... and a pause of a second after each: not a batch a tick.
		expect(batches.filter((b) => b.status === "failed").length).toBeLessThanOrEqual(4);
	});

	test("a batch whose reply is lost after its signatures were stored is recorded signed with their key and lease, and not sent again", async () => {
		const h = harness(30);
		h.signers.behaviour = async (params, node) => {
			const result = await h.signers.sign(params, node);
			if (params.records[0].id === "r0011")
				throw new Error(
					"Request is rejected when call 'signer.signBatch' action on 'signer-1' node.",
				);
			return result;
		};
		const done = h.completed();
		await h.batcher.start({});
		const completion = await advanceUntil(h.clock, done);
		const lost = [...h.store.batches.values()].find((b) => b.recordIds[0] === "r0011")!;
		expect(lost).toMatchObject({
			status: "signed",
			keyId: h.signers.keyOf(lost.batchId),
			leaseId: `lease-${lost.batchId}`,
			signer: "signer-1",
			stored: 10,
			duplicates: 0,
			unsigned: 0,
			error: expect.stringMatching(/rejected/),
		});
		expect(h.signers.calls).toHaveLength(3);
		expect(h.records.closed).toEqual(new Set([lost.batchId]));
		expect(completion.report).toMatchObject({
			signedThisRun: 30,
			batches: 3,
			failedBatches: 0,
		});
	});

	test("a batch its signer does not have (request or reply lost in transit) is given up after probeAfterMs and its records go again", async () => {
		const h = harness(20, { probeAfterMs: 3_000, signTimeoutMs: 60_000 });
		// The first batch never reaches its signer: no reply, ever; the signer says it does not have it.
		let first = true;
		h.signers.behaviour = async (params, node) => {
			if (first) {
				first = false;
				h.signers.running.delete(params.batchId);
				return new Promise<never>(() => undefined);
			}
			return h.signers.sign(params, node);
		};
		const done = h.completed();
		const started = h.clock.now();
		await h.batcher.start({});
		const completion = await advanceUntil(h.clock, done);
		expect(h.clock.now() - started).toBeLessThan(10_000);
		const [lost] = [...h.store.batches.values()];
		expect(lost).toMatchObject({
			status: "failed",
			keyId: null,
			leaseId: null,
			stored: 0,
			unsigned: 10,
			error: expect.stringMatching(
				/signer signer-1 does not have batch \S+, sent \d+\.\d s ago: its request or its reply was lost/,
			),
		});
		expect(completion.report).toMatchObject({ signedThisRun: 20, failedBatches: 1 });
		expect(
			[...h.store.batches.values()].filter((b) => b.attempt === 2).map((b) => b.recordIds),
		).toEqual([h.records.ids.slice(0, 10)]);
	});

	test("a batch its signer still works on is left alone however long it takes; a signer that does not answer is not given up on", async () => {
		const h = harness(10, { probeAfterMs: 1_000 });
		h.signers.behaviour = async (params, node) => {
			await h.clock.sleep(8_000);
			return h.signers.sign(params, node);
		};
		// The first probes go unanswered (the node unreachable), later ones see the batch.
		let unanswered = 2;
		h.signers.answer = async (nodeID) => {
			if (unanswered-- > 0) throw new Error("Request timed out");
			return [...h.signers.running]
				.filter(([, node]) => node === nodeID)
				.map(([batchId]) => batchId);
		};
		const done = h.completed();
		await h.batcher.start({});
		const completion = await advanceUntil(h.clock, done);
		expect(h.signers.probes.length).toBeGreaterThan(3);
		expect(h.signers.calls).toHaveLength(1);
		expect(completion.report).toMatchObject({ signedThisRun: 10, failedBatches: 0 });
		expect([...h.store.batches.values()]).toEqual([
			expect.objectContaining({ status: "signed", attempt: 1 }),
		]);
	});

	test("records that keep failing fail the run, naming the batch and the last error", async () => {
		const h = harness(20, { maxAttempts: 2 });
		h.signers.behaviour = noKeyFor;
		const done = h.completed();
		await h.batcher.start({});
		const completion = await advanceUntil(h.clock, done);
		expect(completion.status).toBe("failed");
		expect(completion.error).toMatch(
			/records of batch run-\S+ failed 2 times; last error: no key for/,
		);
		expect(h.store.runs.get(completion.report.runId)).toMatchObject({
			status: "failed",
			error: completion.error,
		});
	});

	test("a batch records refuses to close at first (a batcher credential it has not read yet) is settled on a later try, and the run completes with no batch pending", async () => {
		const h = harness(20);
		const closeBatch = h.records.closeBatch.bind(h.records);
		let refusals = 0;
		h.records.closeBatch = async (batchId, recordIds) => {
			if (refusals++ < 2) throw closeRefused();
			return closeBatch(batchId, recordIds);
		};
		let failedOnce = false;
		h.signers.behaviour = async (params, node) => {
			if (failedOnce) return h.signers.sign(params, node);
			failedOnce = true;
			return noKeyFor(params, node);
		};
		const done = h.completed();
		await h.batcher.start({});
		const completion = await advanceUntil(h.clock, done);
		expect(completion.status).toBe("completed");
		expect(refusals).toBe(3);
		expect([...h.store.batches.values()].filter((b) => b.status === "pending")).toEqual([]);
		expect([...h.store.batches.values()].filter((b) => b.status === "failed")).toHaveLength(1);
	});

	test("a batch records keeps refusing to close fails the run, naming the batch and why, rather than completing with it pending", async () => {
		const h = harness(20);
		h.records.closeBatch = async () => {
			throw closeRefused();
		};
		h.signers.behaviour = noKeyFor;
		const done = h.completed();
		await h.batcher.start({});
		const completion = await advanceUntil(h.clock, done);
		expect(completion.status).toBe("failed");
		expect(completion.error).toMatch(
			/batch run-\S+ could not be settled: records.closeBatch carries no close proof of the batcher/,
		);
	});

	test("each batch goes to the available signer with the fewest batches in flight", async () => {
		const h = harness(60, { window: 4 }, undefined, ["fast", "slow"]);
		// Every batch waits until the test lets it finish, so the loads are exactly what was sent.
		const gates: Array<{ node: string; open(): void }> = [];
		h.signers.behaviour = async (params, node) => {
			await new Promise<void>((open) => gates.push({ node, open }));
			return h.signers.sign(params, node);
		};
		const done = h.completed();
		await h.batcher.start({});
		await callsReach(h, 4);
		// The window filled evenly: each pick took the less busy node.
		expect(h.signers.calls.map((c) => c.nodeID).sort()).toEqual([
			"fast",
			"fast",
			"slow",
			"slow",
		]);
		// The fast node finishes its two; the slow one still holds two, so both free slots go to the fast one.
		for (const gate of gates.filter((g) => g.node === "fast")) gate.open();
		await callsReach(h, 6);
		expect(h.signers.calls.slice(4).map((c) => c.nodeID)).toEqual(["fast", "fast"]);
		const open = () => gates.splice(0).forEach((gate) => gate.open());
		await until(
			"the run to complete with every batch let through",
			5_000,
			() => {
				open();
				return Promise.race([done.then(() => true), settle().then(() => false)]);
			},
			0,
		);
		expect(h.signers.calls.filter((c) => c.nodeID === "fast").length).toBe(4);
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
		expect(h.signers.calls.every((c) => c.nodeID === "late-signer")).toBe(true);
	});

	test("an interrupted run resumes with its own batch size; its pending batches are settled from their stored signatures first", async () => {
		const store = new MemoryBatcherStore();
		const startedAt = new Date(Date.parse("2025-12-31T23:00:00Z")).toISOString();
		await store.insertRun({
			_id: "run-old",
			runId: "run-old",
			batchSize: 7,
			status: "running",
			startedAt,
			finishedAt: null,
			report: null,
		});
		const pending = (n: number, recordIds: string[]): BatchDoc => ({
			_id: `run-old-b00000${n}`,
			batchId: `run-old-b00000${n}`,
			runId: "run-old",
			keyId: null,
			leaseId: null,
			recordIds,
			attempt: 1,
			status: "pending",
			startedAt,
			finishedAt: null,
			signer: "signer-9",
		});
		await store.insertBatch(pending(1, ["r0001", "r0002"]));
		await store.insertBatch(pending(2, ["r0003"]));
		const h = harness(20, { batchSize: 300 }, store);
		// Batch 1's signer stored its signatures before the batcher went down; batch 2's did not.
		h.records.store("run-old-b000001", "key-5", "lease-5", ["r0001", "r0002"]);
		const done = h.completed();
		await h.batcher.resumeInterrupted();
		const completion = await done;
		expect(completion.report).toMatchObject({
			runId: "run-old",
			batchSize: 7,
			signedThisRun: 20,
		});
		expect(h.signers.calls.every((c) => c.params.records.map((r) => r.id).length <= 7)).toBe(
			true,
		);
		expect(store.batches.get("run-old-b000001")).toMatchObject({
			status: "signed",
			keyId: "key-5",
			leaseId: "lease-5",
			signer: "signer-9",
			stored: 2,
			unsigned: 0,
		});
		expect(store.batches.get("run-old-b000002")).toMatchObject({
			status: "failed",
			keyId: null,
			leaseId: null,
			signer: null,
			stored: 0,
			unsigned: 1,
		});
		// A late signer of a settled batch is refused.
		expect(() => h.records.store("run-old-b000002", "key-6", "lease-6", ["r0003"])).toThrow(
			/BATCH_CLOSED/,
		);
		// New batch ids continue after the stored ones.
		expect(h.signers.calls[0].params.batchId).toBe("run-old-b000003");
		expect(h.events[0]).toMatchObject({
			event: "run.started",
			payload: { runId: "run-old", resumed: true },
		});
	});

	test("cancel: no new batch goes out, the ones in flight finish and are recorded, the run is stored cancelled with its report; a new run may start", async () => {
		const h = harness(100, { window: 2 });
		const gates: Array<() => void> = [];
		h.signers.behaviour = async (params, node) => {
			await new Promise<void>((open) => gates.push(open));
			return h.signers.sign(params, node);
		};
		const done = h.completed();
		const run = await h.batcher.start({ batchSize: 10 });
		await callsReach(h, 2);
		const cancelling = await h.batcher.cancel(run.runId);
		expect(cancelling).toMatchObject({
			runId: run.runId,
			status: "running",
			cancelRequestedAt: expect.any(String),
		});
		expect(h.store.runs.get(run.runId)!.cancelRequestedAt).toBe(cancelling.cancelRequestedAt);
		// Asking again is harmless; a second run cannot start until this one has ended.
		await expect(h.batcher.cancel()).resolves.toMatchObject({ runId: run.runId });
		await expect(h.batcher.start({ batchSize: 10 })).rejects.toMatchObject({
			code: 409,
			type: "RUN_ACTIVE",
		});
		for (const open of gates.splice(0)) open();
		const completion = await done;
		expect(h.signers.calls).toHaveLength(2);
		expect(completion).toMatchObject({
			status: "cancelled",
			report: { signedThisRun: 20, batches: 2 },
		});
		expect(h.store.runs.get(run.runId)).toMatchObject({
			status: "cancelled",
			report: { signedThisRun: 20 },
		});
		expect([...h.store.batches.values()].every((b) => b.status === "signed")).toBe(true);
		// Nothing to cancel now; an unknown run is a 404.
		await expect(h.batcher.cancel()).rejects.toMatchObject({
			code: 409,
			type: "RUN_NOT_ACTIVE",
			message: `Run ${run.runId} is not running (it is cancelled): nothing to cancel`,
		});
		await expect(h.batcher.cancel("run-nope")).rejects.toMatchObject({
			code: 404,
			type: "RUN_NOT_FOUND",
		});
		h.signers.behaviour = undefined;
		const next = h.completed();
		await h.batcher.start({ batchSize: 10 });
		expect(await next).toMatchObject({ status: "completed", report: { signedThisRun: 80 } });
	});

	test("a run cancelled just before the batcher stopped ends cancelled when it resumes, dispatching nothing", async () => {
		const store = new MemoryBatcherStore();
		const startedAt = new Date().toISOString();
		await store.insertRun({
			_id: "run-c",
			runId: "run-c",
			batchSize: 10,
			status: "running",
			startedAt,
			finishedAt: null,
			report: null,
			cancelRequestedAt: startedAt,
		});
		const h = harness(30, {}, store);
		const done = h.completed();
		await h.batcher.resumeInterrupted();
		expect(await done).toMatchObject({ status: "cancelled" });
		expect(h.signers.calls).toHaveLength(0);
	});

	test("start refuses a wrong batch size (422, naming the field and range) and a second run while one is active (409)", async () => {
		const h = harness(50);
		for (const bad of [0, -1, 1.5, 100_001, "300", true])
			await expect(h.batcher.start({ batchSize: bad })).rejects.toMatchObject({
				code: 422,
				type: "INVALID_BATCH_SIZE",
				data: { field: "batchSize", min: 1, max: 100_000 },
			});
		expect(h.store.runs.size).toBe(0);
		let hold!: () => void;
		const gate = new Promise<void>((resolve) => (hold = resolve));
		h.signers.behaviour = async (params, node) => (await gate, h.signers.sign(params, node));
		const done = h.completed();
		const first = await h.batcher.start({ batchSize: 25 });
		await expect(h.batcher.start({ batchSize: 25 })).rejects.toMatchObject({
			code: 409,
			type: "RUN_ACTIVE",
			data: { runId: first.runId, batchSize: 25 },
		});
		hold();
		await done;
	});

	test("a batch size whose batches cannot reach a signer in one message is refused at the start, naming the limit and the largest that fits", async () => {
		const h = harness(50);
		// 20 bytes per record (stats) + 24 of JSON: 1,000 records take about 45 KB.
		h.signers.maxPayload = 32 * 1024;
		const refused = await h.batcher.start({ batchSize: 1_000 }).then(
			() => null,
			(err: Error) => err,
		);
		expect(refused).toMatchObject({
			code: 422,
			type: "BATCH_TOO_LARGE",
			data: { field: "batchSize", value: 1_000, max: 721, maxPayload: 32 * 1024 },
		});
		expect(refused!.message).toMatch(
			/batchSize 1000 does not fit one message to a signer: .* at most 32 KB \(its max_payload\)\. Use a batch size of at most 721/,
		);
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
			store.insertBatch = async (batch) => {
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
			expect(completion).toMatchObject({
				status: "completed",
				report: { signedThisRun: 40, batches: 4, failedBatches: 0 },
			});
			expect(storeDown).toBeLessThan(0);
			expect(recordsDown).toBeLessThan(0);
			expect([...store.batches.values()].every((b) => b.status === "signed")).toBe(true);
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
		await expect(
			h.batcher.start({ batchSize: 6, idempotencyKey: "client-1" }),
		).rejects.toMatchObject({ code: 422, type: "IDEMPOTENCY_KEY_REUSED" });
		await expect(h.batcher.start({ idempotencyKey: "é" })).rejects.toMatchObject({
			code: 422,
			type: "INVALID_IDEMPOTENCY_KEY",
		});
		expect(h.store.runs.size).toBe(1);
	});
});

describe("a run over the store as it is, while records arrive", () => {
	test("completes once what the store held at its start is signed, however many arrive meanwhile, even below its cursor", async () => {
		const h = harness(40);
		let arrivals = 0;
		h.signers.behaviour = async (params, node) => {
			// Each batch, two records arrive whose ids sort before every seeded one.
			h.records.arrive([`a-${arrivals++}`, `a-${arrivals++}`], h.clock.now());
			return h.signers.sign(params, node);
		};
		const done = h.completed();
		const run = await h.batcher.start({ batchSize: 10 });
		expect(await done).toMatchObject({ status: "completed", error: null });
		const seeded = h.records.ids.filter((id) => id.startsWith("r"));
		expect(seeded.every((id) => h.records.signed.has(id))).toBe(true);
		expect(arrivals).toBeGreaterThan(0);
		expect(h.store.runs.get(run.runId)).toMatchObject({ status: "completed" });
	});
});

describe("a follow run (docs/design.md §7.7)", () => {
	/** The batches sent so far: their sizes and why each is short. */
	const sent = (h: Harness) =>
		h.signers.calls.map((c) => {
			const doc = h.store.batches.get(c.params.batchId)!;
			return [c.params.records.length, doc.short];
		});

	/** Lets the loop run without moving the clock, and says how many batches went out. */
	const calmCalls = async (h: Harness) => {
		await settle(50);
		return h.signers.calls.length;
	};

	test("signs what waits in full batches, then the rest at once (it waited before the run); arrivals go as a full batch at once, or as one batch marked lingered after LINGER_MS; it never ends by itself; cancel ends it", async () => {
		const h = harness(25);
		const run = await h.batcher.start({ batchSize: 10, follow: true });
		expect(run).toMatchObject({ follow: true, batchSize: 10, status: "running" });
		await callsReach(h, 3);
		expect(sent(h)).toEqual([
			[10, null],
			[10, null],
			[5, "lingered"],
		]);

		// Three arrive: they wait for LINGER_MS (200 ms), then go as one batch.
		h.records.arrive(["a1", "a2", "a3"], h.clock.now());
		h.batcher.recordsArrived();
		expect(await calmCalls(h)).toBe(3);
		await h.clock.advance(199);
		expect(await calmCalls(h)).toBe(3);
		await h.clock.advance(1);
		expect(await calmCalls(h)).toBe(4);
		expect(sent(h)[3]).toEqual([3, "lingered"]);
		expect(h.signers.calls[3].params.records.map((r) => r.id)).toEqual(["a1", "a2", "a3"]);

		// A full batch's worth goes at once, whatever the linger.
		h.records.arrive(
			Array.from({ length: 12 }, (_, i) => `b${i}`),
			h.clock.now(),
		);
		h.batcher.recordsArrived();
		expect(await calmCalls(h)).toBe(5);
		expect(sent(h)[4]).toEqual([10, null]);
		await h.clock.advance(200);
		expect(sent(h)[5]).toEqual([2, "lingered"]);

		// Everything is signed, and the run goes on.
		expect(h.records.signed.size).toBe(25 + 3 + 12);
		await h.clock.advance(5_000);
		expect(h.events.some((e) => e.event === "run.completed")).toBe(false);
		expect((await h.batcher.status()).active).toBe(true);
		// Each record in one batch; no batch larger than the run's size.
		const ids = h.signers.calls.flatMap((c) => c.params.records.map((r) => r.id));
		expect(new Set(ids).size).toBe(ids.length);

		const done = h.completed();
		await h.batcher.cancel();
		expect(await done).toMatchObject({
			status: "cancelled",
			report: { signedThisRun: 40, batches: 6 },
		});
		expect(h.store.runs.get(run.runId)).toMatchObject({ follow: true, status: "cancelled" });
	});

	test("records that arrive while it waits are paged in arrival order, whatever their ids", async () => {
		const h = harness(0);
		await h.batcher.start({ batchSize: 4, follow: true });
		h.records.arrive(["z9", "a1"], h.clock.now());
		h.batcher.recordsArrived();
		await settle(50);
		h.records.arrive(["m5", "0"], h.clock.now());
		h.batcher.recordsArrived();
		expect(await calmCalls(h)).toBe(1);
		expect(h.signers.calls[0].params.records.map((r) => r.id)).toEqual(["z9", "a1", "m5", "0"]);
		const done = h.completed();
		await h.batcher.cancel();
		await done;
	});

	test("a missed records.arrived costs at most the poll: the run looks again within a second", async () => {
		const h = harness(0);
		await h.batcher.start({ batchSize: 4, follow: true });
		await settle(50);
		h.records.arrive(["quiet-1"], h.clock.now());
		await h.clock.advance(1_000);
		await h.clock.advance(200);
		expect(await calmCalls(h)).toBe(1);
		expect(sent(h)).toEqual([[1, "lingered"]]);
		const done = h.completed();
		await h.batcher.cancel();
		await done;
	});

	test("its batch size must fit a batch of the largest records a submission may hold in one NATS message", async () => {
		const h = harness(5);
		h.signers.maxPayload = 1_048_576;
		await expect(h.batcher.start({ batchSize: 325, follow: true })).rejects.toMatchObject({
			type: "BATCH_TOO_LARGE",
			data: { max: 324 },
		});
		// The same size is fine for a run over the store as it is: its records are small.
		const done = h.completed();
		await h.batcher.start({ batchSize: 325 });
		await done;
		const follow = await h.batcher.start({ batchSize: 324, follow: true });
		expect(follow).toMatchObject({ follow: true, batchSize: 324 });
		const cancelled = h.completed();
		await h.batcher.cancel();
		await cancelled;
	});

	test("while it is active, another start is refused (409 RUN_ACTIVE)", async () => {
		const h = harness(5);
		const run = await h.batcher.start({ batchSize: 10, follow: true });
		await expect(h.batcher.start({ batchSize: 10 })).rejects.toMatchObject({
			type: "RUN_ACTIVE",
			data: { runId: run.runId },
			// It never ends by itself: the refusal says what to do instead of waiting for it.
			message: expect.stringContaining(
				`never ends by itself: it signs records as they arrive; cancel it first (POST /api/runs/${run.runId}/cancel`,
			),
		});
		await expect(h.batcher.start({ follow: true })).rejects.toMatchObject({
			type: "RUN_ACTIVE",
		});
		const done = h.completed();
		await h.batcher.cancel();
		await done;
	});

	test("an interrupted follow run goes on where the process resumes it; one that does not follow ends it and dispatches nothing", async () => {
		const interrupted = (): RunDoc => ({
			_id: "run-follow",
			runId: "run-follow",
			batchSize: 10,
			status: "running",
			startedAt: new Date(Date.parse("2026-01-01T00:00:00.000Z") - 60_000).toISOString(),
			finishedAt: null,
			follow: true,
		});

		const store = new MemoryBatcherStore();
		await store.insertRun(interrupted());
		const resumed = harness(12, {}, store);
		await resumed.batcher.resumeInterrupted();
		await callsReach(resumed, 2);
		expect(sent(resumed)).toEqual([
			[10, null],
			[2, "lingered"],
		]);
		expect((await resumed.batcher.status()).run).toMatchObject({
			runId: "run-follow",
			status: "running",
		});
		const cancelled = resumed.completed();
		await resumed.batcher.cancel();
		await cancelled;

		const other = new MemoryBatcherStore();
		await other.insertRun(interrupted());
		const oneShot = harness(12, { interruptedFollow: "end" }, other);
		const ended = oneShot.completed();
		await oneShot.batcher.resumeInterrupted();
		expect(await ended).toMatchObject({ status: "cancelled", report: { runId: "run-follow" } });
		expect(oneShot.signers.calls).toHaveLength(0);
		expect(other.runs.get("run-follow")).toMatchObject({ status: "cancelled" });
		expect((await oneShot.batcher.status()).active).toBe(false);
		// The records it left waiting are signed by a run of the process's own.
		const done = oneShot.completed();
		const own = await oneShot.batcher.start({});
		expect(await done).toMatchObject({
			status: "completed",
			report: { runId: own.runId, signedThisRun: 12 },
		});
	});
});
