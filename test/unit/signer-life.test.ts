/**
 * A batch's life on a signer without a broker (src/signer/signer.ts): plain objects for the
 * records, the keyring and the signing keys, and a clock moved by hand.
 */
import type {
	Lease,
	LeaseChange,
	RecordPayload,
	SignatureDoc,
	StoreSignaturesParams,
	StoreSignaturesResult,
} from "../../src/contract";
import { LeaseDeadlineError } from "../../src/signer/jws";
import {
	Signer,
	SignerStoppingError,
	TRANSFER_CHUNK,
	type BatchCalls,
	type SignerOptions,
	type SigningKeys,
} from "../../src/signer/signer";
import { FakeClock, settle } from "../support/fake-clock";

const OPTIONS: SignerOptions = {
	leaseTtlMs: 3_000,
	leaseMarginMs: 500,
	acquireWaitMs: 1_000,
	shutdownDrainMs: 2_000,
	releaseTimeoutMs: 1_000,
	storeTimeoutMs: 1_000,
	signingThreads: 0,
};

/** The records and the keyring a batch talks to, with a log of every call in order. */
class Calls implements BatchCalls {
	readonly log: string[] = [];
	readonly stored: SignatureDoc[] = [];
	leases = 0;
	expiresAt = 0;
	failStore: Error | null = null;

	constructor(private readonly clock: FakeClock) {}

	async storeSignatures({ batchId, keyId, leaseId, signatures }: StoreSignaturesParams) {
		this.log.push(`store ${signatures.length}`);
		if (this.failStore) throw this.failStore;
		this.stored.push(...signatures.map((s) => ({ ...s, batchId, keyId, leaseId })));
		return { stored: signatures.length, duplicates: 0 };
	}
	async acquire(): Promise<Lease> {
		this.log.push("acquire");
		this.expiresAt = this.clock.now() + OPTIONS.leaseTtlMs;
		return {
			leaseId: `lease-${++this.leases}`,
			keyId: "key-007",
			expiresAt: new Date(this.expiresAt).toISOString(),
			key: "sealed",
			transportKey: { kty: "OKP", crv: "X25519", x: "transport" },
			token: `token-of-lease-${this.leases}`,
		};
	}
	async renew(leaseId: string): Promise<LeaseChange> {
		this.log.push(`renew ${leaseId}`);
		this.expiresAt = this.clock.now() + OPTIONS.leaseTtlMs;
		return { leaseId, changed: true, expiresAt: new Date(this.expiresAt).toISOString() };
	}
	async release(leaseId: string): Promise<LeaseChange> {
		this.log.push(`release ${leaseId}`);
		return { leaseId, changed: true };
	}
}

/** Signs instantly, or waits for the test to let it finish; respects the deadline like the pool. */
class Keys implements SigningKeys<string> {
	gate: Promise<void> | null = null;
	deadlines: number[] = [];
	constructor(private readonly clock: FakeClock) {}
	async open(lease: Lease) {
		return `opened-${lease.keyId}`;
	}
	async sign(key: string, keyId: string, records: RecordPayload[], deadline: () => number) {
		if (this.gate) await this.gate;
		this.deadlines.push(deadline());
		if (this.clock.now() >= deadline()) throw new LeaseDeadlineError(0, records.length);
		const signed = records.map((r) => ({
			recordId: r.id,
			jws: `${key}/${keyId}/${r.id}`,
			signedAt: new Date(this.clock.now()).toISOString(),
		}));
		return { signed, groups: null, leafHashes: null };
	}
}

function setup(nodeStopping = () => false) {
	const clock = new FakeClock();
	const calls = new Calls(clock);
	const keys = new Keys(clock);
	const releaseFailures = { count: 0 };
	const signer = new Signer(OPTIONS, {
		nodeID: "signer-9",
		keys,
		clock,
		logger: { info() {}, warn() {} },
		nodeStopping,
		onReleaseFailed: () => releaseFailures.count++,
	});
	return { clock, calls, keys, signer, releaseFailures };
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => `rec-${i}`);
const records = (n: number) => ids(n).map((id) => ({ id, data: `data-of-${id}` }));

