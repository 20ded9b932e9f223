/**
 * Request MAC keys: what lets the keyring check a signer's lease request (proof.ts) or the
 * batcher's dispatch ticket (ticket.ts) with an HMAC, about a microsecond, where an Ed25519
 * verification costs some fifty: the keyring checks two or three of them for each lease, and
 * that, more than anything else, bounded the leases it could grant in a second.
 *
 * The key needs no exchange and no state. It is HKDF-SHA256 over the X25519 shared secret of
 * two keys every party already has: the credential's Ed25519 key (a signer's or the batcher's,
 * credential.ts) and the keyring authority key (authority.ts), each taken to its X25519 form
 * (the birational map of RFC 7748, libsodium's `crypto_sign_ed25519_*_to_curve25519`). The
 * credential's holder derives it from its private key and the authority's public key (the trust
 * anchor records already uses: KEYRING_PUBLIC_KEY, its file, or a keyring in this process); the
 * keyring from the authority's private key and the enrolled public key, once per credential. So
 * it is the same after a keyring restart and on every keyring that holds the master key, and a
 * revoked credential is refused as before, by its enrolment. The info string names the role and
 * both public keys, so a signer's key never checks a ticket. Using one key pair for Ed25519
 * signatures and for X25519 is shown secure by Thormarker ("On using the same key pair for
 * Ed25519 and an X25519 based KEM", 2021); the authority key signs lease tokens and nothing else.
 *
 * A statement under such a key is a compact JWS with alg HS256 (RFC 7518) and the credential's
 * name as `kid`: the same claims, the same checks (time, id taken once, node, lease) as EdDSA.
 */
import { hkdfSync, type KeyObject } from "node:crypto";
import { requireSodium } from "../sodium";
import { KeyringTrust, type TrustSettings } from "./authority";
import { raw, signJws, signJwsHs256 } from "./compact-jws";
import type { CredentialRole, SignerCredential } from "./credential";

const SALT = Buffer.from("record-signer request mac v1");
const KEY_BYTES = 32;

/** Derived keys, by role and both public keys: a handful of credentials per process. */
const derived = new Map<string, Buffer>();

function curvePublic(ed25519Public: Buffer): Buffer {
	const sodium = requireSodium();
	const out = Buffer.alloc(sodium.crypto_scalarmult_BYTES);
	sodium.crypto_sign_ed25519_pk_to_curve25519(out, ed25519Public);
	return out;
}

function macKey(
	role: CredentialRole,
	own: KeyObject,
	peerX: string,
	credentialX: string,
	authorityX: string,
): Buffer {
	const id = `${role}\n${credentialX}\n${authorityX}`;
	const known = derived.get(id);
	if (known) return known;
	const { secretKey } = raw(own);
	if (!secretKey) throw new Error("a request MAC key needs a private key");
	const sodium = requireSodium();
	const scalar = sodium.sodium_malloc(sodium.crypto_scalarmult_SCALARBYTES);
	const shared = sodium.sodium_malloc(sodium.crypto_scalarmult_BYTES);
	try {
		sodium.crypto_sign_ed25519_sk_to_curve25519(scalar, secretKey);
		sodium.crypto_scalarmult(shared, scalar, curvePublic(Buffer.from(peerX, "base64url")));
		const key = Buffer.from(hkdfSync("sha256", shared, SALT, `record-signer ${id}`, KEY_BYTES));
		derived.set(id, key);
		return key;
	} finally {
		sodium.sodium_memzero(scalar);
		sodium.sodium_memzero(shared);
		sodium.sodium_free(scalar);
		sodium.sodium_free(shared);
	}
}

/** The credential holder's side: its private key and the authority's public key `x`. */
export function credentialMacKey(
	role: CredentialRole,
	credential: KeyObject,
	authorityX: string,
): Buffer {
	return macKey(role, credential, authorityX, raw(credential).x, authorityX);
}

/** The keyring's side: the authority's private key and the enrolled public key `x`. */
export function keyringMacKey(
	role: CredentialRole,
	authority: KeyObject,
	credentialX: string,
): Buffer {
	return macKey(role, authority, credentialX, credentialX, raw(authority).x);
}

/**
 * A credential holder's request MAC key for the keyring it trusts, looked up as it is needed: the
 * keyring may publish its public key after this node started. Null while the node knows no
 * keyring key (it then signs its statements with Ed25519, as before).
 */
export class RequestMacKey {
	private readonly trust: KeyringTrust;

	constructor(
		private readonly role: CredentialRole,
		trust: TrustSettings,
	) {
		this.trust = new KeyringTrust(trust);
	}

	/** The request MAC key of `credential` (the one in use: it may be rotated, §6.1), or null. */
	current(credential: SignerCredential): Uint8Array | null {
		const anchor = this.trust.anchor();
		return anchor ? credentialMacKey(this.role, credential.privateKey, raw(anchor).x) : null;
	}
}

/**
 * A statement of a credential's holder for the keyring (a signer proof, a dispatch ticket): HS256
 * under its request MAC key when given, else EdDSA with its Ed25519 key.
 */
export function signForKeyring(
	credential: SignerCredential,
	typ: string,
	claims: object,
	macKey: Uint8Array | null,
): string {
	return macKey
		? signJwsHs256(macKey, { alg: "HS256", kid: credential.name, typ }, claims)
		: signJws(credential.privateKey, { alg: "EdDSA", kid: credential.name, typ }, claims);
}
