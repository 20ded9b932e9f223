/**
 * What every backend of every owner's store must do: the unique keys are the guards (one
 * signature per record, one lease per seq, one open lease per key), bulks keep the first
 * signature and count the rest, queries page in id order. Runs on the embedded SQLite store
 * (in memory and in files) always, and on MongoDB when MONGO_URI names a replica set; without
 * it the MongoDB cases are listed as skipped, never left out:
 *   MONGO_URI='mongodb://127.0.0.1:27017/signing-test?replicaSet=rs0' npm test -- test/unit/store.test.ts
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { DatabaseSync } from "node:sqlite";
import { MongoBatcherStore } from "../../src/batcher/mongo-store";
import { SqliteBatcherStore } from "../../src/batcher/sqlite-store";
import { KEY_LIFECYCLE_NONE, type BatchDoc, type LeaseDoc, type RunDoc } from "../../src/contract";
import { MongoKeyringStore } from "../../src/keyring/mongo-store";
import { SqliteKeyringStore } from "../../src/keyring/sqlite-store";
import {
	DuplicateLeaseError,
	FencedError,
	type KeyringStore,
	type RoleHolder,
} from "../../src/keyring/store";
import { MongoRecordsStore } from "../../src/records/mongo-store";
import { SqliteRecordsStore } from "../../src/records/sqlite-store";
import { BatchClosedError, type RecordsStore } from "../../src/records/store";
import { connectMongo, type MongoConnection } from "../../src/store/mongo";

interface Stores {
	records: RecordsStore & { close(): Promise<void> };
	keyring: KeyringStore;
	batcher: SqliteBatcherStore | MongoBatcherStore;
}

interface Backend {
	name: string;
	open(): Promise<Stores>;
	cleanup(): Promise<void>;
	/**
	 * Lets `ms` pass on the clock that decides whether the keyring role expired. SQLite compares
	 * the claims' own times (nothing to do); MongoDB its server's clock, so the role's validity
	 * is moved back instead of waiting.
	 */
	roleClockAdvances(ms: number): Promise<void>;
	/** A connection to the backend's database, for the MongoDB-only checks. */
	connect?(): Promise<MongoConnection>;
}

/** The title of what only runs on MongoDB, when MONGO_URI is unset. */
const NEEDS_MONGO = "needs MONGO_URI (a MongoDB replica set); not set";

const service = {
	broker: new ServiceBroker({ logger: false }),
	logger: new ServiceBroker({ logger: false }).getLogger("store-test"),
};

function sqliteBackend(name: string, inFiles: boolean): Backend {
	let dataDir = "";
	return {
		name,
		async open() {
			if (inFiles && !dataDir)
				dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-store-"));
			return {
				records: SqliteRecordsStore.open(dataDir),
				keyring: SqliteKeyringStore.open(dataDir),
				batcher: SqliteBatcherStore.open(dataDir),
			};
		},
		async cleanup() {
			if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
			dataDir = "";
		},
		async roleClockAdvances() {},
	};
}

/** A database of its own per test on MONGO_URI, dropped afterwards. Nothing connects until a test opens it. */
function mongoBackend(): Backend {
	let uri = "";
	let n = 0;
	const connect = () => connectMongo(uri, service, "store-test");
	return {
		name: "MongoDB",
		async open() {
			const url = new URL(process.env.MONGO_URI!);
			url.pathname = `/signing-store-test-${process.pid}-${++n}`;
			uri = url.toString();
			return {
				records: await MongoRecordsStore.open(uri, service),
				keyring: await MongoKeyringStore.open(uri, service),
				batcher: await MongoBatcherStore.open(uri, service),
			};
		},
		async cleanup() {
			if (!uri) return;
			const connection = await connect();
			await connection.db.dropDatabase();
			await connection.close();
		},
		async roleClockAdvances(ms) {
			const connection = await connect();
			try {
				await connection.db
					.collection<{ _id: string }>("keyring")
					.updateOne({ _id: "role" }, [
						{ $set: { validUntil: { $subtract: ["$validUntil", ms] } } },
					]);
			} finally {
				await connection.close();
			}
		},
		connect,
	};
}

const backends: Backend[] = [
	sqliteBackend("SQLite in memory", false),
	sqliteBackend("SQLite files", true),
];

/** A seeded record names no submitter. */
const seeded = { submittedBy: null, submittedAt: null };

