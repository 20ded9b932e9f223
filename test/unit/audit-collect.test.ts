/**
 * importFromPages against real brokers: each collection is paged through its owner's `page`
 * action (the real store mixin and stores, in memory), stored-only and secret fields are
 * dropped, and the audit of what was collected passes.
 */
import fs from "node:fs";
import { ServiceBroker, type ServiceSchema } from "moleculer";
import type { JWK } from "jose";
import { StoreMixin, type OwnedStore } from "../../mixins/store.mixin";
import { auditServices, importFromPages, servicePages } from "../../src/audit/collect";
import { readSnapshot } from "../../src/audit/documents";
import { audit } from "../../src/audit/rules";
import type { AuditSnapshot } from "../../src/audit/snapshot";
import { SqliteBatcherStore } from "../../src/batcher/sqlite-store";
import { SqliteKeyringStore } from "../../src/keyring/sqlite-store";
import { SqliteRecordsStore } from "../../src/records/sqlite-store";
import type { StoreOwner } from "../../src/store/schema";
import { buildMiniRun } from "../support/audit-fixture";

let snapshot: AuditSnapshot;
let broker: ServiceBroker;

/** A service owning `owner`'s store in memory, the real store class filled by `fill` when it starts. */
function owner<S extends OwnedStore>(
	name: StoreOwner,
	collections: string[],
	open: () => S,
	fill: (store: S) => Promise<void>,
	actions: ServiceSchema["actions"] = {},
): ServiceSchema {
	return {
		name,
		mixins: [
			StoreMixin<S>({
				owner: name,
				collections,
				embedded: open,
				mongo: () => Promise.reject(new Error("in memory only")),
			}),
		],
		settings: { dataDir: "", mongoUri: null },
		actions,
		async started() {
			await fill((this as unknown as { store: S }).store);
		},
	} as ServiceSchema;
}

beforeAll(async () => {
	const mini = await buildMiniRun();
	snapshot = mini.snapshot;
	// Shaped like private JWKs: the audit must never carry such a member along.
	const privateJwks: JWK[] = snapshot.jwks.keys.map((jwk) => ({
		...jwk,
		d: "cHJpdmF0ZS1tYXRlcmlhbA",
	}));
	broker = new ServiceBroker({ logger: false, nodeID: "collect-test" });
	broker.createService(
		owner(
			"records",
			["records", "signatures"],
			() => SqliteRecordsStore.open(""),
			async (store) => {
				await store.insertRecords(snapshot.records);
				for (const s of snapshot.signatures)
					await store.storeSignatures({
						batchId: s.batchId,
						keyId: s.keyId,
						leaseId: s.leaseId,
						signatures: [{ recordId: s.recordId, jws: s.jws, signedAt: s.signedAt }],
					});
			},
		),
	);
	broker.createService(
		owner(
			"keyring",
			["keys", "leases"],
			() => SqliteKeyringStore.open(""),
			async (store) => {
				// The sealed private key stored beside the public one: paging must never carry it.
				await store.insertKeys(
					snapshot.keys.map((k, i) => ({
						...k,
						publicJwk: snapshot.jwks.keys[i],
						sealedPrivateKey: "SEALED-SECRET",
					})),
				);
				const role = await store.claimRole({
					holder: "collect-test",
					host: "test",
					pid: 1,
					now: "2026-01-01T00:00:00.000Z",
					expiresAt: "2099-01-01T00:00:00.000Z",
					mayTakeOver: () => true,
				});
				const epoch = "claimed" in role ? role.claimed.epoch : 0;
				for (const lease of [...snapshot.leases].sort((a, b) => a.grantSeq - b.grantSeq)) {
					const { expiresAt, ...rest } = lease;
					await store.insertLease(
						{
							...rest,
							expiresAt: expiresAt ?? rest.grantedAt,
							endSeq: null,
							endedAt: null,
							end: null,
						},
						epoch,
					);
					if (lease.end)
						await store.endLease(
							lease.leaseId,
							{ end: lease.end, endSeq: lease.endSeq!, endedAt: lease.endedAt! },
							epoch,
						);
				}
			},
			{
				// A keyring that wrongly served private members: the import must still keep only public ones.
				jwks: { handler: () => ({ keys: privateJwks }) },
			},
		),
	);
	broker.createService(
		owner(
			"batcher",
			["runs", "batches"],
			() => SqliteBatcherStore.open(""),
			async (store) => {
				for (const run of snapshot.runs)
					await store.insertRun({
						...run,
						follow: run.follow ?? undefined,
						report: null,
					});
				for (const batch of snapshot.batches)
					await store.insertBatch({
						...batch,
						stored: batch.stored ?? undefined,
						signer: "signer-1",
						error: null,
					});
			},
		),
	);
	await broker.start();
});

afterAll(() => broker?.stop());

describe("importFromPages", () => {
	it("pages every collection straight into an import holding exactly the snapshot, and nothing secret", async () => {
		const db = await importFromPages(servicePages(broker), { pageSize: 5 });
		try {
			expect(readSnapshot(db)).toEqual(snapshot);
			for (const file of Object.values(db.files))
				expect(fs.readFileSync(file).toString("latin1")).not.toMatch(
					/SEALED-SECRET|cHJpdmF0ZS1tYXRlcmlhbA/,
				);
			expect((await audit(db)).ok).toBe(true);
		} finally {
			db.close();
		}
		expect(Object.values(db.files).some((file) => fs.existsSync(file))).toBe(false);
	});
});

describe("auditServices", () => {
	it("audits the services' stores and sees a change in them", async () => {
		expect((await auditServices(broker, { pageSize: 3 })).ok).toBe(true);
		const records = broker.getLocalService("records") as unknown as {
			store: SqliteRecordsStore;
		};
		await records.store.insertRecords([{ id: "r-9999", data: "late" }]);
		expect((await auditServices(broker, { pageSize: 3 })).violations).toEqual([
			{
				rule: "one-signature-per-record",
				message: "record r-9999 has no signature",
				ids: { recordId: "r-9999" },
			},
		]);
	});
});
