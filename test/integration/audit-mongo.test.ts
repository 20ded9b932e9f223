/**
 * `npm run audit` and `npm run export` on MONGO_URI read the owners' collections over one
 * connection and create nothing: no service, no keyring (so no master key), no index, and a
 * misspelled database stays absent. The unreachable-server case runs always; the rest runs on
 * MongoDB when MONGO_URI names a replica set, and is listed as skipped when it is not set:
 *   MONGO_URI='mongodb://127.0.0.1:27017/signing-test?replicaSet=rs0' npm test -- test/integration/audit-mongo.test.ts
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { freePort } from "../../src/cluster/nats-server";
import { connectMongo, type MongoConnection } from "../../src/store/mongo";
import { runCli } from "../support/cli";
import { runToCompletion, startSystem } from "../support/system";

const QUIET = { LOG_LEVEL: "warn" };

test("an unreachable MongoDB is one line naming what to start, without the URI's password, exit 2", async () => {
	const port = await freePort();
	const result = await runCli(
		"audit.js",
		["--mongo-uri", `mongodb://auditor:s3cret-pw@127.0.0.1:${port}/signing`],
		QUIET,
	);
	expect(result.code).toBe(2);
	expect(result.stderr).toMatch(
		new RegExp(
			`^audit: Cannot reach MongoDB mongodb://\\*\\*\\*@127\\.0\\.0\\.1:${port}/signing within 10 s: is mongod running there\\?`,
		),
	);
	expect(result.stderr).not.toContain("s3cret-pw");
	expect(result.stderr.trim().split("\n")).toHaveLength(1);
}, 30_000);

// Only where a server is named: CI has none (no MongoDB package on Debian). Without one, Jest
// lists these as skipped with the reason, so none is left out silently.
const onMongo = process.env.MONGO_URI ? describe : describe.skip;
onMongo(
	process.env.MONGO_URI
		? "on MongoDB (MONGO_URI)"
		: "on MongoDB: needs MONGO_URI (a MongoDB replica set); not set",
	() => {
		const database = (suffix: string) => {
			// Unset, nothing here runs: a placeholder keeps the definitions valid.
			const url = new URL(process.env.MONGO_URI ?? "mongodb://mongo-uri-not-set.invalid/");
			url.pathname = `/signing-audit-test-${process.pid}-${suffix}`;
			return url.toString();
		};
		const uri = database("store");
		const misspelled = database("misspeled");
		const connect = (of: string): Promise<MongoConnection> =>
			connectMongo(
				of,
				{
					broker: null,
					logger: new ServiceBroker({ logger: false }).getLogger("audit-mongo"),
				},
				"audit-test",
			);
		// The driver's cursors: every batch, not only the command's first one.
		const collectionsOf = async (db: MongoConnection) =>
			(await db.db.listCollections({}, { nameOnly: true }).toArray())
				.map((c) => c.name)
				.sort();
		const indexesOf = async (db: MongoConnection, collection: string) =>
			(await db.db.collection(collection).listIndexes().toArray())
				.map((i) => String(i.name))
				.sort();
		let out: string;

		beforeAll(async () => {
			const system = await startSystem({
				records: 600,
				keys: 5,
				batchSize: 50,
				env: { MONGO_URI: uri, KEYRING_MASTER_KEY: Buffer.alloc(32, 7).toString("base64") },
			});
			try {
				const { completion } = await runToCompletion(system);
				expect(completion.status).toBe("completed");
			} finally {
				await system.broker.stop();
			}
			out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "audit-mongo-")), "export");
		}, 120_000);

		afterAll(async () => {
			for (const of of [uri, misspelled]) {
				const db = await connect(of);
				await db.db.dropDatabase();
				await db.close();
			}
			fs.rmSync(path.dirname(out), { recursive: true, force: true });
		});

		test("the audit reads the stores without a master key and changes nothing in them", async () => {
			const db = await connect(uri);
			try {
				const role = await db.db
					.collection<{ _id: string }>("keyring")
					.findOne({ _id: "role" });
				const indexes = await indexesOf(db, "leases");
				const result = await runCli("audit.js", ["--mongo-uri", uri, "--json"], {
					...QUIET,
					KEYRING_MASTER_KEY: "",
				});
				expect(result.stderr).toBe("");
				expect(result.code).toBe(0);
				const report = JSON.parse(result.stdout);
				expect(report.ok).toBe(true);
				expect(
					report.rules.find(
						(r: { rule: string }) => r.rule === "one-signature-per-record",
					),
				).toMatchObject({ ok: true });
				expect(await db.db.collection("signatures").countDocuments({})).toBe(600);
				// No keyring started: the role is as the run's keyring left it; no index was added.
				expect(
					await db.db.collection<{ _id: string }>("keyring").findOne({ _id: "role" }),
				).toEqual(role);
				expect(await indexesOf(db, "leases")).toEqual(indexes);
			} finally {
				await db.close();
			}
		}, 60_000);

		test("the export writes every signature and its public keys, and the exported files audit clean", async () => {
			const exported = await runCli("export.js", ["--mongo-uri", uri, "--out", out], {
				...QUIET,
				KEYRING_MASTER_KEY: "",
			});
			expect(exported.code).toBe(0);
			const audited = await runCli("audit.js", ["--from", out], QUIET);
			expect(audited.code).toBe(0);
			expect(
				fs.readFileSync(path.join(out, "signatures.jsonl"), "utf8").trim().split("\n"),
			).toHaveLength(600);
		}, 60_000);

		test("a misspelled database name is reported and stays absent", async () => {
			const result = await runCli("audit.js", ["--mongo-uri", misspelled], QUIET);
			expect(result.code).toBe(2);
			expect(result.stderr).toMatch(
				/has none of the store's collections \(records, signatures, runs, batches, keys, leases\): is the database name in MONGO_URI right\? Nothing was created\./,
			);
			const db = await connect(misspelled);
			try {
				expect(await collectionsOf(db)).toEqual([]);
			} finally {
				await db.close();
			}
		}, 60_000);
	},
);
