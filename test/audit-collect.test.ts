/**
 * collectSnapshot against real brokers: each collection is paged through its owner's `page`
 * action (the real db mixin, in memory), stored-only and secret fields are dropped, and the
 * audit of what was collected passes.
 */
import { ServiceBroker, type ServiceSchema } from "moleculer";
import type { JWK } from "jose";
import { DbMixin, type DbSettings } from "../mixins/db.mixin";
import { collectSnapshot } from "../src/audit/collect";
import { buildMiniRun } from "./support/audit-fixture";
import { audit } from "../src/audit/rules";
import type { AuditSnapshot } from "../src/audit/snapshot";

let snapshot: AuditSnapshot;
let broker: ServiceBroker;

/** A service owning `collections` in memory, filled with `docs` when it starts. */
function owner(name: string, docs: Record<string, object[]>, actions: ServiceSchema<DbSettings>["actions"] = {}): ServiceSchema<DbSettings> {
	const collections = Object.fromEntries(Object.keys(docs).map(c => [c, {}]));
	return {
		name,
		mixins: [DbMixin(collections)],
		settings: { dataDir: "", mongoUri: null },
		actions,
		async started(this: any) {
			for (const [collection, list] of Object.entries(docs)) await this.stores[collection].insertMany(list);
		}
	};
}

beforeAll(async () => {
	const mini = await buildMiniRun();
	snapshot = mini.snapshot;
	// Shaped like private JWKs: the audit must never carry such a member along.
	const privateJwks: JWK[] = snapshot.jwks.keys.map(jwk => ({ ...jwk, d: "cHJpdmF0ZS1tYXRlcmlhbA" }));
	broker = new ServiceBroker({ logger: false, nodeID: "collect-test" });
	// Stored as the services store them: `_id`s, a record's id in `_id`, the sealed private key beside the public one.
	broker.createService(owner("records", {
		records: snapshot.records.map(r => ({ _id: r.id, data: r.data })),
		signatures: snapshot.signatures.map(s => ({ _id: s.recordId, ...s }))
	}));
	broker.createService(owner("keyring", {
		keys: snapshot.keys.map((k, i) => ({ _id: k.keyId, ...k, publicJwk: snapshot.jwks.keys[i], sealedPrivateKey: "SEALED-SECRET" })),
		leases: snapshot.leases.map(l => ({ _id: l.leaseId, ...l }))
	}, {
		// A keyring that wrongly served private members: collect must still keep only public ones.
		jwks: { handler: () => ({ keys: privateJwks }) }
	}));
	broker.createService(owner("batcher", {
		runs: snapshot.runs.map(r => ({ _id: r.runId, ...r, report: null })),
		batches: snapshot.batches.map(b => ({ _id: b.batchId, ...b, signer: "signer-1", error: null }))
	}));
	await broker.start();
});

afterAll(() => broker?.stop());

describe("collectSnapshot", () => {
	it("pages every collection to the end and maps it to the export's fields", async () => {
		// A page size that does not divide the counts: the last page is partial, one is exactly full.
		const collected = await collectSnapshot(broker, { pageSize: 5 });
		expect(collected).toEqual(snapshot);
		expect(JSON.stringify(collected)).not.toMatch(/SEALED-SECRET|sealedPrivateKey|"_id"|"d":/);
	});

	it("gives a snapshot the audit passes, and a store change shows up in it", async () => {
		expect((await audit(await collectSnapshot(broker))).ok).toBe(true);
		const records = broker.getLocalService("records") as any;
		await records.stores.records.insert({ _id: "r-9999", data: "late" });
		const report = await audit(await collectSnapshot(broker, { pageSize: 4 }));
		expect(report.violations).toEqual([{ rule: "one-signature-per-record", message: "record r-9999 has no signature", ids: { recordId: "r-9999" } }]);
	});
});
