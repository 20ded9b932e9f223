/**
 * Signing with libsodium (sodium-native): the keyring's real keys, sealed to a signer's
 * session as in a lease, opened into guarded memory and signed with on the signer's threads,
 * make byte for byte the detached JWS node:crypto made before (Ed25519 is deterministic); the
 * audit's libsodium verification accepts node:crypto's signatures; the key's copies are wiped;
 * and a missing sodium-native fails naming the package and what to do.
 */
import { createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { inspect } from "node:util";
import { CompactSign, type JWK } from "jose";
import {
	HeaderCache,
	ed25519PublicKeyBytes,
	checkSignature,
	FindingList,
} from "../../src/audit/checks";
import { verifyFloor } from "../../src/audit/verify-floor";
import { generateKeys } from "../../src/keyring/keys";
import { KeyTransport, LeaseKeyOpener } from "../../src/keyring/key-transport";
import { loadMasterKey, unsealPrivateKey } from "../../src/keyring/master-key";
import { makeRecords } from "../../src/records/records";
import {
	nodeCryptoSignDetached,
	protectedHeader,
	signingInput,
	sodiumSigner,
} from "../../src/signer/jws";
import { LeaseKeyFormatError, LeaseSecret, wipeHandOff } from "../../src/signer/lease-secret";
import { SignPool } from "../../src/signer/sign-pool";
import { piecesOf, signaturesDigestV2 } from "../../src/identity/batch-digest";
import { importSodium, requireSodium, SodiumUnavailableError } from "../../src/sodium";
import type { KeyDoc, RecordPayload } from "../../src/contract";
import { SqliteRecordsStore } from "../../src/records/sqlite-store";
import type { LoggedSignature } from "../../src/records/store";
import { signatureLeaf } from "../../src/tlog/leaves";
import { leafHash } from "../../src/tlog/merkle";
import { leafHashesOf, rememberLeafHashes } from "../../src/tlog/piece-leaves";
import { openStoreFile, writeSignedStore } from "../support/audit-fixture";

const sodium = requireSodium();

/** The keyring's own path: keys generated and sealed at rest, one opened and sealed to a signer's session per lease. */
async function keyring(count: number) {
	const master = await loadMasterKey(
		{ masterKey: Buffer.alloc(32, 7).toString("base64"), dataDir: "" },
		true,
	);
	const docs = await generateKeys(count, master);
	const transport = new KeyTransport();
	let leases = 0;
	const lease = async (doc: KeyDoc, opener: LeaseKeyOpener) => {
		const leaseId = `lease-${++leases}`;
		const privateJwk = await unsealPrivateKey(doc.sealedPrivateKey, doc.keyId, master);
		try {
			return {
				keyId: doc.keyId,
				leaseId,
				key: transport.seal(privateJwk, doc.keyId, leaseId, opener.session.publicJwk),
				transportKey: transport.publicJwk,
			};
		} finally {
			privateJwk.fill(0);
		}
	};
	return { docs, lease };
}

/** The run's own kind of payloads, and the awkward ones: non-ASCII, empty, long, JSON-looking. */
function payloads(): RecordPayload[] {
	const records = [...makeRecords(600)].flat();
	records.push(
		{ id: "rec-utf8", data: "données signées ✓ — 署名 🙂" },
		{ id: "rec-empty", data: "" },
		{ id: "rec-long", data: "x".repeat(20_000) },
		{ id: "rec-json", data: '{"id":"other","data":"\\"quoted\\"\\n"}' },
	);
	return records;
}

let pool: SignPool;
beforeAll(() => {
	pool = new SignPool(2);
});
afterAll(async () => {
	await pool.destroy();
});

describe("libsodium signatures", () => {
	test("are byte-identical to node:crypto's (and jose's) for the keyring's real leased keys and the run's payloads, and verify with the JWKS key", async () => {
		const { docs, lease } = await keyring(3);
		const opener = new LeaseKeyOpener();
		const records = payloads();
		for (const doc of docs) {
			const sealed = await lease(doc, opener);
			const secret = await opener.openSecret(sealed);
			const cryptoKey = await opener.open(sealed);
			try {
				expect(secret.keyId).toBe(doc.keyId);
				expect(secret.publicKey.toString("base64url")).toBe(doc.publicJwk.x);
				const header = protectedHeader(doc.keyId);
				const before = records.map((r) => nodeCryptoSignDetached(cryptoKey, header, r));

				// The signer's own path: the pool's threads, the key handed off per chunk.
				const { signed, groups } = await pool.sign(
					secret,
					doc.keyId,
					records,
					() => Infinity,
					{ groups: true },
				);
				expect(signed.map((s) => s.recordId)).toEqual(records.map((r) => r.id));
				// The threads' group digests give each stored piece the digest records computes from it.
				const pieces = piecesOf(signed, groups);
				expect(pieces.flat()).toEqual(signed);
				for (const piece of pieces)
					expect(signaturesDigestV2(piece)).toBe(signaturesDigestV2([...piece]));
				expect(signed.map((s) => s.jws)).toEqual(before);
				// And on this thread, straight from guarded memory.
				expect(
					secret.use((sk) => records.map((r) => sodiumSigner(sodium, sk)(header, r))),
				).toEqual(before);

				// jose (a third implementation) agrees on a few, and the JWKS key verifies them with libsodium.
				for (const r of records.slice(-4)) {
					const compact = await new CompactSign(
						new TextEncoder().encode(JSON.stringify({ id: r.id, data: r.data })),
					)
						.setProtectedHeader({ alg: "EdDSA", kid: doc.keyId })
						.sign(cryptoKey);
					const [h, , s] = compact.split(".");
					expect(`${h}..${s}`).toBe(signed.find((x) => x.recordId === r.id)!.jws);
				}
				const publicKey = ed25519PublicKeyBytes(doc.publicJwk.x!);
				for (const s of signed.slice(0, 50)) {
					const record = records.find((r) => r.id === s.recordId)!;
					expect(
						sodium.crypto_sign_verify_detached(
							Buffer.from(s.jws.split(".")[2], "base64url"),
							signingInput(header, record),
							publicKey,
						),
					).toBe(true);
				}
			} finally {
				secret.dispose();
			}
		}
	});

	test("the audit's check, with libsodium, passes node:crypto's signatures and catches a changed one", async () => {
		const { docs, lease } = await keyring(1);
		const [doc] = docs;
		const opener = new LeaseKeyOpener();
		const cryptoKey = await opener.open(await lease(doc, opener));
		const header = protectedHeader(doc.keyId);
		const verifier = {
			keys: new Map([[doc.keyId, ed25519PublicKeyBytes(doc.publicJwk.x!)]]),
			headers: new HeaderCache(),
			verify: (signature: Buffer, message: Buffer, publicKey: Uint8Array) =>
				sodium.crypto_sign_verify_detached(signature, message, publicKey as Buffer),
		};
		const findings = new FindingList(10);
		const records = payloads().slice(-10);
		for (const r of records)
			checkSignature(
				{
					recordId: r.id,
					keyId: doc.keyId,
					batchId: "b",
					leaseId: "l",
					jws: nodeCryptoSignDetached(cryptoKey, header, r),
					signedAt: "",
				},
				r.data,
				verifier,
				findings,
			);
		expect(findings.counts.reduce((a, b) => a + b)).toBe(0);
		const r = records[0];
		checkSignature(
			{
				recordId: r.id,
				keyId: doc.keyId,
				batchId: "b",
				leaseId: "l",
				jws: nodeCryptoSignDetached(cryptoKey, header, { ...r, data: `${r.data}!` }),
				signedAt: "",
			},
			r.data,
			verifier,
			findings,
		);
		expect(findings.listed.flat()).toEqual([
			expect.objectContaining({
				rule: "signature-verifies",
				message: expect.stringMatching(/does not verify against key key-000/),
			}),
		]);
	});
});

describe("the signature log's leaves, hashed by the signing threads", () => {
	test("equal src/tlog/leaves.ts's hashes of the rows records stores from them (duplicates left out), only the very piece arrays they were made for find them, and the tree is the rows' whether records or its hashing thread appends them", async () => {
		const { docs, lease } = await keyring(1);
		const [doc] = docs;
		const opener = new LeaseKeyOpener();
		const sealed = await lease(doc, opener);
		const secret = await opener.openSecret(sealed);
		const under = { keyId: doc.keyId, batchId: "run-1-b000001", leaseId: sealed.leaseId };
		// Three pieces (TRANSFER_CHUNK), the awkward payloads, and a record twice in the first piece.
		const records = [...[...makeRecords(4_100)].flat(), ...payloads().slice(-4)];
		records.splice(20, 0, records[5]);
		const { signed, leafHashes } = await pool
			.sign(secret, doc.keyId, records, () => Infinity, {
				leaves: { batchId: under.batchId, leaseId: under.leaseId },
			})
			.finally(() => secret.dispose());
		const rowHash = (s: { recordId: string; jws: string; signedAt: string }) =>
			leafHash(signatureLeaf({ ...under, ...s }));
		expect(leafHashes!.length).toBe(records.length * 32);
		signed.forEach((s, i) =>
			expect(Buffer.from(leafHashes!.subarray(i * 32, (i + 1) * 32))).toEqual(rowHash(s)),
		);

		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "sodium-leaves-"));
		const store = SqliteRecordsStore.open(dataDir);
		try {
			await store.insertRecords(records);
			// Signed before, by another batch: duplicates in the second and third pieces.
			const earlier = [records[2_100], records[4_050]].map((r) => ({
				recordId: r.id,
				jws: "earlier",
				signedAt: "2025-01-01T00:00:00.000Z",
			}));
			await store.storeSignatures({
				...under,
				batchId: "run-1-b000000",
				signatures: earlier,
			});
			const pieces = piecesOf(signed, null);
			expect(pieces).toHaveLength(3);
			rememberLeafHashes(pieces, under, leafHashes!);
			expect(leafHashesOf(pieces[0], under)).not.toBeNull();
			// Only this very array, under this key, batch and lease.
			expect(leafHashesOf([...pieces[0]], under)).toBeNull();
			expect(leafHashesOf(pieces[0], { ...under, leaseId: "lease-other" })).toBeNull();
			// Records from the bus (a new array: no leaf hashes), between the pieces.
			const fromBus = (ids: string[]) => ({
				...under,
				batchId: "run-1-b000002",
				signatures: ids.map((recordId) => ({
					recordId,
					jws: `bus-${recordId}`,
					signedAt: "2025-01-01T00:00:02.000Z",
				})),
			});
			await store.insertRecords(["bus-1", "bus-2"].map((id) => ({ id, data: id })));
			await store.signatureLog.settle();
			const results = [];
			// Nothing in flight: appended by records itself, in its transaction.
			results.push(await store.storeSignatures({ ...under, signatures: pieces[0] }));
			// To the hashing thread, told the tree the piece before it left.
			await store.storeSignatures(fromBus(["bus-1"]));
			// With that in flight: its leaf hashes go to the thread, after it.
			results.push(await store.storeSignatures({ ...under, signatures: pieces[1] }));
			await store.signatureLog.settle();
			results.push(await store.storeSignatures({ ...under, signatures: pieces[2] }));
			await store.storeSignatures(fromBus(["bus-2"]));
			expect(results.map((r) => r.duplicates)).toEqual([1, 1, 1]);

			await store.signatureLog.settle();
			const rows: LoggedSignature[] = [];
			for (const s of [...earlier, ...signed, { recordId: "bus-1" }, { recordId: "bus-2" }]) {
				const row = await store.loggedSignature(s.recordId);
				if (row && !rows.some((r) => r.recordId === row.recordId)) rows.push(row);
			}
			rows.sort((a, b) => a.logIndex! - b.logIndex!);
			expect(rows.map((r) => r.logIndex)).toEqual(rows.map((_, i) => i));
			expect(rows).toHaveLength(records.length - 1 + 2);
			expect(store.signatureLog.leafHashes(0, rows.length)).toEqual(
				rows.map((row) => leafHash(signatureLeaf(row))),
			);
		} finally {
			await store.close();
			fs.rmSync(dataDir, { recursive: true, force: true });
		}
	});
});