describe("a batch's life on a signer", () => {
	test("lease, sign, store, then release; every signature names the batch, key and lease", async () => {
		const { calls, signer } = setup();
		const result = await signer.signBatch(
			{ batchId: "b1", runId: "r1", records: records(3) },
			calls,
		);
		expect(calls.log).toEqual(["acquire", "store 3", "release lease-1"]);
		expect(result).toMatchObject({
			batchId: "b1",
			keyId: "key-007",
			leaseId: "lease-1",
			signer: "signer-9",
			stored: 3,
			duplicates: 0,
		});
		expect(calls.stored.map((s) => [s.recordId, s.batchId, s.keyId, s.leaseId, s.jws])).toEqual(
			ids(3).map((id) => [id, "b1", "key-007", "lease-1", `opened-key-007/key-007/${id}`]),
		);
	});

	test("a large batch's signatures go to the records service in pieces that fit a message", async () => {
		const { calls, signer } = setup();
		await signer.signBatch(
			{ batchId: "b1", runId: "r1", records: records(TRANSFER_CHUNK * 2 + 1) },
			calls,
		);
		expect(calls.log).toEqual([
			"acquire",
			`store ${TRANSFER_CHUNK}`,
			`store ${TRANSFER_CHUNK}`,
			"store 1",
			"release lease-1",
		]);
	});

	test("the lease is renewed every third of its TTL while signing, and the deadline moves with it", async () => {
		const { clock, calls, keys, signer } = setup();
		let finish!: () => void;
		keys.gate = new Promise((resolve) => (finish = resolve));
		const batch = signer.signBatch({ batchId: "b1", runId: "r1", records: records(2) }, calls);
		await settle();
		await clock.advance(OPTIONS.leaseTtlMs * 2);
		expect(calls.log.filter((line) => line.startsWith("renew"))).toHaveLength(6);
		finish();
		await batch;
		// Signed at 6 s: past the first lease's deadline (2.5 s), within the renewed one.
		expect(keys.deadlines[0]).toBe(calls.expiresAt - OPTIONS.leaseMarginMs);
		expect(calls.stored).toHaveLength(2);
		// Renewals stop with the batch.
		await clock.advance(OPTIONS.leaseTtlMs);
		expect(calls.log.filter((line) => line.startsWith("renew"))).toHaveLength(6);
	});

	test("past its lease's deadline nothing is stored, the batch is handed back and the lease released", async () => {
		const { clock, calls, keys, signer } = setup();
		let finish!: () => void;
		keys.gate = new Promise((resolve) => (finish = resolve));
		// Renewals get no answer (a NATS outage): the deadline stays where the grant put it.
		calls.renew = () => new Promise(() => undefined);
		const batch = signer.signBatch({ batchId: "b1", runId: "r1", records: records(2) }, calls);
		await settle();
		await clock.advance(OPTIONS.leaseTtlMs);
		finish();
		await expect(batch).rejects.toBeInstanceOf(LeaseDeadlineError);
		expect(calls.stored).toEqual([]);
		expect(calls.log.at(-1)).toBe("release lease-1");
	});

	test("a failed store still releases the lease", async () => {
		const { calls, signer } = setup();
		calls.failStore = new Error("records unreachable");
		await expect(
			signer.signBatch({ batchId: "b1", runId: "r1", records: records(2) }, calls),
		).rejects.toThrow("records unreachable");
		expect(calls.log).toEqual(["acquire", "store 2", "release lease-1"]);
	});

	test("a release that fails leaves the batch signed and is counted (the lease waits for its expiry)", async () => {
		const { calls, signer, releaseFailures } = setup();
		calls.release = async () => {
			throw new Error(
				"Request is rejected when call 'keyring.release' action on 'keyring' node.",
			);
		};
		await expect(
			signer.signBatch({ batchId: "b1", runId: "r1", records: records(2) }, calls),
		).resolves.toMatchObject({ stored: 2 });
		expect(releaseFailures.count).toBe(1);
	});

	test("a release failed by a NATS reconnect (maybe never delivered) is sent once more; one that fails again is counted", async () => {
		const { calls, signer, releaseFailures } = setup();
		const lostInReconnect = () =>
			Object.assign(
				new Error("Request is rejected when call 'keyring.release' action on 'null' node."),
				{ type: "REQUEST_REJECTED" },
			);
		const sent: string[] = [];
		calls.release = async (leaseId: string) => {
			sent.push(leaseId);
			if (sent.length === 1) throw lostInReconnect();
			return { leaseId, changed: true };
		};
		await expect(
			signer.signBatch({ batchId: "b1", runId: "r1", records: records(2) }, calls),
		).resolves.toMatchObject({ stored: 2 });
		expect({ sent, failures: releaseFailures.count }).toEqual({
			sent: ["lease-1", "lease-1"],
			failures: 0,
		});

		const again = setup();
		let tries = 0;
		again.calls.release = async () => {
			tries++;
			throw lostInReconnect();
		};
		await expect(
			again.signer.signBatch(
				{ batchId: "b2", runId: "r1", records: records(1) },
				again.calls,
			),
		).resolves.toMatchObject({ stored: 1 });
		expect({ tries, failures: again.releaseFailures.count }).toEqual({ tries: 2, failures: 1 });
	});

	test("the batches in flight are known by id while they run: what the batcher asks a signer", async () => {
		const { keys, calls, signer } = setup();
		let finish!: () => void;
		keys.gate = new Promise((resolve) => (finish = resolve));
		const batch = signer.signBatch({ batchId: "b7", runId: "r1", records: records(1) }, calls);
		await settle();
		expect(signer.batchIds()).toEqual(["b7"]);
		finish();
		await batch;
		expect(signer.batchIds()).toEqual([]);
	});

	test("a stop that has waited its drain out gives up the calls still waiting, so the node stops now", async () => {
		let stopping = false;
		const { clock, calls, signer } = setup(() => stopping);
		// A store whose reply never comes (lost in an outage) until the call is given up.
		const lost: BatchCalls["storeSignatures"] = (_batch, _timeout, signal) =>
			new Promise<StoreSignaturesResult>((_, reject) =>
				signal.addEventListener("abort", () => reject(signal.reason as Error), {
					once: true,
				}),
			);
		calls.storeSignatures = lost as Calls["storeSignatures"];
		const batch = signer
			.signBatch({ batchId: "b1", runId: "r1", records: records(2) }, calls)
			.catch((err: Error) => err);
		await settle();
		stopping = true;
		const stopped = signer.stop();
		await clock.advance(OPTIONS.shutdownDrainMs + 2_000);
		expect(await batch).toMatchObject({ message: "the signer is stopping" });
		await stopped;
		expect(signer.busy).toBe(0);
	});

	test("a stopping signer lets batches in flight finish within the drain, and hands back one that cannot start", async () => {
		let stopping = false;
		const { clock, calls, keys, signer } = setup(() => stopping);
		let finish!: () => void;
		keys.gate = new Promise((resolve) => (finish = resolve));
		const first = signer.signBatch({ batchId: "b1", runId: "r1", records: records(2) }, calls);
		await settle();
		stopping = true;
		const stopped = signer.stop();
		await clock.advance(500);
		finish();
		await expect(first).resolves.toMatchObject({ stored: 2 });
		await stopped;
		expect(signer.busy).toBe(0);
		// After the drain, a batch that arrives is handed back at once, its lease released.
		await clock.advance(OPTIONS.shutdownDrainMs);
		keys.gate = null;
		await expect(
			signer.signBatch({ batchId: "b2", runId: "r1", records: records(1) }, calls),
		).rejects.toBeInstanceOf(SignerStoppingError);
		expect(calls.log.slice(-2)).toEqual(["acquire", "release lease-2"]);
	});
});
