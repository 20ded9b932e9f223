/**
 * The private key's transport from the keyring to one signer. The signer makes an X25519
 * session key pair and sends the public half with `keyring.acquire`; the keyring seals the
 * leased private JWK to it (compact JWE `ECDH-ES+A256KW`, `A256GCM`); only that signer opens
 * it, into a non-extractable signing key.
 */
import { CompactEncrypt, compactDecrypt, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from "jose";

export const LEASE_KEY_ALG = "ECDH-ES+A256KW";
export const LEASE_KEY_ENC = "A256GCM";

export interface SessionKey {
	publicJwk: JWK;
	/** Non-extractable: it never leaves the signer's process. */
	privateKey: CryptoKey;
}

/** Signer side: one X25519 key pair per signer process. */
export async function createSessionKey(): Promise<SessionKey> {
	const { publicKey, privateKey } = await generateKeyPair(LEASE_KEY_ALG, { crv: "X25519" });
	const { kty, crv, x } = await exportJWK(publicKey);
	return { publicJwk: { kty, crv, x }, privateKey };
}

/**
 * Signer side: opens the `key` of a lease into a non-extractable Ed25519 key for jose's
 * `CompactSign`/`FlattenedSign`. The private JWK is dropped (and its bytes wiped) at once.
 */
export async function openLeaseKey(jwe: string, sessionPrivateKey: CryptoKey): Promise<CryptoKey> {
	const { plaintext } = await compactDecrypt(jwe, sessionPrivateKey, { keyManagementAlgorithms: [LEASE_KEY_ALG], contentEncryptionAlgorithms: [LEASE_KEY_ENC] });
	try {
		const jwk = JSON.parse(new TextDecoder().decode(plaintext)) as JWK;
		try {
			if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.d !== "string") throw new Error("the lease key is not an Ed25519 private key");
			return await importJWK<JWK & { kty: "OKP" }>({ kty: "OKP", crv: "Ed25519", x: jwk.x, d: jwk.d }, "EdDSA", { extractable: false });
		} finally {
			delete jwk.d;
		}
	} finally {
		plaintext.fill(0);
	}
}

export class InvalidSessionKeyError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "InvalidSessionKeyError";
	}
}

/** Keyring side: checks the shape of the signer's public session key, synchronously. */
export function checkSessionKey(jwk: JWK): void {
	if (jwk?.kty !== "OKP" || jwk.crv !== "X25519" || typeof jwk.x !== "string" || Buffer.from(jwk.x, "base64url").length !== 32)
		throw new InvalidSessionKeyError("sessionKey must be an X25519 public JWK ({ kty: \"OKP\", crv: \"X25519\", x: <32 bytes base64url> })");
}

/** Keyring side: imports the signer's public session key. */
export async function importSessionKey(jwk: JWK): Promise<CryptoKey> {
	checkSessionKey(jwk);
	try {
		// Only the public members: a stray `d` must not turn it into a private key here.
		return await importJWK<JWK & { kty: "OKP" }>({ kty: "OKP", crv: "X25519", x: jwk.x }, LEASE_KEY_ALG);
	} catch (err) {
		throw new InvalidSessionKeyError(`sessionKey is not a usable X25519 public key: ${(err as Error).message}`);
	}
}

/** Keyring side: seals the private JWK bytes to the signer's session key. */
export function sealToSession(privateJwkBytes: Uint8Array, keyId: string, sessionKey: CryptoKey): Promise<string> {
	return new CompactEncrypt(privateJwkBytes).setProtectedHeader({ alg: LEASE_KEY_ALG, enc: LEASE_KEY_ENC, kid: keyId, cty: "jwk+json" }).encrypt(sessionKey);
}
