/**
 * The two logs on MongoDB (docs/design.md §8.4, src/tlog/mongo-log.ts), as tlog-stores.test.ts
 * checks them on SQLite: records logs every stored signature in the order the pieces were
 * stored, duplicates not at all; the keyring every grant and end in the transaction of the
 * lease write; rows stored before the log existed enter it once, in store order, and a row
 * added later is not taken in; rows numbered but not in the tree when the process stopped are
 * appended at the next start; the audit reads the logs from MongoDB and names a row altered
 * after a checkpoint. Runs when MONGO_URI names a replica set; without it Jest lists it as
 * skipped, with the reason:
 *   MONGO_URI='mongodb://127.0.0.1:27017/signing-test?replicaSet=rs0' npm test -- /tlog-mongo.test
 */
import { ServiceBroker } from "moleculer";
import { importFromPages } from "../../src/audit/collect";
import { openMongoPages } from "../../src/audit/mongo-pages";
import { audit } from "../../src/audit/rules";
import { closeAfter } from "../../src/audit/audit-db";
import type { LeaseDoc, SignatureDoc } from "../../src/contract";
import { MongoKeyringStore } from "../../src/keyring/mongo-store";
import { MongoRecordsStore } from "../../src/records/mongo-store";
import { connectMongo, type MongoConnection } from "../../src/store/mongo";
import { leaseEndLeaf, leaseGrantLeaf, signatureLeaf } from "../../src/tlog/leaves";
import { leafHash } from "../../src/tlog/merkle";
import { generateNoteSigner, verifierKeyString } from "../../src/tlog/note";
import { CheckpointPublisher } from "../../src/tlog/publisher";
import { mth, piece, SIGNED_AT } from "../support/tlog";

const NEEDS_MONGO = "needs MONGO_URI (a MongoDB replica set); not set";

const lease = (leaseId: string, keyId: string, grantSeq: number): LeaseDoc => ({
	leaseId,
	keyId,
	holder: "signer-1",
	grantSeq,
	grantedAt: SIGNED_AT,
	expiresAt: "2025-01-01T00:00:30.000Z",
	endSeq: null,
	endedAt: null,
	end: null,
});

const run = process.env.MONGO_URI ? describe : describe.skip;

