/**
 * The store behaviour every backend must show: the unique index is the guard, a bulk with
 * already-stored records keeps the first signature and counts the rest. Runs on the
 * embedded NeDB store (memory and files) always, and on MongoDB too when MONGO_URI is set:
 *   MONGO_URI=mongodb://127.0.0.1:27017/signing-test npm test -- test/store.test.ts
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { DbMixin, DuplicateKeyError, type Store } from "../mixins/db.mixin";
import type { SignatureDoc } from "../src/contract";

interface Backend {
	name: string;
	settings(): { dataDir: string; mongoUri: string | null };
}

const backends: Backend[] = [
	{ name: "NeDB in memory", settings: () => ({ dataDir: "", mongoUri: null }) },
	{ name: "NeDB files", settings: () => ({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), "signing-store-")), mongoUri: null }) }
];
if (process.env.MONGO_URI) {
	// A database of its own per test run, dropped afterwards.
	const uri = new URL(process.env.MONGO_URI);
	uri.pathname = `/signing-store-test-${process.pid}`;
	backends.push({ name: "MongoDB", settings: () => ({ dataDir: "", mongoUri: uri.toString() }) });
}

function signature(recordId: string, batchId: string): SignatureDoc {
	return { _id: recordId, recordId, keyId: "key-000", batchId, leaseId: `lease-${batchId}`, jws: `jws-of-${recordId}-${batchId}`, signedAt: new Date().toISOString() };
}

describe.each(backends)("store on $name", backend => {
	let broker: ServiceBroker;
	let signatures: Store<SignatureDoc>;
	let settings: { dataDir: string; mongoUri: string | null };

	beforeEach(async () => {
		settings = backend.settings();
		broker = new ServiceBroker({ logger: false });
		const service = broker.createService({ name: "store-probe", mixins: [DbMixin({ signatures: { uniqueIndexes: ["recordId"] } })], settings });
		await broker.start();
		signatures = (service as unknown as { stores: { signatures: Store<SignatureDoc> } }).stores.signatures;
	});

	afterEach(async () => {
		if (settings.mongoUri) {
			const adapters = (broker.getLocalService("store-probe") as unknown as { adapters: Array<{ db: { dropDatabase(): Promise<unknown> } }> }).adapters;
			await adapters[0].db.dropDatabase();
		}
		await broker.stop();
		if (settings.dataDir) fs.rmSync(settings.dataDir, { recursive: true, force: true });
	});

	test("a bulk with already-signed records keeps the first signatures, stores the rest, counts the duplicates", async () => {
		expect(await signatures.insertManyUnique(["r1", "r2", "r3"].map(id => signature(id, "b1")), "recordId")).toEqual({ inserted: 3, duplicates: 0 });
		expect(await signatures.insertManyUnique(["r2", "r3", "r4", "r5"].map(id => signature(id, "b2")), "recordId")).toEqual({ inserted: 2, duplicates: 2 });
		const stored = await signatures.find({}, { sort: { recordId: 1 } });
		expect(stored.map(s => [s.recordId, s.batchId])).toEqual([["r1", "b1"], ["r2", "b1"], ["r3", "b1"], ["r4", "b2"], ["r5", "b2"]]);
	});

	test("the unique index refuses a second signature for a record even without the duplicate-tolerant path", async () => {
		await signatures.insert(signature("r1", "b1"));
		await expect(signatures.insert({ ...signature("r1", "b2"), _id: "another-id" })).rejects.toBeInstanceOf(DuplicateKeyError);
		expect(await signatures.count({ recordId: "r1" })).toBe(1);
	});

	test("concurrent bulks over the same records store each record once", async () => {
		const ids = Array.from({ length: 200 }, (_, i) => `r${String(i).padStart(3, "0")}`);
		const results = await Promise.all(["b1", "b2", "b3", "b4"].map(batch => signatures.insertManyUnique(ids.map(id => signature(id, batch)), "recordId")));
		expect(results.reduce((sum, r) => sum + r.inserted, 0)).toBe(200);
		expect(results.reduce((sum, r) => sum + r.duplicates, 0)).toBe(600);
		expect(await signatures.count()).toBe(200);
	});

	test("a duplicate inside one bulk is stored once", async () => {
		expect(await signatures.insertManyUnique([signature("r1", "b1"), signature("r1", "b1"), signature("r2", "b1")], "recordId")).toEqual({ inserted: 2, duplicates: 1 });
	});

	test("update, find with sort/limit/projection and count behave alike", async () => {
		await signatures.insertMany(["c", "a", "b"].map(id => signature(id, "b1")));
		expect(await signatures.update({ recordId: "b" }, { keyId: "key-007" })).toBe(1);
		expect(await signatures.update({ recordId: "zz" }, { keyId: "key-007" })).toBe(0);
		expect(await signatures.update({ batchId: "b1" }, { leaseId: "l-9" }, { multi: true })).toBe(3);
		const page = await signatures.find({ _id: { $gt: "a" } }, { sort: { _id: 1 }, limit: 1, projection: { recordId: 1, keyId: 1 } });
		expect(page).toEqual([expect.objectContaining({ recordId: "b", keyId: "key-007" })]);
		expect(page[0].jws).toBeUndefined();
		expect(await signatures.count({ leaseId: "l-9" })).toBe(3);
	});
});

test("the file store keeps what was written across a restart", async () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-store-"));
	try {
		for (const round of [1, 2]) {
			const broker = new ServiceBroker({ logger: false });
			const service = broker.createService({ name: "store-probe", mixins: [DbMixin({ signatures: { uniqueIndexes: ["recordId"] } })], settings: { dataDir, mongoUri: null } });
			await broker.start();
			const store = (service as unknown as { stores: { signatures: Store<SignatureDoc> } }).stores.signatures;
			const result = await store.insertManyUnique([signature("r1", `b${round}`), signature(`r${round + 1}`, `b${round}`)], "recordId");
			expect(result).toEqual(round === 1 ? { inserted: 2, duplicates: 0 } : { inserted: 1, duplicates: 1 });
			await broker.stop();
		}
		expect(fs.existsSync(path.join(dataDir, "signatures.db"))).toBe(true);
	} finally {
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
});
