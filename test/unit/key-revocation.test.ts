/**
 * A key's revocation told to records (docs/design.md §5.8): the keyring's signed notice makes
 * records refuse any piece under the key with a signature made after the revocation; a notice
 * not signed by the keyring records trusts changes nothing.
 */
import { generateKeyPairSync } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { until } from "../../src/cluster/launcher";
import type { KeyInfo } from "../../src/contract";
import { localCredential } from "../../src/identity/credential";
import { makeProof, operatorOp } from "../../src/identity/proof";
import { batches } from "../support/cluster";
import { auditSystem, startSystem, type TestSystem } from "../support/system";
import { authorityOf } from "../../src/identity/authority";
import { issueKeyRevocation } from "../../src/identity/key-revocation";
import { REVOCATIONS_READ_MS, RecordsIntake } from "../../src/records/intake";
import { keyringEnrolments } from "../../src/keyring/enrolments";
import { revokedKeysIn } from "../../src/keyring/sqlite-store";
import { KEYRING_SCHEMA } from "../../src/store/schema";
import { DatabaseSync } from "node:sqlite";
import type { StoreSignaturesParams } from "../../src/contract";
import { busChecks } from "../../src/identity/bus-checks";

const keyring = authorityOf(generateKeyPairSync("ed25519").privateKey);
const stranger = authorityOf(generateKeyPairSync("ed25519").privateKey);
const warnings: string[] = [];
const intake = () =>
	new RecordsIntake(
		{ keyringPublicKey: JSON.stringify(keyring.publicJwk), keyringPublicKeyFile: null },
		{ role: "batcher", key: null, keyFile: null, dataDir: "" },
		null,
		{ warn: (line) => warnings.push(line) },
	);

const REVOKED_AT = "2026-12-07T12:00:00.000Z";

/** A piece of key-007 whose signatures were made at `times`. */
const piece = (...times: string[]): StoreSignaturesParams =>
	({
		batchId: "run-1-b000001",
		keyId: "key-007",
		leaseId: "lease-1",
		signatures: times.map((signedAt, i) => ({ recordId: `r${i}`, jws: "x..y", signedAt })),
	}) as unknown as StoreSignaturesParams;

/** The revocation checks alone: the lease-token and store-proof checks are other tests'. */
const admit = (gate: RecordsIntake, params: StoreSignaturesParams) =>
	busChecks.without(async () => gate.admitSignatures(params, "signer-1"));

test("after the keyring's notice, a piece with a signature made after the revocation is refused (409 KEY_REVOKED) and one made before is taken", async () => {
	const gate = intake();
	const notice = issueKeyRevocation(keyring, { key: "key-007", at: REVOKED_AT, seq: 42 });
	// Before the notice, nothing is known: taken.
	await expect(admit(gate, piece("2026-12-07T12:00:01.000Z"))).resolves.toBeUndefined();
	expect(gate.keyRevoked(notice, "keyring")).toEqual({ key: "key-007", at: REVOKED_AT, seq: 42 });
	await expect(
		admit(gate, piece("2026-12-07T11:59:59.000Z", "2026-12-07T12:00:00.001Z")),
	).rejects.toMatchObject({
		type: "KEY_REVOKED",
		code: 409,
		message: expect.stringContaining(
			`Key key-007 was revoked at ${REVOKED_AT}; this piece of batch run-1-b000001 holds a signature made after that (2026-12-07T12:00:00.001Z)`,
		),
	});
	await expect(
		admit(gate, piece("2026-12-07T11:59:59.000Z", REVOKED_AT)),
	).resolves.toBeUndefined();
	// Another key is not concerned.
	await expect(
		admit(gate, { ...piece("2026-12-07T12:30:00.000Z"), keyId: "key-008" }),
	).resolves.toBeUndefined();
});

test("a notice signed by another key, or not a notice at all, is dropped and logged: nothing is refused", async () => {
	const gate = intake();
	warnings.length = 0;
	const forged = issueKeyRevocation(stranger, { key: "key-007", at: REVOKED_AT, seq: 1 });
	expect(gate.keyRevoked(forged, "intruder")).toBeNull();
	expect(gate.keyRevoked("not a jws", "intruder")).toBeNull();
	expect(warnings).toEqual([
		"Dropped a key.revoked notice from node intruder: it is not signed by the keyring this node trusts",
		"Dropped a key.revoked notice from node intruder: it is not signed by the keyring this node trusts",
	]);
	await expect(admit(gate, piece("2026-12-07T12:00:01.000Z"))).resolves.toBeUndefined();
});