run(`the transparency logs on MongoDB${process.env.MONGO_URI ? "" : `: ${NEEDS_MONGO}`}`, () => {
	let uri = "";
	let n = 0;
	const lines: string[] = [];
	const service = {
		broker: new ServiceBroker({ logger: false }),
		logger: { info: (line: string) => lines.push(line) },
	};
	const connect = (): Promise<MongoConnection> => connectMongo(uri, service, "tlog-test");

	beforeEach(() => {
		const url = new URL(process.env.MONGO_URI!);
		url.pathname = `/tlog-mongo-test-${process.pid}-${++n}`;
		uri = url.toString();
		lines.length = 0;
	});
	afterEach(async () => {
		const connection = await connect();
		await connection.db.dropDatabase();
		await connection.close();
	});

	test("every stored signature is a leaf, in the order stored; duplicates are not; the root is the rows', after a reopen too", async () => {
		const store = await MongoRecordsStore.open(uri, service);
		await store.insertRecords(
			["r1", "r2", "r3", "r4", "r5"].map((id) => ({ id, data: `d-${id}` })),
		);
		await store.storeSignatures(piece(["r3", "r1"], "b1"));
		expect(await store.storeSignatures(piece(["r1", "r2", "r2", "r5"], "b2"))).toEqual({
			stored: 2,
			duplicates: 2,
		});
		await store.storeSignatures(piece(["r4"], "b3"));
		const leaves: Buffer[] = [];
		for (const id of ["r3", "r1", "r2", "r5", "r4"]) {
			leaves.push(leafHash(signatureLeaf((await store.signature(id))!)));
			expect((await store.loggedSignature(id))!.logIndex).toBe(leaves.length - 1);
		}
		expect(await store.signatureLog.size()).toBe(5);
		expect(await store.signatureLog.leafHashes(0, 5)).toEqual(leaves);
		expect((await store.signatureLog.root(5)).equals(mth(leaves))).toBe(true);
		await store.close();
		const reopened = await MongoRecordsStore.open(uri, service);
		expect(await reopened.signatureLog.size()).toBe(5);
		expect((await reopened.signatureLog.root(5)).equals(mth(leaves))).toBe(true);
		expect((await reopened.signatureLog.root(3)).equals(mth(leaves.slice(0, 3)))).toBe(true);
		await reopened.close();
	});

	test("signatures stored before the log existed enter it once, by record id; a row added later is not taken in", async () => {
		const connection = await connect();
		const rows: Array<SignatureDoc & { _id: string }> = ["r2", "r1", "r3"].map((recordId) => ({
			_id: recordId,
			recordId,
			keyId: "key-001",
			batchId: "old-b1",
			leaseId: "old-l1",
			jws: `old-${recordId}`,
			signedAt: SIGNED_AT,
		}));
		await connection.db
			.collection<SignatureDoc & { _id: string }>("signatures")
			.insertMany(rows);
		const store = await MongoRecordsStore.open(uri, service);
		expect(lines).toContain("The signature log took in 3 signatures stored before it existed");
		const byId = [...rows].sort((a, b) => a.recordId.localeCompare(b.recordId));
		expect(
			(await store.signatureLog.root(3)).equals(
				mth(byId.map((s) => leafHash(signatureLeaf(s)))),
			),
		).toBe(true);
		await store.close();
		// A row slipped in behind the owner's back is not absorbed on the next start.
		await connection.db
			.collection<SignatureDoc & { _id: string; logIndex?: number }>("signatures")
			.insertOne({
				...rows[0],
				_id: "r9",
				recordId: "r9",
				jws: "forged",
			});
		await connection.close();
		const again = await MongoRecordsStore.open(uri, service);
		expect(await again.signatureLog.size()).toBe(3);
		expect(lines).toHaveLength(1);
		expect((await again.loggedSignature("r9"))!.logIndex).toBeNull();
		expect((await again.loggedSignature("r3"))!.logIndex).toBe(2);
		await again.close();
	});

	test("rows numbered in the log but not in its tree when the process stopped are appended at the next start", async () => {
		const store = await MongoRecordsStore.open(uri, service);
		await store.insertRecords(["r1", "r2"].map((id) => ({ id, data: id })));
		await store.storeSignatures(piece(["r1"], "b1"));
		await store.close();
		// As a crash leaves it: the row inserted with its index, its leaf never written.
		const connection = await connect();
		await connection.db
			.collection<SignatureDoc & { _id: string; logIndex?: number }>("signatures")
			.insertOne({
				_id: "r2",
				recordId: "r2",
				keyId: "key-000",
				batchId: "b2",
				leaseId: "lease-b2",
				jws: "jws-r2",
				signedAt: SIGNED_AT,
				logIndex: 1,
			});
		await connection.close();
		const reopened = await MongoRecordsStore.open(uri, service);
		expect(await reopened.signatureLog.size()).toBe(2);
		expect(await reopened.signatureLog.leafHashes(1, 2)).toEqual([
			leafHash(signatureLeaf((await reopened.signature("r2"))!)),
		]);
		await reopened.close();
	});

	test("grants and ends are leaves in commit order; a renewal and a refused end are not; leases from before the log enter it once, in seq order", async () => {
		const store = await MongoKeyringStore.open(uri, service);
		const outcome = await store.claimRole({
			holder: "k",
			host: "h",
			pid: 1,
			now: SIGNED_AT,
			expiresAt: "2025-01-01T00:01:00.000Z",
			mayTakeOver: () => true,
		});
		const epoch = "claimed" in outcome ? outcome.claimed.epoch : 0;
		await store.insertLease(lease("l1", "key-000", 1), epoch);
		await store.insertLease(lease("l2", "key-001", 2), epoch);
		await store.renewLease("l1", "2025-01-01T00:00:50.000Z", epoch);
		const ending = { end: "released" as const, endSeq: 3, endedAt: "2025-01-01T00:00:40.000Z" };
		expect(await store.endLease("l1", ending, epoch)).toBe(1);
		expect(await store.endLease("l1", { ...ending, endSeq: 4 }, epoch)).toBe(0);
		const expected = [
			leaseGrantLeaf(lease("l1", "key-000", 1)),
			leaseGrantLeaf(lease("l2", "key-001", 2)),
			leaseEndLeaf({
				leaseId: "l1",
				keyId: "key-000",
				...ending,
				expiresAt: "2025-01-01T00:00:50.000Z",
			}),
		].map((l) => leafHash(l));
		expect(await store.leaseLog.size()).toBe(3);
		expect((await store.leaseLog.root(3)).equals(mth(expected))).toBe(true);
		expect(await store.leaseLog.entryIndex("end:l1")).toBe(2);
		await store.close();

		// A store from before the log: its leases, and no log collections.
		const connection = await connect();
		for (const name of [
			"lease_log_tiles",
			"lease_log_nodes",
			"lease_log_entries",
			"lease_log_state",
		])
			await connection.db.collection(name).drop();
		await connection.close();
		const migrated = await MongoKeyringStore.open(uri, service);
		expect(lines).toContain("The lease log took in 3 grants and ends stored before it existed");
		expect((await migrated.leaseLog.root(3)).equals(mth(expected))).toBe(true);
		await migrated.close();
		const again = await MongoKeyringStore.open(uri, service);
		expect(await again.leaseLog.size()).toBe(3);
		await again.close();
	});

	test("the audit reads both logs from MongoDB and names a signature altered after a checkpoint", async () => {
		const store = await MongoRecordsStore.open(uri, service);
		await store.insertRecords(["r1", "r2", "r3"].map((id) => ({ id, data: id })));
		await store.storeSignatures(piece(["r1", "r2", "r3"], "b1"));
		const signer = generateNoteSigner("record-signer/signatures");
		const publisher = new CheckpointPublisher(store.signatureLog, signer, {
			everyMs: 60_000,
			warn: () => undefined,
		});
		expect((await publisher.publish())!.size).toBe(3);
		await store.close();
		const logKeys = { signatures: verifierKeyString(signer), leases: null };
		const auditMongo = async () => {
			const pages = await openMongoPages(uri);
			try {
				return await closeAfter(await importFromPages(pages), (db) =>
					audit(db, { logKeys }),
				);
			} finally {
				await pages.close();
			}
		};
		const clean = await auditMongo();
		expect(clean.violations.filter((v) => v.rule === "signature-log")).toEqual([]);

		const connection = await connect();
		await connection.db
			.collection<{ _id: string }>("signatures")
			.updateOne({ _id: "r2" }, { $set: { jws: "altered" } });
		await connection.close();
		const tampered = await auditMongo();
		expect(
			tampered.violations.filter((v) => v.rule === "signature-log").map((v) => v.message),
		).toContainEqual(expect.stringMatching(/signature of r2 is not leaf 1 .*altered/));
	});
});