describe("the verify floor", () => {
	test("counts the same valid signatures with libsodium and with node:crypto, on a store signed by node:crypto", async () => {
		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "sodium-floor-"));
		try {
			writeSignedStore(dataDir, { records: 1200, keys: 3, batchSize: 100 });
			const db = openStoreFile(dataDir, "records");
			const row = db
				.prepare("SELECT jws FROM signatures WHERE recordId = 'r-0500'")
				.get() as { jws: string };
			const [h, , bytes] = row.jws.split(".");
			const flipped = Buffer.from(bytes, "base64url");
			flipped[3] ^= 0x10;
			db.prepare("UPDATE signatures SET jws = ? WHERE recordId = 'r-0500'").run(
				`${h}..${flipped.toString("base64url")}`,
			);
			db.close();
			const sodiumFloor = await verifyFloor(dataDir, { rangeSize: 300, threads: 2 });
			const nodeCryptoFloor = await verifyFloor(dataDir, {
				rangeSize: 300,
				threads: 2,
				library: "node:crypto",
			});
			expect(sodiumFloor).toMatchObject({
				library: "libsodium",
				signatures: 1200,
				valid: 1199,
			});
			expect(nodeCryptoFloor).toMatchObject({
				library: "node:crypto",
				signatures: 1200,
				valid: 1199,
			});
		} finally {
			fs.rmSync(dataDir, { recursive: true, force: true });
		}
	});
});