describe("a key revoked while its lease signs a large batch, in one process", () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "key-revocation-"));
	let system: TestSystem | undefined;
	let revokedKey: string | undefined;
	afterAll(async () => {
		await system?.broker.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	});

	test("stores nothing it signed after the revocation: the rest of its batch goes again under another key, every record is signed, and the audit counts no late signature", async () => {
		system = await startSystem({
			records: 40_000,
			keys: 3,
			batchSize: 20_000,
			window: 1,
			dataDir,
			env: { SIGNING_THREADS: "1" },
		});
		const { broker } = system;
		const completion = system.nextCompletion();
		await broker.call("batcher.start", { batchSize: 20_000 });
		// Revoked as soon as its first lease is granted: 20,000 signatures take a while on one thread.
		const leased = await until(
			"a key to be leased",
			10_000,
			async () =>
				(await broker.call<KeyInfo[]>("keyring.keys")).find((k) => k.leased) ?? null,
			2,
		);
		const operator = localCredential(dataDir, "batcher");
		await broker.call("keyring.revokeKey", {
			keyId: leased.keyId,
			reason: "compromised",
			proof: makeProof(operator, {
				act: "keys",
				node: broker.nodeID,
				op: operatorOp("revoke", leased.keyId),
			}),
		});
		const done = await completion;
		expect(done.status).toBe("completed");
		expect(await broker.call("records.progress")).toEqual({ records: 40_000, signed: 40_000 });
		// The batch under the revoked key was cut short by records' refusal, and its records went again.
		const cut = (await batches(broker)).filter((b) =>
			(b.error ?? "").includes(`Key ${leased.keyId} was revoked at`),
		);
		expect(cut.length).toBeGreaterThan(0);
		const report = await auditSystem(broker);
		expect(report.ok).toBe(true);
		expect(report.endedKeys).toEqual([
			expect.objectContaining({ keyId: leased.keyId, event: "revoked", signedAfter: 0 }),
		]);
		revokedKey = leased.keyId;
	}, 120_000);

	test("a records node that starts after the revocation reads it from the keyring's store: with no notice heard, it refuses a piece of the key's later signatures (409, not the lease token's 403)", async () => {
		expect(revokedKey).toBeDefined();
		await system!.broker.stop();
		system = await startSystem({ records: 40_000, keys: 3, batchSize: 20_000, dataDir });
		const reader = keyringEnrolments({ dataDir, mongoUri: null })!;
		const [revocation] = await reader.revokedKeys();
		await reader.close();
		expect(revocation).toEqual({ key: revokedKey, at: expect.any(String) });
		const late = {
			batchId: "run-9-b000001",
			keyId: revokedKey,
			leaseId: "lease-9",
			signatures: [
				{
					recordId: "rec-000001",
					jws: "x..y",
					signedAt: new Date(Date.parse(revocation!.at) + 1).toISOString(),
				},
			],
		};
		await expect(system.broker.call("records.storeSignatures", late)).rejects.toMatchObject({
			code: 409,
			type: "KEY_REVOKED",
		});
		// Made before the revocation, the same piece goes on to the lease token's check.
		late.signatures[0]!.signedAt = new Date(Date.parse(revocation!.at) - 1).toISOString();
		await expect(system.broker.call("records.storeSignatures", late)).rejects.toMatchObject({
			code: 403,
		});
	});
});

test("records reads the revoked keys again while pieces arrive, at most every 5 s: a notice it missed (cut off from the bus) is caught up", async () => {
	let clock = 0;
	const stored: Array<{ key: string; at: string }> = [];
	let reads = 0;
	const gate = new RecordsIntake(
		{ keyringPublicKey: JSON.stringify(keyring.publicJwk), keyringPublicKeyFile: null },
		{ role: "batcher", key: null, keyFile: null, dataDir: "" },
		{
			enrolledBatchers: async () => [],
			revokedKeys: async () => {
				reads++;
				return stored.slice();
			},
		},
		{ warn: (line) => warnings.push(line) },
		() => clock,
	);
	await gate.readRevocations();
	expect(reads).toBe(1);
	// The keyring revokes key-007 while this node hears no notice.
	stored.push({ key: "key-007", at: REVOKED_AT });
	clock = REVOCATIONS_READ_MS - 1;
	await expect(admit(gate, piece("2026-12-07T12:00:01.000Z"))).resolves.toBeUndefined();
	expect(reads).toBe(1);
	clock = REVOCATIONS_READ_MS;
	// This piece starts a read and does not wait for it; the next one is checked against it.
	await admit(gate, piece("2026-12-07T11:00:00.000Z"));
	expect(reads).toBe(2);
	await gate.stop();
	await expect(admit(gate, piece("2026-12-07T12:00:01.000Z"))).rejects.toMatchObject({
		type: "KEY_REVOKED",
	});
});

test("a keyring store an earlier version wrote, without the keys' lifecycle columns, has no revoked key", () => {
	const db = new DatabaseSync(":memory:");
	db.exec(KEYRING_SCHEMA);
	expect(revokedKeysIn(db)).toEqual([]);
	db.close();
});

describe("a run when every key is revoked, in one process", () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "no-active-key-"));
	let system: TestSystem | undefined;
	afterAll(async () => {
		await system?.broker.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	});

	test("is refused at its start with a 409 NO_ACTIVE_KEY naming the command that helps, and starts once a key is added", async () => {
		system = await startSystem({ records: 600, keys: 1, batchSize: 300, dataDir });
		const { broker } = system;
		const operator = localCredential(dataDir, "batcher");
		const proof = (op: string) => makeProof(operator, { act: "keys", node: broker.nodeID, op });
		await broker.call("keyring.revokeKey", {
			keyId: "key-000",
			reason: "leaked",
			proof: proof(operatorOp("revoke", "key-000")),
		});
		await expect(broker.call("batcher.start", { batchSize: 300 })).rejects.toMatchObject({
			code: 409,
			type: "NO_ACTIVE_KEY",
			message:
				"No active key: all 1 key(s) of the keyring are retired or revoked, so no batch could be signed. Add keys first (npm run keys -- add --count N), then start the run",
		});
		// Nothing was started or stored.
		expect(await broker.call("batcher.runs")).toEqual([]);
		expect(await broker.call("records.progress")).toEqual({ records: 600, signed: 0 });

		await broker.call("keyring.addKeys", { count: 1, proof: proof(operatorOp("add", 1)) });
		const completion = system.nextCompletion();
		await broker.call("batcher.start", { batchSize: 300 });
		expect((await completion).status).toBe("completed");
		expect(await broker.call("records.progress")).toEqual({ records: 600, signed: 600 });
	}, 60_000);
});