const at = (second: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString();

/** A software key as the keyring stores it, its private half sealed. */
const key = (keyId: string) => ({
	keyId,
	createdAt: at(0),
	publicJwk: { kty: "OKP", crv: "Ed25519", x: keyId },
	sealedPrivateKey: `sealed-${keyId}`,
});

function signatures(ids: string[], batch: string) {
	return {
		batchId: batch,
		keyId: `key-of-${batch}`,
		leaseId: `lease-of-${batch}`,
		signatures: ids.map((recordId) => ({
			recordId,
			jws: `jws-of-${recordId}-${batch}`,
			signedAt: at(1),
		})),
	};
}

function lease(leaseId: string, keyId: string, grantSeq: number): LeaseDoc {
	return {
		leaseId,
		keyId,
		holder: "signer-1",
		grantSeq,
		grantedAt: at(grantSeq),
		expiresAt: at(grantSeq + 30),
		endSeq: null,
		endedAt: null,
		end: null,
	};
}

describe.each(backends)("store on $name", (backend) => storeContract(backend));
if (process.env.MONGO_URI)
	describe("store on MongoDB", () => {
		storeContract(mongoBackend());
		onlyOnMongo(mongoBackend());
	});
else
	describe.skip(`store on MongoDB: ${NEEDS_MONGO}`, () => {
		storeContract(mongoBackend());
		onlyOnMongo(mongoBackend());
	});

function storeContract(backend: Backend): void {
	let stores: Stores;

	beforeEach(async () => {
		stores = await backend.open();
	});

	afterEach(async () => {
		await stores.records.close();
		await stores.keyring.close();
		await stores.batcher.close();
		await backend.cleanup();
	});

	describe("records", () => {
		beforeEach(async () => {
			await stores.records.insertRecords(
				["r1", "r2", "r3", "r4", "r5"].map((id) => ({ id, data: `data-${id}` })),
			);
		});

		test("maxRecordBytes counts a record's data as JSON, as a signer receives it, measured from the store and kept up by submissions", async () => {
			// A quote and a backslash take 2 bytes each, a control character 6, é 2 (UTF-8).
			await stores.records.submitRecords([{ id: "q1", data: '"\\\u0001é' }], "alice", at(1));
			expect(await stores.records.maxRecordBytes()).toBe(2 + 2 + 2 + 6 + 2);
			await stores.records.submitRecords(
				[{ id: "q2", data: "\u0001".repeat(10) }],
				"alice",
				at(2),
			);
			expect(await stores.records.maxRecordBytes()).toBe(2 + 60);
		});

		test("a submission is stored whole naming its submitter; the same data again is a replay; other data stores nothing of it", async () => {
			expect(
				await stores.records.submitRecords(
					[
						{ id: "s2", data: "two" },
						{ id: "s1", data: "one" },
					],
					"alice",
					at(5),
				),
			).toEqual({ stored: 2, replayed: 0 });
			expect(await stores.records.record("s1")).toEqual({
				id: "s1",
				data: "one",
				submittedBy: "alice",
				submittedAt: at(5),
			});
			expect(await stores.records.record("r1")).toMatchObject({ submittedBy: null });
			expect(
				await stores.records.submitRecords(
					[
						{ id: "s1", data: "one" },
						{ id: "s3", data: "three" },
					],
					"bob",
					at(6),
				),
			).toEqual({ stored: 1, replayed: 1 });
			// The replayed record keeps its first submitter.
			expect(await stores.records.record("s1")).toMatchObject({ submittedBy: "alice" });
			const count = await stores.records.recordCount();
			await expect(
				stores.records.submitRecords(
					[
						{ id: "s4", data: "four" },
						{ id: "s2", data: "not two" },
						{ id: "r1", data: "not data-r1" },
					],
					"mallory",
					at(7),
				),
			).rejects.toMatchObject({ type: "RECORD_CONFLICT", ids: ["s2", "r1"] });
			expect(await stores.records.recordCount()).toBe(count);
			expect(await stores.records.record("s4")).toBeNull();
			expect(await stores.records.record("s2")).toMatchObject({ data: "two" });
		});

		test("unsigned records page in arrival order: seeded ones in id order, then each submission in request order", async () => {
			await stores.records.submitRecords(
				[
					{ id: "a9", data: "first" },
					{ id: "a1", data: "second" },
				],
				"alice",
				at(5),
			);
			await stores.records.submitRecords([{ id: "0-low", data: "third" }], "bob", at(6));
			await stores.records.storeSignatures(signatures(["r2", "a9"], "b1"));
			const all = await stores.records.unsignedArrivals(0, 100);
			expect(all.map((r) => r.id)).toEqual(["r1", "r3", "r4", "r5", "a1", "0-low"]);
			expect(all.map((r) => r.submittedAt)).toEqual([null, null, null, null, at(5), at(6)]);
			const seqs = all.map((r) => r.seq);
			expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
			const after = await stores.records.unsignedArrivals(all[3].seq, 1);
			expect(after.map((r) => [r.id, r.data])).toEqual([["a1", "second"]]);
		});

		test("a bulk with already-signed records keeps the first signatures, stores the rest, counts the duplicates", async () => {
			expect(
				await stores.records.storeSignatures(signatures(["r1", "r2", "r3"], "b1")),
			).toEqual({ stored: 3, duplicates: 0 });
			expect(
				await stores.records.storeSignatures(signatures(["r2", "r3", "r4", "r5"], "b2")),
			).toEqual({ stored: 2, duplicates: 2 });
			const { docs } = await stores.records.page("signatures", undefined, 10);
			expect(
				docs.map((s) => [
					(s as { recordId: string }).recordId,
					(s as { batchId: string }).batchId,
				]),
			).toEqual([
				["r1", "b1"],
				["r2", "b1"],
				["r3", "b1"],
				["r4", "b2"],
				["r5", "b2"],
			]);
			expect(await stores.records.signature("r2")).toMatchObject({
				recordId: "r2",
				batchId: "b1",
				keyId: "key-of-b1",
				leaseId: "lease-of-b1",
				jws: "jws-of-r2-b1",
			});
			expect(await stores.records.signedCount()).toBe(5);
		});

		test("concurrent bulks over the same records store each record once", async () => {
			const ids = ["r1", "r2", "r3", "r4", "r5"];
			const results = await Promise.all(
				["b1", "b2", "b3", "b4"].map((batch) =>
					stores.records.storeSignatures(signatures(ids, batch)),
				),
			);
			expect(results.reduce((sum, r) => sum + r.stored, 0)).toBe(5);
			expect(results.reduce((sum, r) => sum + r.duplicates, 0)).toBe(15);
			expect(await stores.records.signedCount()).toBe(5);
		});

		test("a closed batch answers what is stored under it and which of its records are unsigned, then refuses its signatures", async () => {
			await stores.records.storeSignatures(signatures(["r1", "r2"], "b1"));
			await stores.records.storeSignatures(signatures(["r3"], "b2"));
			const closed = await stores.records.closeBatch("b1", ["r1", "r2", "r3", "r4"]);
			expect(closed).toEqual({
				signed: [{ keyId: "key-of-b1", leaseId: "lease-of-b1", count: 2 }],
				unsigned: [{ id: "r4", data: "data-r4" }],
			});
			await expect(
				stores.records.storeSignatures(signatures(["r4"], "b1")),
			).rejects.toBeInstanceOf(BatchClosedError);
			expect(await stores.records.signature("r4")).toBeNull();
			// Closing again answers the same; a batch that stored nothing closes empty; other batches are untouched.
			expect(await stores.records.closeBatch("b1", ["r1", "r2", "r3", "r4"])).toEqual(closed);
			expect(await stores.records.closeBatch("b9", ["r5"])).toEqual({
				signed: [],
				unsigned: [{ id: "r5", data: "data-r5" }],
			});
			expect(await stores.records.storeSignatures(signatures(["r4"], "b3"))).toEqual({
				stored: 1,
				duplicates: 0,
			});
		});

		test("a batch closed while its signatures are being stored: either they are all in and the close counts them, or none is", async () => {
			const [stored, closed] = await Promise.allSettled([
				stores.records.storeSignatures(signatures(["r1", "r2", "r3"], "b1")),
				stores.records.closeBatch("b1", ["r1", "r2", "r3"]),
			]);
			const answer = (
				closed as PromiseFulfilledResult<Awaited<ReturnType<RecordsStore["closeBatch"]>>>
			).value;
			if (stored.status === "fulfilled")
				expect(answer).toEqual({
					signed: [{ keyId: "key-of-b1", leaseId: "lease-of-b1", count: 3 }],
					unsigned: [],
				});
			else
				expect({
					error: stored.reason,
					answer,
					signed: await stores.records.signedCount(),
				}).toEqual({
					error: expect.any(BatchClosedError),
					answer: { signed: [], unsigned: expect.any(Array) },
					signed: 0,
				});
		});

		test("a duplicate inside one bulk is stored once", async () => {
			expect(
				await stores.records.storeSignatures(signatures(["r1", "r1", "r2"], "b1")),
			).toEqual({ stored: 2, duplicates: 1 });
		});

		test("unsigned ids page in ascending order after the cursor; payloads come back in the order asked", async () => {
			await stores.records.storeSignatures(signatures(["r2", "r4"], "b1"));
			expect(await stores.records.unsignedRecords(undefined, 2)).toEqual([
				{ id: "r1", data: "data-r1" },
				{ id: "r3", data: "data-r3" },
			]);
			expect((await stores.records.unsignedRecords("r1", 10)).map((r) => r.id)).toEqual([
				"r3",
				"r5",
			]);
			// A signature after the cursor (r4) is skipped; none after it (r4 on), none to skip.
			expect((await stores.records.unsignedRecords("r3", 10)).map((r) => r.id)).toEqual([
				"r5",
			]);
			expect(await stores.records.unsignedRecords("r4", 10)).toEqual([
				{ id: "r5", data: "data-r5" },
			]);
			expect(await stores.records.unsignedRecords("r5", 10)).toEqual([]);
			expect(await stores.records.unsignedAmong(["r5", "r4", "nope", "r1"])).toEqual([
				{ id: "r5", data: "data-r5" },
				{ id: "r1", data: "data-r1" },
			]);
			expect(await stores.records.maxRecordBytes()).toBe("r1".length + "data-r1".length);
			expect(await stores.records.recordCount()).toBe(5);
			// Seeding twice adds nothing.
			await stores.records.insertRecords([{ id: "r1", data: "other" }]);
			expect(await stores.records.recordCount()).toBe(5);
			expect(await stores.records.record("r1")).toEqual({
				id: "r1",
				data: "data-r1",
				submittedBy: null,
				submittedAt: null,
			});
		});

		test("records and signatures page by id", async () => {
			await stores.records.storeSignatures(signatures(["r1", "r2", "r3"], "b1"));
			const first = await stores.records.page("records", undefined, 2);
			expect(first.docs.map((d) => (d as { _id: string })._id)).toEqual(["r1", "r2"]);
			const second = await stores.records.page("records", first.next!, 10);
			expect(second).toMatchObject({ next: null });
			expect(second.docs).toEqual([
				{ _id: "r3", data: "data-r3" },
				{ _id: "r4", data: "data-r4" },
				{ _id: "r5", data: "data-r5" },
			]);
			expect((await stores.records.page("signatures", "r2", 10)).docs).toEqual([
				expect.objectContaining({ _id: "r3", recordId: "r3", batchId: "b1" }),
			]);
		});

		test("list: records in id order with their signatures, all or signed or unsigned only, a cursor to the next page", async () => {
			await stores.records.storeSignatures(signatures(["r2", "r4", "r5"], "b1"));
			const ids = (list: { records: Array<{ id: string }> }) => list.records.map((r) => r.id);
			const first = await stores.records.list(undefined, 2, undefined);
			expect(first).toEqual({
				records: [
					{ id: "r1", data: "data-r1", ...seeded, signature: null },
					{
						id: "r2",
						data: "data-r2",
						...seeded,
						signature: {
							keyId: "key-of-b1",
							batchId: "b1",
							leaseId: "lease-of-b1",
							jws: "jws-of-r2-b1",
							signedAt: expect.any(String),
						},
					},
				],
				next: "r2",
			});
			const rest = await stores.records.list(first.next!, 10, undefined);
			expect([ids(rest), rest.next]).toEqual([["r3", "r4", "r5"], null]);
			const signedPage = await stores.records.list(undefined, 2, true);
			expect([ids(signedPage), signedPage.next]).toEqual([["r2", "r4"], "r4"]);
			expect(signedPage.records.every((r) => r.signature?.batchId === "b1")).toBe(true);
			expect(ids(await stores.records.list("r4", 2, true))).toEqual(["r5"]);
			const unsignedPage = await stores.records.list(undefined, 10, false);
			expect(unsignedPage).toEqual({
				records: [
					{ id: "r1", data: "data-r1", ...seeded, signature: null },
					{ id: "r3", data: "data-r3", ...seeded, signature: null },
				],
				next: null,
			});
			expect(await stores.records.list("r5", 10, undefined)).toEqual({
				records: [],
				next: null,
			});
		});
	});

	describe("keyring", () => {
		/** A claim of the keyring role by `holder` at `second`, valid for `ttl` seconds. */
		const claim = (
			holder: string,
			second: number,
			ttl = 30,
			mayTakeOver = (current: RoleHolder) =>
				Date.parse(current.expiresAt) <= Date.parse(at(second)),
		) =>
			stores.keyring.claimRole({
				holder,
				host: "host-a",
				pid: 4242,
				now: at(second),
				expiresAt: at(second + ttl),
				mayTakeOver,
			});
		const epochOf = async (holder: string, second = 0) => {
			const outcome = await claim(holder, second);
			if (!("claimed" in outcome)) throw new Error(`${holder} could not claim the role`);
			return outcome.claimed.epoch;
		};

		test("the store refuses a second open lease of a key and a second lease at one seq", async () => {
			const epoch = await epochOf("keyring-a");
			await stores.keyring.insertLease(lease("l1", "key-000", 1), epoch);
			await expect(
				stores.keyring.insertLease(lease("l2", "key-000", 2), epoch),
			).rejects.toBeInstanceOf(DuplicateLeaseError);
			await expect(
				stores.keyring.insertLease(lease("l3", "key-001", 1), epoch),
			).rejects.toBeInstanceOf(DuplicateLeaseError);
			await stores.keyring.insertLease(lease("l4", "key-001", 2), epoch);
			// Once ended, the key can be granted again.
			expect(
				await stores.keyring.endLease(
					"l1",
					{ end: "released", endSeq: 3, endedAt: at(3) },
					epoch,
				),
			).toBe(1);
			await stores.keyring.insertLease(lease("l5", "key-000", 4), epoch);
			const { docs } = await stores.keyring.page("leases", undefined, 10);
			expect(docs.map((d) => (d as LeaseDoc).leaseId).sort()).toEqual(["l1", "l4", "l5"]);
		});

		test("renew and end change only an open lease and say how many matched; a reclaim only an expired one; the summary rebuilds the state per key", async () => {
			const epoch = await epochOf("keyring-a");
			await stores.keyring.insertLease(lease("l1", "key-000", 1), epoch);
			await stores.keyring.insertLease(lease("l2", "key-001", 2), epoch);
			expect(await stores.keyring.renewLease("l1", at(99), epoch)).toBe(1);
			// Renewed to 99 s: a reclaim of what expired by 60 s leaves it alone.
			expect(
				await stores.keyring.endLease(
					"l1",
					{ end: "expired", endSeq: 3, endedAt: at(61), expiredBy: at(60) },
					epoch,
				),
			).toBe(0);
			expect(
				await stores.keyring.endLease(
					"l1",
					{ end: "expired", endSeq: 3, endedAt: at(101), expiredBy: at(99) },
					epoch,
				),
			).toBe(1);
			expect(
				await stores.keyring.endLease(
					"l1",
					{ end: "released", endSeq: 4, endedAt: at(102) },
					epoch,
				),
			).toBe(0);
			expect(await stores.keyring.renewLease("l1", at(120), epoch)).toBe(0);
			expect(await stores.keyring.lease("l1")).toMatchObject({
				leaseId: "l1",
				end: "expired",
				endSeq: 3,
				expiresAt: at(99),
			});
			await stores.keyring.insertLease(lease("l3", "key-000", 5), epoch);
			expect(
				await stores.keyring.endLease(
					"l3",
					{ end: "released", endSeq: 6, endedAt: at(106) },
					epoch,
				),
			).toBe(1);
			const summary = await stores.keyring.summary();
			expect(summary.open.map((l) => l.leaseId)).toEqual(["l2"]);
			expect(Object.fromEntries(summary.lastEnd)).toEqual({ "key-000": 6 });
			expect(Object.fromEntries(summary.uses)).toEqual({ "key-000": 2, "key-001": 1 });
			expect(summary.lastSeq).toBe(6);
		});

		test("the keyring role: one holder at a time, taken over only when allowed, and a stale holder's writes refused by the store", async () => {
			const first = await claim("keyring-a", 0);
			expect(first).toEqual({
				claimed: {
					epoch: 1,
					holder: "keyring-a",
					host: "host-a",
					pid: 4242,
					since: at(0),
					expiresAt: at(30),
				},
			});
			// A second keyring while the first's claim runs: refused, told who holds it.
			expect(await claim("keyring-b", 10)).toEqual({
				heldBy: {
					epoch: 1,
					holder: "keyring-a",
					host: "host-a",
					pid: 4242,
					since: at(0),
					expiresAt: at(30),
				},
			});
			expect(await stores.keyring.renewRole(1, at(50))).toBe(true);
			expect(await claim("keyring-b", 40)).toMatchObject({
				heldBy: { holder: "keyring-a", expiresAt: at(50) },
			});
			await stores.keyring.insertLease(lease("l1", "key-000", 1), 1);

			// Once it expired, another keyring takes it over with the next epoch...
			await backend.roleClockAdvances(31_000);
			expect(await claim("keyring-b", 51)).toMatchObject({
				claimed: { epoch: 2, holder: "keyring-b" },
			});
			// ...and the first one can neither renew its claim nor write under it any more.
			expect(await stores.keyring.renewRole(1, at(80))).toBe(false);
			await expect(
				stores.keyring.insertLease(lease("l2", "key-001", 2), 1),
			).rejects.toBeInstanceOf(FencedError);
			await expect(
				stores.keyring.endLease(
					"l1",
					{ end: "expired", endSeq: 2, endedAt: at(52), expiredBy: at(52) },
					1,
				),
			).rejects.toBeInstanceOf(FencedError);
			await expect(stores.keyring.renewLease("l1", at(90), 1)).rejects.toBeInstanceOf(
				FencedError,
			);
			expect((await stores.keyring.summary()).open.map((l) => l.leaseId)).toEqual(["l1"]);
			await stores.keyring.insertLease(lease("l3", "key-001", 2), 2);

			// A holder that gives the role up lets the next one in at once.
			await stores.keyring.releaseRole(2, at(60));
			expect(await claim("keyring-c", 60)).toMatchObject({
				claimed: { epoch: 3, holder: "keyring-c" },
			});
		});

		test("keys page with their public fields only", async () => {
			await stores.keyring.insertKeys([
				{
					keyId: "key-000",
					createdAt: at(0),
					publicJwk: { kty: "OKP", crv: "Ed25519", x: "abc" },
					sealedPrivateKey: "sealed-secret",
				},
			]);
			expect(await stores.keyring.keys()).toEqual([
				expect.objectContaining({ keyId: "key-000", sealedPrivateKey: "sealed-secret" }),
			]);
			const { docs } = await stores.keyring.page("keys", undefined, 10);
			expect(docs).toEqual([
				{
					_id: "key-000",
					keyId: "key-000",
					createdAt: at(0),
					publicJwk: { kty: "OKP", crv: "Ed25519", x: "abc" },
					...KEY_LIFECYCLE_NONE,
				},
			]);
			expect(JSON.stringify(docs)).not.toContain("sealed-secret");
		});

		test("key events add keys and retire or revoke them under the role's epoch, in the lease log's seq", async () => {
			const epoch = await epochOf("keyring-a");
			await stores.keyring.insertKeys([key("key-000"), key("key-001")]);
			await stores.keyring.insertLease(lease("l1", "key-000", 1), epoch);
			await stores.keyring.writeKeyEvents(
				[{ seq: 2, keyId: "key-002", event: "added", at: at(2), reason: null }],
				[{ ...key("key-002"), addedSeq: 2 }],
				epoch,
			);
			await stores.keyring.writeKeyEvents(
				[{ seq: 3, keyId: "key-000", event: "retired", at: at(3), reason: "max-uses" }],
				[],
				epoch,
			);
			await stores.keyring.writeKeyEvents(
				[{ seq: 4, keyId: "key-000", event: "revoked", at: at(4), reason: "leaked" }],
				[],
				epoch,
			);
			await stores.keyring.durable();
			expect(await stores.keyring.keyEvents()).toEqual([
				{ seq: 2, keyId: "key-002", event: "added", at: at(0), reason: null },
				{ seq: 3, keyId: "key-000", event: "retired", at: at(3), reason: "max-uses" },
				{ seq: 4, keyId: "key-000", event: "revoked", at: at(4), reason: "leaked" },
			]);
			expect((await stores.keyring.summary()).lastSeq).toBe(4);
			const { docs } = await stores.keyring.page("keys", undefined, 10);
			expect(docs).toEqual([
				expect.objectContaining({ keyId: "key-000", retiredSeq: 3, revokedSeq: 4 }),
				expect.objectContaining({ keyId: "key-001", ...KEY_LIFECYCLE_NONE }),
				expect.objectContaining({ keyId: "key-002", addedSeq: 2, retiredSeq: null }),
			]);
			// A keyring that lost the role writes no key event.
			await backend.roleClockAdvances(31_000);
			const other = await epochOf("keyring-b", 31);
			expect(other).toBeGreaterThan(epoch);
			await expect(
				stores.keyring.writeKeyEvents(
					[{ seq: 5, keyId: "key-001", event: "retired", at: at(5), reason: null }],
					[],
					epoch,
				),
			).rejects.toBeInstanceOf(FencedError);
			await stores.keyring.durable();
			expect((await stores.keyring.keyEvents()).map((e) => e.seq)).toEqual([2, 3, 4]);
		});

		test("a key in a PKCS#11 token keeps its reference, and nothing sealed (KEY_STORE=pkcs11)", async () => {
			const tokenKey = { label: "key-000", id: "00112233445566778899aabbccddeeff" };
			await stores.keyring.insertKeys([
				{
					keyId: "key-000",
					createdAt: at(0),
					publicJwk: { kty: "OKP", crv: "Ed25519", x: "abc" },
					sealedPrivateKey: "",
					tokenKey,
				},
				{
					keyId: "key-001",
					createdAt: at(0),
					publicJwk: { kty: "OKP", crv: "Ed25519", x: "def" },
					sealedPrivateKey: "sealed-secret",
				},
			]);
			const [inToken, sealed] = await stores.keyring.keys();
			expect(inToken).toMatchObject({ keyId: "key-000", sealedPrivateKey: "", tokenKey });
			expect(sealed.tokenKey ?? null).toBeNull();
		});
	});

	describe("batcher", () => {
		const run = (runId: string, startedAt: string, extra: Partial<RunDoc> = {}): RunDoc => ({
			runId,
			batchSize: 10,
			status: "running",
			startedAt,
			finishedAt: null,
			report: null,
			...extra,
		});
		const batch = (
			batchId: string,
			runId: string,
			extra: Partial<BatchDoc> = {},
		): BatchDoc => ({
			batchId,
			runId,
			keyId: null,
			leaseId: null,
			recordIds: ["r1", "r2"],
			attempt: 1,
			status: "pending",
			startedAt: at(1),
			finishedAt: null,
			signer: null,
			error: null,
			...extra,
		});

		test("runs: found by id, by idempotency key, the interrupted one, newest first", async () => {
			await stores.batcher.insertRun(
				run("run-a", at(1), {
					status: "completed",
					idempotencyKey: "k-1",
					requestFingerprint: "{}",
				}),
			);
			await stores.batcher.insertRun(run("run-b", at(2)));
			expect(await stores.batcher.getRun("run-a")).toMatchObject({
				runId: "run-a",
				batchSize: 10,
				status: "completed",
				idempotencyKey: "k-1",
			});
			expect(await stores.batcher.runByIdempotencyKey("k-1")).toMatchObject({
				runId: "run-a",
			});
			expect(await stores.batcher.runByIdempotencyKey("k-2")).toBeNull();
			expect(await stores.batcher.interruptedRun()).toMatchObject({ runId: "run-b" });
			expect((await stores.batcher.listRuns()).map((r) => r.runId)).toEqual([
				"run-b",
				"run-a",
			]);
			await stores.batcher.updateRun("run-b", {
				status: "completed",
				finishedAt: at(3),
				report: { runId: "run-b" } as RunDoc["report"],
			});
			expect(await stores.batcher.interruptedRun()).toBeNull();
			expect(await stores.batcher.getRun("run-b")).toMatchObject({
				status: "completed",
				finishedAt: at(3),
				report: { runId: "run-b" },
			});
		});

		test("batches: updated, found while pending, summed by the store (partial ones count their signatures)", async () => {
			await stores.batcher.insertRun(run("run-a", at(1)));
			for (const id of ["b1", "b2", "b3", "b4"])
				await stores.batcher.insertBatch(batch(id, "run-a"));
			await stores.batcher.updateBatch("b1", {
				status: "signed",
				keyId: "key-000",
				leaseId: "l1",
				stored: 2,
				duplicates: 0,
				unsigned: 0,
			});
			await stores.batcher.updateBatch("b2", {
				status: "signed",
				keyId: "key-001",
				leaseId: "l2",
				stored: 1,
				duplicates: 1,
				unsigned: 0,
			});
			await stores.batcher.updateBatch("b3", {
				status: "partial",
				keyId: "key-002",
				leaseId: "l3",
				stored: 1,
				duplicates: 0,
				unsigned: 1,
				finishedAt: at(9),
			});
			expect((await stores.batcher.pendingBatches("run-a")).map((b) => b.batchId)).toEqual([
				"b4",
			]);
			expect(await stores.batcher.batchSummary("run-a")).toEqual({
				total: 4,
				byStatus: { signed: 2, partial: 1, pending: 1 },
				stored: 4,
				duplicates: 1,
				keysUsed: 3,
			});
			const { docs } = await stores.batcher.page("batches", undefined, 10);
			expect(docs).toEqual([
				expect.objectContaining({
					_id: "b1",
					batchId: "b1",
					recordIds: ["r1", "r2"],
					status: "signed",
					keyId: "key-000",
				}),
				expect.objectContaining({ batchId: "b2" }),
				expect.objectContaining({
					batchId: "b3",
					status: "partial",
					stored: 1,
					unsigned: 1,
					finishedAt: at(9),
				}),
				expect.objectContaining({ batchId: "b4", status: "pending" }),
			]);
		});
	});
}

/** What only the MongoDB store does: the server's clock for the role, the fence's transaction, counts kept per key, no redundant index. */
function onlyOnMongo(backend: Backend): void {
	describe("only on MongoDB", () => {
		let stores: Stores;
		let db: MongoConnection;
		const role = () =>
			db.db
				.collection<{ _id: string; epoch: number; seq: number; writes: number }>("keyring")
				.findOne({ _id: "role" });
		const claim = (holder: string, second: number, ttl = 30) =>
			stores.keyring.claimRole({
				holder,
				host: "host-a",
				pid: 4242,
				now: at(second),
				expiresAt: at(second + ttl),
				mayTakeOver: (current) => Date.parse(current.expiresAt) <= Date.parse(at(second)),
			});

		beforeEach(async () => {
			stores = await backend.open();
			db = await backend.connect!();
		});

		afterEach(async () => {
			await db.close();
			await stores.records.close();
			await stores.keyring.close();
			await stores.batcher.close();
			await backend.cleanup();
		});

		test("the revoked keys records reads come with their time and nothing sealed", async () => {
			const claimed = await claim("keyring-a", 0);
			if (!("claimed" in claimed)) throw new Error("the role was not claimed");
			await stores.keyring.insertKeys([key("key-000"), key("key-001")]);
			expect(await (stores.keyring as MongoKeyringStore).revokedKeys()).toEqual([]);
			await stores.keyring.writeKeyEvents(
				[{ seq: 1, keyId: "key-000", event: "revoked", at: at(4), reason: "leaked" }],
				[],
				claimed.claimed.epoch,
			);
			await stores.keyring.durable();
			const revoked = await (stores.keyring as MongoKeyringStore).revokedKeys();
			expect(revoked).toEqual([{ key: "key-000", at: at(4) }]);
			expect(JSON.stringify(revoked)).not.toContain("sealed");
		});

		test("records stored before submissions (no seq) are numbered in id order once when records opens, after any already numbered", async () => {
			// As an earlier version left them: no seq.
			await db.db
				.collection<{ _id: string; data: string; signed: boolean }>("records")
				.insertMany([
					{ _id: "old-3", data: "c", signed: false },
					{ _id: "old-1", data: "a", signed: false },
				]);
			await stores.records.close();
			const uri = new URL(process.env.MONGO_URI!);
			uri.pathname = `/${db.db.databaseName}`;
			stores.records = await MongoRecordsStore.open(uri.toString(), service);
			expect(
				(await stores.records.unsignedArrivals(0, 10)).map((r) => [r.id, r.seq]),
			).toEqual([
				["old-1", 1],
				["old-3", 2],
			]);
			await stores.records.submitRecords([{ id: "new-0", data: "n" }], "alice", at(1));
			expect(
				(await stores.records.unsignedArrivals(2, 10)).map((r) => [r.id, r.seq]),
			).toEqual([["new-0", 3]]);
		});

		test("a live claim is not taken over by a keyring whose clock runs an hour ahead: the server's clock decides", async () => {
			expect(await claim("keyring-a", 0)).toMatchObject({ claimed: { epoch: 1 } });
			// By its own clock keyring-b is an hour past the claim's expiry; by the server's, 30 s remain.
			expect(await claim("keyring-b", 3_600)).toEqual({
				heldBy: expect.objectContaining({
					epoch: 1,
					holder: "keyring-a",
					expiresAt: at(30),
				}),
			});
			await backend.roleClockAdvances(31_000);
			expect(await claim("keyring-b", 3_600)).toMatchObject({
				claimed: { epoch: 2, holder: "keyring-b" },
			});
		});

		test("every fenced write writes the role, even one whose seq does not move; a refused grant leaves nothing behind", async () => {
			const { claimed } = (await claim("keyring-a", 0)) as { claimed: RoleHolder };
			await stores.keyring.insertLease(lease("l1", "key-000", 1), claimed.epoch);
			const before = await role();
			expect(before).toMatchObject({ seq: 1, writes: 1 });
			// A renewal carries no seq: its fence still writes, so a takeover meanwhile conflicts with it.
			expect(await stores.keyring.renewLease("l1", at(60), claimed.epoch)).toBe(1);
			expect(await role()).toMatchObject({ seq: 1, writes: 2 });
			// Refused by the open-lease index: the fence, the lease and the count went together, none of them stays.
			await expect(
				stores.keyring.insertLease(lease("l2", "key-000", 2), claimed.epoch),
			).rejects.toBeInstanceOf(DuplicateLeaseError);
			expect(await role()).toMatchObject({ seq: 1, writes: 2 });
			expect(await db.db.collection("lease_stats").find({}).toArray()).toEqual([
				{ _id: "key-000", uses: 1 },
			]);
			expect(await db.db.collection("leases").countDocuments({})).toBe(1);
		});

		test("the summary reads the counts kept per key, and a store written before they were kept has them computed once", async () => {
			const { claimed } = (await claim("keyring-a", 0)) as { claimed: RoleHolder };
			await stores.keyring.insertLease(lease("l1", "key-000", 1), claimed.epoch);
			await stores.keyring.endLease(
				"l1",
				{ end: "released", endSeq: 2, endedAt: at(2) },
				claimed.epoch,
			);
			await stores.keyring.insertLease(lease("l2", "key-000", 3), claimed.epoch);
			await stores.keyring.insertLease(lease("l3", "key-001", 4), claimed.epoch);
			const kept = await stores.keyring.summary();
			expect(Object.fromEntries(kept.uses)).toEqual({ "key-000": 2, "key-001": 1 });
			expect(Object.fromEntries(kept.lastEnd)).toEqual({ "key-000": 2 });
			// As an earlier version left it: no counts, no mark on the role.
			await db.db.collection("lease_stats").deleteMany({});
			await db.db
				.collection<{ _id: string }>("keyring")
				.updateOne({ _id: "role" }, { $unset: { leaseStats: "" } });
			expect(await stores.keyring.summary()).toEqual(kept);
			expect(await role()).toMatchObject({ leaseStats: true });
		});

		test("no unique index repeats _id; pending batches are read in index order", async () => {
			const names = async (collection: string) =>
				(await db.db.collection(collection).listIndexes().toArray())
					.map((i) => i.name as string)
					.sort();
			expect(await names("signatures")).toEqual(["_id_", "signatures_batch"]);
			expect(await names("keys").catch(() => ["_id_"])).toEqual(["_id_"]);
			expect(await names("leases")).toEqual([
				"_id_",
				"leases_end_seq",
				"leases_grant_seq",
				"leases_open_per_key",
			]);
			expect(await names("runs")).toEqual(["_id_", "runs_idempotency", "runs_status"]);
			expect(await names("batches")).toEqual(["_id_", "batches_run_status"]);
			const plan = await db.db
				.collection("batches")
				.find({ runId: "run-a", status: "pending" })
				.sort({ batchId: 1 })
				.explain("queryPlanner");
			expect(JSON.stringify(plan.queryPlanner.winningPlan)).not.toContain("SORT");
		});

		test("an earlier version's redundant indexes are dropped when the stores open", async () => {
			await stores.records.close();
			await stores.keyring.close();
			await stores.batcher.close();
			await db.db
				.collection("signatures")
				.createIndex({ recordId: 1 }, { unique: true, name: "signatures_record" });
			await db.db
				.collection("runs")
				.createIndex({ runId: 1 }, { unique: true, name: "runs_run" });
			await db.db
				.collection("batches")
				.createIndex({ runId: 1, status: 1 }, { name: "batches_run" });
			stores = {
				records: await MongoRecordsStore.open(uriOf(db), service),
				keyring: await MongoKeyringStore.open(uriOf(db), service),
				batcher: await MongoBatcherStore.open(uriOf(db), service),
			};
			const all = async (collection: string) =>
				(await db.db.collection(collection).listIndexes().toArray()).map(
					(i) => i.name as string,
				);
			expect(await all("signatures")).not.toContain("signatures_record");
			expect(await all("runs")).not.toContain("runs_run");
			expect(await all("batches")).not.toContain("batches_run");
		});

		test("a bulk larger than one command, with duplicates in its first command, stores every new record", async () => {
			// maxWriteBatchSize is 100,000: the driver sends two commands and stops after the first one's write errors.
			const records = Array.from({ length: 150_000 }, (_, i) => ({
				id: `m${String(i).padStart(6, "0")}`,
				data: "x",
			}));
			await stores.records.insertRecords(records.slice(0, 10));
			await stores.records.insertRecords(records);
			expect(await db.db.collection("records").countDocuments({})).toBe(150_000);
		}, 120_000);
	});
}

/** The URI a connection was opened with (its database included). */
function uriOf(connection: MongoConnection): string {
	const url = new URL(process.env.MONGO_URI!);
	url.pathname = `/${connection.db.databaseName}`;
	return url.toString();
}

describe("the SQLite keyring store's group commit", () => {
	let dataDir: string;
	let store: SqliteKeyringStore;
	let epoch: number;
	/** Another connection to the file, as the audit or a second keyring would read it. */
	let reader: DatabaseSync;
	const committedLeases = () =>
		(
			reader.prepare("SELECT leaseId FROM leases ORDER BY grantSeq").all() as Array<{
				leaseId: string;
			}>
		).map((row) => row.leaseId);

	beforeEach(async () => {
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-group-"));
		store = SqliteKeyringStore.open(dataDir);
		const outcome = await store.claimRole({
			holder: "keyring-a",
			host: "host-a",
			pid: 4242,
			now: at(0),
			expiresAt: at(30),
			mayTakeOver: () => true,
		});
		if (!("claimed" in outcome)) throw new Error("no role");
		epoch = outcome.claimed.epoch;
		reader = new DatabaseSync(path.join(dataDir, "keyring.sqlite"));
	});

	afterEach(async () => {
		reader.close();
		await store.close();
		fs.rmSync(dataDir, { recursive: true, force: true });
	});

	test("the writes of one moment are applied at once, committed together, and durable() resolves once they are", async () => {
		await store.insertLease(lease("l1", "key-000", 1), epoch);
		await store.insertLease(lease("l2", "key-001", 2), epoch);
		expect(
			await store.endLease("l1", { end: "released", endSeq: 3, endedAt: at(3) }, epoch),
		).toBe(1);
		// Applied: this store reads them; not yet committed: another connection does not.
		expect((await store.lease("l1"))?.end).toBe("released");
		expect(committedLeases()).toEqual([]);
		await store.durable();
		expect(committedLeases()).toEqual(["l1", "l2"]);
		expect(reader.prepare(`SELECT "end" FROM leases WHERE leaseId = 'l1'`).get()).toEqual({
			end: "released",
		});
		// Nothing open: durable() resolves at once.
		await store.durable();
	});

	test("a refused write in a group fails alone; the others are committed", async () => {
		await store.insertLease(lease("l1", "key-000", 1), epoch);
		await expect(store.insertLease(lease("l2", "key-000", 2), epoch)).rejects.toBeInstanceOf(
			DuplicateLeaseError,
		);
		await store.insertLease(lease("l3", "key-001", 3), epoch);
		await store.durable();
		expect(committedLeases()).toEqual(["l1", "l3"]);
	});

	test("another write (a role renewal, an enrolment) commits the open group first; a stale epoch writes nothing", async () => {
		await store.insertLease(lease("l1", "key-000", 1), epoch);
		expect(await store.renewRole(epoch, at(60))).toBe(true);
		expect(committedLeases()).toEqual(["l1"]);
		await store.insertLease(lease("l3", "key-002", 3), epoch);
		expect(
			await store.enrol("signer", {
				name: "signer-x",
				publicJwk: { kty: "OKP", crv: "Ed25519", x: "abc" },
				enrolledAt: at(2),
				revokedAt: null,
			}),
		).toBe("enrolled");
		expect(committedLeases()).toEqual(["l1", "l3"]);
		// Another keyring takes the role: this one's next group is refused whole.
		const taken = await store.claimRole({
			holder: "keyring-b",
			host: "host-b",
			pid: 4343,
			now: at(1),
			expiresAt: at(31),
			mayTakeOver: () => true,
		});
		expect("claimed" in taken).toBe(true);
		await expect(store.insertLease(lease("l2", "key-001", 2), epoch)).rejects.toBeInstanceOf(
			FencedError,
		);
		await store.durable();
		expect(committedLeases()).toEqual(["l1", "l3"]);
	});
});