/** Every hand-off the secret makes to the signing threads, kept to look at after the batch (the real ones, not stand-ins). */
function keepHandOffs(secret: LeaseSecret): SharedArrayBuffer[] {
	const handOffs: SharedArrayBuffer[] = [];
	const make = secret.handOffs.bind(secret);
	jest.spyOn(secret, "handOffs").mockImplementation((count) => {
		const shared = make(count);
		handOffs.push(...shared);
		return shared;
	});
	return handOffs;
}

describe("the lease key's life in guarded memory", () => {
	test("opened only for its own lease and session, from an Ed25519 JWK whose x matches its d", async () => {
		const { docs, lease } = await keyring(2);
		const opener = new LeaseKeyOpener();
		const sealed = await lease(docs[0], opener);
		await expect(opener.openSecret({ ...sealed, leaseId: "another-lease" })).rejects.toThrow(
			/sealed for .* under lease/,
		);
		await expect(new LeaseKeyOpener().openSecret(sealed)).rejects.toThrow();

		// A JWK whose d and x are of two different keys, or that is not an Ed25519 private key.
		const [a, b] = await Promise.all(
			docs.map(
				async (doc) =>
					JSON.parse(
						Buffer.from(
							await unsealPrivateKey(
								doc.sealedPrivateKey,
								doc.keyId,
								await loadMasterKey(
									{
										masterKey: Buffer.alloc(32, 7).toString("base64"),
										dataDir: "",
									},
									true,
								),
							),
						).toString(),
					) as JWK,
			),
		);
		expect(() =>
			LeaseSecret.fromPrivateJwk(Buffer.from(JSON.stringify({ ...a, x: b.x })), "key-000"),
		).toThrow(/not one key pair/);
		expect(() =>
			LeaseSecret.fromPrivateJwk(
				Buffer.from(JSON.stringify({ ...a, crv: "X25519" })),
				"key-000",
			),
		).toThrow(LeaseKeyFormatError);
		expect(() =>
			LeaseSecret.fromPrivateJwk(
				Buffer.from(JSON.stringify({ kty: "OKP", crv: "Ed25519", x: a.x })),
				"key-000",
			),
		).toThrow(/no "d"/);
		expect(() =>
			LeaseSecret.fromPrivateJwk(
				Buffer.from(JSON.stringify({ ...a, d: `${a.d}A` })),
				"key-000",
			),
		).toThrow(/not 32 bytes/);
		expect(() => LeaseSecret.fromPrivateJwk(Buffer.from("[1,2]"), "key-000")).toThrow(
			LeaseKeyFormatError,
		);
		// Whitespace and member order do not matter; `d` is blanked in the bytes it was read from.
		const spaced = Buffer.from(
			JSON.stringify(
				{ x: a.x, kty: "OKP", extra: { d: [1, "}"] }, d: a.d, crv: "Ed25519" },
				null,
				2,
			),
		);
		const secret = LeaseSecret.fromPrivateJwk(spaced, "key-000");
		expect(secret.publicKey.toString("base64url")).toBe(a.x);
		expect(spaced.toString()).not.toContain(a.d!);
		secret.dispose();
	});

	test('a key leased again is taken from its checked pair and signs as it did; an "x" that is not its seed\'s is still refused', async () => {
		const { privateKey } = generateKeyPairSync("ed25519");
		const jwk = privateKey.export({ format: "jwk" }) as JWK;
		const other = generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }) as JWK;
		const records = payloads();
		const signAll = async () => {
			const secret = LeaseSecret.fromPrivateJwk(Buffer.from(JSON.stringify(jwk)), "key-007");
			expect(secret.publicKey.toString("base64url")).toBe(jwk.x);
			const { signed } = await pool
				.sign(secret, "key-007", records, () => Infinity)
				.finally(() => secret.dispose());
			return signed.map((s) => s.jws);
		};
		const first = await signAll();
		// The second opening finds the pair checked by the first; Ed25519 is deterministic.
		expect(await signAll()).toEqual(first);
		for (const [i, jws] of first.entries())
			expect(
				verify(
					null,
					signingInput(jws.split("..")[0], records[i]),
					createPublicKey({ key: jwk, format: "jwk" }),
					Buffer.from(jws.split("..")[1], "base64url"),
				),
			).toBe(true);
		expect(() =>
			LeaseSecret.fromPrivateJwk(
				Buffer.from(JSON.stringify({ ...jwk, x: other.x })),
				"key-007",
			),
		).toThrow(/not one key pair/);
	});

	test("is wiped when disposed, never printed, and its hand-offs and the threads' slots are zero once a batch is signed", async () => {
		const secret = LeaseSecret.generate("key-042");
		expect(inspect(secret)).toBe('LeaseSecret { keyId: "key-042", in guarded memory }');
		expect(JSON.stringify({ secret })).toBe('{"secret":{"keyId":"key-042","disposed":false}}');

		const handOffs = keepHandOffs(secret);
		const records = payloads();
		const { signed } = await pool.sign(secret, "key-042", records, () => Infinity);
		expect(signed).toHaveLength(records.length);
		expect(handOffs.length).toBeGreaterThan(1);
		for (const shared of handOffs)
			expect(sodium.sodium_is_zero(Buffer.from(shared), 64)).toBe(true);

		// A one-thread pool: its slot holds the key only while a chunk signs.
		const single = new SignPool(1);
		try {
			await single.sign(secret, "key-042", records.slice(0, 100), () => Infinity);
			const run = (
				single as unknown as {
					pool: { run(task: unknown, options?: { name: string }): Promise<unknown> };
				}
			).pool;
			expect(await run.run({}, { name: "keySlotIsZero" })).toBe(true);
			// A chunk past its deadline signs nothing, and its hand-off is wiped too.
			const late = secret.handOff();
			expect(sodium.sodium_is_zero(Buffer.from(late), 64)).toBe(false);
			expect(
				await run.run({
					secret: late,
					keyId: "key-042",
					records: "[]",
					deadline: Date.now() - 1,
				}),
			).toMatchObject({ jws: null });
			expect(sodium.sodium_is_zero(Buffer.from(late), 64)).toBe(true);
			expect(await run.run({}, { name: "keySlotIsZero" })).toBe(true);
		} finally {
			await single.destroy();
		}

		secret.dispose();
		expect(secret.disposed).toBe(true);
		expect(inspect(secret)).toBe('LeaseSecret { keyId: "key-042", wiped }');
		expect(() => secret.handOff()).toThrow(/wiped/);
		await expect(
			pool.sign(secret, "key-042", records.slice(0, 10), () => Infinity),
		).rejects.toThrow(/wiped/);
		secret.dispose();
	});

	test("guarded slots handed back by one lease's key and taken by the next hold only the next key", () => {
		// More keys than slots are kept, some alive at once: every slot is reused, some freed.
		const pairs = Array.from({ length: 80 }, () => generateKeyPairSync("ed25519"));
		const message = Buffer.from("record-signer slot reuse");
		const alive: LeaseSecret[] = [];
		for (const [i, pair] of pairs.entries()) {
			const jwk = pair.privateKey.export({ format: "jwk" });
			const secret = LeaseSecret.fromPrivateJwk(Buffer.from(JSON.stringify(jwk)), `key-${i}`);
			const signature = Buffer.alloc(64);
			secret.use((sk) => sodium.crypto_sign_detached(signature, message, sk));
			expect(verify(null, message, pair.publicKey, signature)).toBe(true);
			alive.push(secret);
			if (alive.length > 3) alive.shift()!.dispose();
		}
		// A slot from a disposed key starts the next key with nothing of the old one.
		for (const secret of alive) secret.dispose();
		const fresh = LeaseSecret.generate("key-fresh");
		expect(fresh.use((sk) => sodium.sodium_is_zero(sk, 64))).toBe(false);
		expect(fresh.use((sk) => Buffer.from(sk.subarray(32)).equals(fresh.publicKey))).toBe(true);
		fresh.dispose();
	});

	test("a batch's hand-offs are copied in one readable window of the key, each the whole key", () => {
		const secret = LeaseSecret.generate("key-008");
		const readable = jest.spyOn(sodium, "sodium_mprotect_readonly");
		try {
			const handOffs = secret.handOffs(3);
			expect(readable).toHaveBeenCalledTimes(1);
			expect(handOffs).toHaveLength(3);
			for (const shared of handOffs) {
				expect(secret.use((sk) => Buffer.from(sk).equals(Buffer.from(shared)))).toBe(true);
				wipeHandOff(shared, sodium);
			}
		} finally {
			readable.mockRestore();
			secret.dispose();
		}
	});

	test("a batch that fails (its deadline passed) still wipes every hand-off", async () => {
		const secret = LeaseSecret.generate("key-007");
		const handOffs = keepHandOffs(secret);
		// The deadline passes as the chunks go out: the batch is handed back unsigned.
		let calls = 0;
		await expect(
			pool.sign(secret, "key-007", payloads(), () => (++calls > 1 ? 0 : Infinity)),
		).rejects.toThrow(/Lease deadline reached/);
		for (const shared of handOffs)
			expect(sodium.sodium_is_zero(Buffer.from(shared), 64)).toBe(true);
		wipeHandOff(handOffs[0], sodium);
		secret.dispose();
	});
});

describe("without sodium-native", () => {
	test("loading fails naming the package and what to do", async () => {
		expect(() => requireSodium("sodium-native-not-installed")).toThrow(SodiumUnavailableError);
		expect(() => requireSodium("sodium-native-not-installed")).toThrow(
			/sodium-native .*could not be loaded.*npm ci.*npm install sodium-native/,
		);
		await expect(importSodium("sodium-native-not-installed")).rejects.toThrow(
			/sodium-native .*could not be loaded.*npm ci/,
		);
		// A module that loads but is not sodium-native's API.
		expect(() => requireSodium("node:os")).toThrow(/not the sodium-native 5 API/);
	});
});
