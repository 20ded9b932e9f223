/**
 * The master key is a key-encryption key that can be rotated while leases go on (docs/design.md
 * §5.1, §5.8): the authority key that signs lease tokens is sealed under it in the store, so a
 * rotation changes no public key; a store from before (no sealed authority key) is migrated once
 * with its authority key unchanged; a rotation that stopped between its commit and its file swap
 * is finished by the next start; a bad next key or a missing operator proof changes nothing.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { ServiceBroker } from "moleculer";
import type { Lease, MasterKeyRotation } from "../../src/contract";
import { ConfigError, loadConfig } from "../../src/config";
import { deriveAuthorityKey, parseAuthorityKey } from "../../src/identity/authority";
import { parseJws, verifyJws } from "../../src/identity/compact-jws";
import { makeProof, operatorOp } from "../../src/identity/proof";
import { localCredential } from "../../src/identity/credential";
import { LeaseKeyOpener } from "../../src/keyring/key-transport";
import type { KeyringStore } from "../../src/keyring/store";
import type { KeyringSettings } from "../../src/settings";
import { signerRequests } from "../support/signer-proofs";
import { keyringService } from "../support/system";

const running: ServiceBroker[] = [];
let dataDir: string;

beforeEach(() => {
	dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "master-key-rotation-"));
});

afterEach(async () => {
	while (running.length) await running.pop()!.stop();
	fs.rmSync(dataDir, { recursive: true, force: true });
});

const file = (name: string) => path.join(dataDir, name);
const read = (name: string) => fs.readFileSync(file(name), "utf8");
const rotateProof = () =>
	makeProof(localCredential("", "batcher"), {
		act: "keys",
		node: "operator-node",
		op: operatorOp("rotate", "master-key"),
	});

async function startKeyring(settings: Partial<KeyringSettings> = {}) {
	const broker = new ServiceBroker({ transporter: null, logger: false });
	broker.createService(
		keyringService({
			dataDir,
			keys: 3,
			sweepIntervalMs: 0,
			publicKeyFile: file("keyring.pub"),
			...settings,
		}),
	);
	await broker.start();
	running.push(broker);
	const requests = signerRequests();
	const session = new LeaseKeyOpener();
	return {
		broker,
		store: () =>
			(broker.getLocalService("keyring") as unknown as { store: KeyringStore }).store,
		renew: (lease: Lease) =>
			broker.call<{ token?: string }, object>("keyring.renew", {
				...requests.renew("signer-a", lease.leaseId),
				token: lease.token,
			}),
		acquire: () =>
			broker.call<Lease, object>(
				"keyring.acquire",
				requests.acquire("signer-a", session.session.publicJwk),
			),
		/** Opens a granted key: the keyring unsealed it from rest with its master key. */
		open: (lease: Lease) => session.openSecret(lease),
		rotate: (proof: unknown = rotateProof()) =>
			broker.call<MasterKeyRotation, object>("keyring.rotateMasterKey", { proof }),
		stop: async () => {
			await broker.stop();
			running.splice(running.indexOf(broker), 1);
		},
	};
}

/** Whether a lease token verifies with the keyring public key in `pubText` (what records trusts). */
function tokenVerifies(token: string, pubText: string): boolean {
	const { key, kid } = parseAuthorityKey(pubText, "keyring.pub");
	const parsed = parseJws(token)!;
	return parsed.header.kid === kid && verifyJws(parsed, key);
}

