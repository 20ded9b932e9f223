/**
 * The keyring's Ed25519 keys: generation, the public JWK that goes into the JWKS, and the
 * start-up check that every sealed private key opens and matches its public key.
 */
import { exportJWK, generateKeyPair, type JWK } from "jose";
import type { KeyDoc } from "../contract";
import { sealPrivateKey, unsealPrivateKey, MasterKeyError, type MasterKey } from "./master-key";

/** Zero-padded to at least 3 digits, so that string order is creation order. */
export function keyIdOf(index: number): string {
	return `key-${String(index).padStart(3, "0")}`;
}

/** Only the public members, whatever else a stored document holds. */
export function publicJwkOf(keyId: string, jwk: JWK): JWK {
	return { kty: jwk.kty, crv: jwk.crv, x: jwk.x, kid: keyId, alg: "EdDSA", use: "sig" };
}

/** The index after the highest `key-NNN` among `keyIds`: where added keys start. */
export function nextKeyIndex(keyIds: Iterable<string>): number {
	let next = 0;
	for (const keyId of keyIds) {
		const match = /^key-(\d+)$/.exec(keyId);
		if (match) next = Math.max(next, Number(match[1]) + 1);
	}
	return next;
}

/** `count` new keys, `key-<from>` onwards, their private halves sealed with the master key. */
export async function generateKeys(
	count: number,
	master: MasterKey,
	now: Date = new Date(),
	from = 0,
): Promise<KeyDoc[]> {
	const docs: KeyDoc[] = [];
	for (let index = from; index < from + count; index++) {
		const keyId = keyIdOf(index);
		const { publicKey, privateKey } = await generateKeyPair("EdDSA", { extractable: true });
		const privateJwk = await exportJWK(privateKey);
		try {
			docs.push({
				_id: keyId,
				keyId,
				createdAt: now.toISOString(),
				publicJwk: publicJwkOf(keyId, await exportJWK(publicKey)),
				sealedPrivateKey: await sealPrivateKey(privateJwk, keyId, master),
			});
		} finally {
			delete privateJwk.d;
		}
	}
	return docs;
}

/** Fails start-up, naming the key, when a sealed key does not open or is not its public key's. */
export async function verifySealedKey(doc: KeyDoc, master: MasterKey): Promise<void> {
	const plaintext = await unsealPrivateKey(doc.sealedPrivateKey, doc.keyId, master);
	try {
		const jwk = JSON.parse(new TextDecoder().decode(plaintext)) as JWK;
		const matches =
			jwk.kty === "OKP" &&
			jwk.crv === "Ed25519" &&
			typeof jwk.d === "string" &&
			jwk.x === doc.publicJwk.x;
		delete jwk.d;
		if (!matches)
			throw new MasterKeyError(
				`the sealed private key of ${doc.keyId} does not belong to its stored public key`,
			);
	} finally {
		plaintext.fill(0);
	}
}
