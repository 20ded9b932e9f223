/**
 * The cheaper statements of the lease protocol: requests and tickets under a request MAC key
 * (HS256, src/identity/request-mac.ts) checked by the keyring's gate, and store proofs over a
 * piece's group digests (version 2, src/identity/signature-groups.ts) checked by records, which
 * still takes an older signer's version 1 proof.
 */
import { randomBytes } from "node:crypto";
import { deriveAuthorityKey, KeyringTrust, publishAuthority } from "../../src/identity/authority";
import {
	idsDigest,
	piecesOf,
	signaturesDigest,
	signaturesDigestV2,
	TRANSFER_CHUNK,
} from "../../src/identity/batch-digest";
import { signDetached } from "../../src/identity/compact-jws";
import { newCredential } from "../../src/identity/credential";
import { issueLeaseToken, makeStoreProof, StoreGate } from "../../src/identity/lease-token";
import { makeProof } from "../../src/identity/proof";
import { credentialMacKey, keyringMacKey } from "../../src/identity/request-mac";
import { signatureGroupDigests, SIGNATURE_GROUP } from "../../src/identity/signature-groups";
import { makeTicket } from "../../src/identity/ticket";
import { CredentialGate, SignerRefusedError } from "../../src/keyring/credential-gate";
import type { EnrolledSigner } from "../../src/keyring/store";
import type { StoreSignaturesParams } from "../../src/contract";
import { systemClock } from "../../src/clock";

const authority = deriveAuthorityKey(randomBytes(32));
publishAuthority(authority, null);
const authorityX = authority.publicJwk.x!;

function enrolledStore(...credentials: ReturnType<typeof newCredential>[]) {
	const enrolled = credentials.map(
		(c) =>
			({
				name: c.name,
				publicJwk: c.publicJwk,
				revokedAt: null,
			}) as unknown as EnrolledSigner,
	);
	return { enrolled: async () => enrolled };
}

const signatures = (n: number, from = 0) =>
	Array.from({ length: n }, (_, i) => ({
		recordId: `rec-${String(from + i).padStart(7, "0")}`,
		jws: `eyJhbGciOiJFZERTQSJ9..${randomBytes(64).toString("base64url")}`,
		signedAt: new Date(1_700_000_000_000 + i).toISOString(),
	}));

describe("request MAC keys", () => {
	test("the signer and the keyring derive the same key, and no other pair does", () => {
		const signer = newCredential("signer-a");
		const other = newCredential("signer-b");
		const mine = credentialMacKey("signer", signer.privateKey, authorityX);
		expect(keyringMacKey("signer", authority.privateKey, signer.publicJwk.x!)).toEqual(mine);
		expect(keyringMacKey("signer", authority.privateKey, other.publicJwk.x!)).not.toEqual(mine);
		// A signer's key never stands for a batcher's.
		expect(credentialMacKey("batcher", signer.privateKey, authorityX)).not.toEqual(mine);
	});

	test("the gate takes an HS256 proof under the enrolled signer's key and refuses one under another", async () => {
		const signer = newCredential("signer-c");
		const stranger = newCredential("signer-d");
		const gate = new CredentialGate(
			enrolledStore(signer),
			"signer",
			systemClock,
			authority.privateKey,
		);
		const claims = { act: "release" as const, node: "node-1", lid: "lease-1" };
		const good = makeProof(
			signer,
			claims,
			Date.now(),
			credentialMacKey("signer", signer.privateKey, authorityX),
		);
		await expect(
			gate.check("release", good, { callerNode: "node-1", leaseId: "lease-1" }),
		).resolves.toMatchObject({
			credential: "signer-c",
			node: "node-1",
		});
		// The stranger's MAC, under the enrolled name: refused.
		const forged = makeProof(
			{ ...stranger, name: "signer-c" },
			claims,
			Date.now(),
			credentialMacKey("signer", stranger.privateKey, authorityX),
		);
		await expect(
			gate.check("release", forged, { callerNode: "node-1", leaseId: "lease-1" }),
		).rejects.toMatchObject({
			type: "SIGNER_PROOF_INVALID",
		});
		// The same proof twice: a replay.
		await expect(
			gate.check("release", good, { callerNode: "node-1", leaseId: "lease-1" }),
		).rejects.toBeInstanceOf(SignerRefusedError);
		// A gate without the authority key takes no HS256 proof at all.
		const blind = new CredentialGate(enrolledStore(signer), "signer", systemClock);
		const again = makeProof(
			signer,
			claims,
			Date.now(),
			credentialMacKey("signer", signer.privateKey, authorityX),
		);
		await expect(
			blind.check("release", again, { callerNode: "node-1", leaseId: "lease-1" }),
		).rejects.toMatchObject({
			type: "SIGNER_PROOF_INVALID",
		});
	});

	test("a dispatch ticket under the batcher's MAC key is taken once; under a signer's key it is refused", async () => {
		const batcher = newCredential("batcher-a");
		const gate = new CredentialGate(
			enrolledStore(batcher),
			"batcher",
			systemClock,
			authority.privateKey,
		);
		const request = {
			runId: "run-1",
			batchId: "batch-1",
			records: [{ id: "rec-1", data: "one" }],
			signer: "node-1",
			ttlMs: 60_000,
		};
		const ticket = makeTicket(
			batcher,
			request,
			Date.now(),
			credentialMacKey("batcher", batcher.privateKey, authorityX),
		);
		await expect(gate.checkTicket(ticket, "node-1")).resolves.toMatchObject({ bid: "batch-1" });
		await expect(gate.checkTicket(ticket, "node-1")).rejects.toMatchObject({
			type: "DISPATCH_TICKET_REPLAYED",
		});
		const wrongRole = makeTicket(
			batcher,
			{ ...request, batchId: "batch-2" },
			Date.now(),
			credentialMacKey("signer", batcher.privateKey, authorityX),
		);
		await expect(gate.checkTicket(wrongRole, "node-1")).rejects.toMatchObject({
			type: "DISPATCH_TICKET_INVALID",
		});
	});
});