test("a rotation seals every key and the authority key under the next master key while a lease is held: the public key stays, the old master key opens nothing, the new one starts the keyring", async () => {
	const ring = await startKeyring();
	const pub = read("keyring.pub");
	const held = await ring.acquire();
	const oldMaster = read("master.key");
	const sealedBefore = await ring.store().sealedAuthority();
	fs.writeFileSync(file("master.key.next"), Buffer.alloc(32, 7).toString("base64") + "\n");

	const rotation = await ring.rotate();
	expect(rotation).toMatchObject({ sealedKeys: 3, masterKey: file("master.key") });
	expect(read("master.key")).toBe(Buffer.alloc(32, 7).toString("base64") + "\n");
	expect(fs.existsSync(file("master.key.next"))).toBe(false);
	expect(await ring.store().sealedAuthority()).not.toBe(sealedBefore);
	// Leases go on: the held one renews into a token the old keyring.pub verifies, and new grants
	// open, unsealed under the new master key.
	const next = await ring.acquire();
	await expect(ring.open(next)).resolves.toBeTruthy();
	const renewed = await ring.renew(held);
	expect(tokenVerifies(renewed.token!, pub)).toBe(true);
	expect(tokenVerifies(next.token!, pub)).toBe(true);
	expect(read("keyring.pub")).toBe(pub);
	await ring.stop();

	// The old master key opens nothing now.
	const newMaster = read("master.key");
	fs.writeFileSync(file("master.key"), oldMaster);
	await expect(startKeyring()).rejects.toThrow(
		/does not open the keyring's sealed authority key/,
	);
	fs.writeFileSync(file("master.key"), newMaster);
	const restarted = await startKeyring();
	expect(read("keyring.pub")).toBe(pub);
	await expect(restarted.open(await restarted.acquire())).resolves.toBeTruthy();
});

test("a store from before the authority key was sealed opens, is migrated once, and keeps its authority key: tokens verify with the old keyring.pub", async () => {
	const first = await startKeyring();
	await first.stop();
	// What an earlier version left: no keyring_secrets table, the authority derived from master.key.
	const db = new DatabaseSync(file("keyring.sqlite"));
	db.exec("DROP TABLE keyring_secrets");
	db.close();
	const raw = Buffer.from(read("master.key").trim(), "base64");
	const derived = deriveAuthorityKey(raw);
	const oldPub = JSON.stringify(derived.publicJwk) + "\n";
	fs.writeFileSync(file("keyring.pub"), oldPub);

	const migrated = await startKeyring();
	const sealed = await migrated.store().sealedAuthority();
	expect(sealed).toEqual(expect.any(String));
	expect(read("keyring.pub")).toBe(oldPub);
	expect(tokenVerifies((await migrated.acquire()).token!, oldPub)).toBe(true);
	await migrated.stop();

	// Once: a second start reads what the first sealed, and changes nothing.
	const again = await startKeyring();
	expect(await again.store().sealedAuthority()).toBe(sealed);
	expect(read("keyring.pub")).toBe(oldPub);
});

test("a rotation that stopped after its commit and before its file swap is finished by the next start", async () => {
	const ring = await startKeyring();
	const pub = read("keyring.pub");
	const oldMaster = read("master.key");
	const nextMaster = Buffer.alloc(32, 9).toString("base64") + "\n";
	fs.writeFileSync(file("master.key.next"), nextMaster);
	await ring.rotate();
	await ring.stop();
	// The crash: the store committed under the next key, the files not yet swapped.
	fs.writeFileSync(file("master.key"), oldMaster);
	fs.writeFileSync(file("master.key.next"), nextMaster);

	const restarted = await startKeyring();
	expect(read("master.key")).toBe(nextMaster);
	expect(fs.existsSync(file("master.key.next"))).toBe(false);
	expect(read("keyring.pub")).toBe(pub);
	await expect(restarted.open(await restarted.acquire())).resolves.toBeTruthy();
});

test("bad input changes nothing: no operator proof is a 403, a next key of the wrong length is named, no next key is a 409", async () => {
	const ring = await startKeyring();
	const sealed = await ring.store().sealedAuthority();
	const master = read("master.key");
	const fail = (proof?: unknown) => ring.rotate(proof).catch((err: Error) => err);

	expect(await fail()).toMatchObject({ code: 409, type: "NO_NEXT_MASTER_KEY" });
	fs.writeFileSync(file("master.key.next"), Buffer.alloc(16, 1).toString("base64") + "\n");
	expect(await fail()).toMatchObject({
		code: 422,
		type: "MASTER_KEY_INVALID",
		message: expect.stringContaining(
			`${file("master.key.next")} must hold the base64 encoding of exactly 32 bytes`,
		),
	});
	fs.writeFileSync(file("master.key.next"), Buffer.alloc(32, 3).toString("base64") + "\n");
	expect(await fail("")).toMatchObject({ code: 403, type: "OPERATOR_PROOF_MISSING" });
	// A proof for another change does not rotate.
	const addProof = makeProof(localCredential("", "batcher"), {
		act: "keys",
		node: "operator-node",
		op: operatorOp("add", 1),
	});
	expect(await fail(addProof)).toMatchObject({ code: 403, type: "OPERATOR_PROOF_INVALID" });
	expect(await ring.store().sealedAuthority()).toBe(sealed);
	expect(read("master.key")).toBe(master);
	expect(fs.existsSync(file("master.key.next"))).toBe(true);

	expect(() =>
		loadConfig({
			DATA_DIR: dataDir,
			KEYRING_MASTER_KEY: Buffer.alloc(32).toString("base64"),
			KEYRING_MASTER_KEY_NEXT: "c2hvcnQ=",
		}),
	).toThrow(
		new ConfigError(
			"KEYRING_MASTER_KEY_NEXT must be the base64 encoding of exactly 32 bytes (e.g. `openssl rand -base64 32`)",
		),
	);
});

/** KEYRING_MASTER_KEY to KEYRING_MASTER_KEY_NEXT on the store `store` names (the embedded one, or MongoDB). */
async function rotatesFromVariables(store: Partial<KeyringSettings>): Promise<void> {
	const current = Buffer.alloc(32, 1).toString("base64");
	const next = Buffer.alloc(32, 2).toString("base64");
	const ring = await startKeyring({ ...store, masterKey: current });
	const pub = read("keyring.pub");
	await ring.stop();
	const rotating = await startKeyring({ ...store, masterKey: current, masterKeyNext: next });
	expect(await rotating.rotate()).toMatchObject({ masterKey: "KEYRING_MASTER_KEY_NEXT" });
	await rotating.stop();
	// Not swapped yet: the next key opens the store.
	await (await startKeyring({ ...store, masterKey: current, masterKeyNext: next })).stop();
	await expect(startKeyring({ ...store, masterKey: current })).rejects.toThrow(/does not open/);
	const swapped = await startKeyring({ ...store, masterKey: next });
	expect(read("keyring.pub")).toBe(pub);
	await expect(swapped.open(await swapped.acquire())).resolves.toBeTruthy();
}

test("a keyring with KEYRING_MASTER_KEY rotates to KEYRING_MASTER_KEY_NEXT, and starts again from either while the operator swaps them", async () => {
	await rotatesFromVariables({});
});

// MongoDB (the keys and the sealed authority key re-sealed in one fenced transaction): run when
// MONGO_URI names a replica set; listed as skipped, with the reason, when it does not.
if (process.env.MONGO_URI)
	test("on MongoDB too: the keys and the authority key are re-sealed in one transaction, and the public key stays", async () => {
		const url = new URL(process.env.MONGO_URI!);
		url.pathname = `/signing-master-key-rotation-${process.pid}`;
		try {
			await rotatesFromVariables({ mongoUri: url.toString() });
		} finally {
			const { connectMongo } = await import("../../src/store/mongo");
			const connection = await connectMongo(
				url.toString(),
				{
					broker: null,
					logger: new ServiceBroker({ logger: false }).getLogger("rotation-test"),
				},
				"keys",
			);
			await connection.db.command({ dropDatabase: 1 });
			await connection.close();
		}
	});
else test.skip("on MongoDB too: needs MONGO_URI (a MongoDB replica set); not set", () => undefined);