describe("a credential enrolled while the keyring runs", () => {
	test("is believed by every proof that names it at once, not only the first: the others wait for the store read the first began", async () => {
		const old = newCredential("signer-old");
		const rotated = newCredential("signer-new");
		const enrolled = [old];
		const store = {
			enrolled: async () => {
				await new Promise((resolve) => setTimeout(resolve, 20));
				return enrolledStore(...enrolled).enrolled();
			},
		};
		const gate = new CredentialGate(store, "signer", systemClock, authority.privateKey);
		const proof = (credential: ReturnType<typeof newCredential>, node: string) =>
			makeProof(credential, { act: "release" as const, node, lid: `lease-${node}` });
		// The gate reads the store once (only the old credential), then the new one is enrolled
		// and every node sharing the rotated key file asks with it within the same moment.
		await gate.check("release", proof(old, "node-0"), {
			callerNode: "node-0",
			leaseId: "lease-node-0",
		});
		enrolled.push(rotated);
		const nodes = ["node-1", "node-2", "node-3"];
		const answers = await Promise.allSettled(
			nodes.map((node) =>
				gate.check("release", proof(rotated, node), {
					callerNode: node,
					leaseId: `lease-${node}`,
				}),
			),
		);
		expect(answers.map((a) => a.status)).toEqual(nodes.map(() => "fulfilled"));
		// A name never enrolled is still refused.
		await expect(
			gate.check("release", proof(newCredential("signer-stranger"), "node-4"), {
				callerNode: "node-4",
				leaseId: "lease-node-4",
			}),
		).rejects.toMatchObject({ type: "SIGNER_NOT_ENROLLED" });
	});
});

describe("store proofs over group digests", () => {
	test("pieces sealed from the signing threads' group digests carry the digest records computes", () => {
		// As the pool cuts a batch: chunks of 512 (a multiple of the group), each hashed by its thread.
		const all = signatures(2 * TRANSFER_CHUNK + 100);
		const groups = Buffer.concat(
			Array.from({ length: Math.ceil(all.length / 512) }, (_, c) => {
				const chunk = all.slice(c * 512, (c + 1) * 512);
				return signatureGroupDigests(chunk.length, (i) => [
					chunk[i].recordId,
					chunk[i].jws,
					chunk[i].signedAt,
				]);
			}),
		);
		expect(groups.length).toBe(Math.ceil(all.length / SIGNATURE_GROUP) * 32);
		const pieces = piecesOf(all, groups);
		expect(pieces.map((p) => p.length)).toEqual([TRANSFER_CHUNK, TRANSFER_CHUNK, 100]);
		for (const piece of pieces)
			expect(signaturesDigestV2(piece)).toBe(signaturesDigestV2([...piece]));
		// Without group digests, the pieces are the same and each digest is computed.
		expect(piecesOf(all, null).map((p) => signaturesDigestV2(p))).toEqual(
			pieces.map((p) => signaturesDigestV2(p)),
		);
	});

	test("records takes a version 2 proof and an older signer's version 1 proof, and refuses altered signatures", () => {
		const signer = newCredential("signer-e");
		const gate = new StoreGate(
			new KeyringTrust({ keyringPublicKey: null, keyringPublicKeyFile: null }),
		);
		const piece = signatures(40);
		const token = issueLeaseToken(authority, {
			lid: "lease-9",
			key: "key-001",
			node: "node-1",
			cnf: signer.publicJwk.x!,
			bid: "batch-9",
			ids: [idsDigest(piece.map((s) => s.recordId))],
			exp: Date.now() + 60_000,
		});
		const params = (signatures: typeof piece, proof: string): StoreSignaturesParams => ({
			batchId: "batch-9",
			keyId: "key-001",
			leaseId: "lease-9",
			signatures,
			token,
			proof,
		});
		const v2 = makeStoreProof(signer, {
			leaseId: "lease-9",
			batchId: "batch-9",
			signatures: piece,
		});
		expect(() => gate.check(params(piece, v2))).not.toThrow();
		const v1 = signDetached(
			signer.privateKey,
			`record-signer store v1\nlease-9\nbatch-9\n${signaturesDigest([...piece])}`,
		);
		expect(() => gate.check(params([...piece], v1))).not.toThrow();
		const altered = piece.map((s, i) =>
			i === 7 ? { ...s, jws: `${s.jws.slice(0, -2)}AA` } : s,
		);
		expect(() => gate.check(params(altered, v2))).toThrow(
			expect.objectContaining({ type: "STORE_PROOF_INVALID" }),
		);
		expect(() => gate.check(params(altered, v1))).toThrow(
			expect.objectContaining({ type: "STORE_PROOF_INVALID" }),
		);
	});
});
