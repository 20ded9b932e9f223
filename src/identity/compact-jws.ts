/**
 * Compact JWS (EdDSA over Ed25519) with node:crypto directly: the signed statements that
 * cross the bus (signer proofs, dispatch tickets, lease tokens) are made and checked on every
 * batch, so they skip a JOSE library's generality. Any JOSE library verifies them.
 *
 * Signing and verifying go through libsodium (src/sodium.ts), twice as fast as
 * node:crypto here: a key's raw bytes are taken from its KeyObject once and kept beside it.
 *
 * A statement signed in this process is known to verify when it is checked in this process
 * (the services of `npm start` share one): the last few thousand are remembered, so that
 * check costs a lookup instead of an Ed25519 verification. Only this module's own signing
 * puts an entry there, with the public key it verifies under.
 */
import { createHmac, timingSafeEqual, type KeyObject } from "node:crypto";
import type { JWK } from "jose";
import { requireSodium } from "../sodium";

export interface JwsHeader {
	/** EdDSA (Ed25519), or HS256 under a request MAC key (request-mac.ts). */
	alg: "EdDSA" | "HS256";
	/** Who signed it: an enrolled credential's name, or the keyring authority's key id. */
	kid: string;
	/** What statement it is: a proof, a ticket or a token is never taken for another. */
	typ: string;
}

export interface ParsedJws<C> {
	header: Partial<JwsHeader>;
	claims: C;
	/** `<header>.<payload>`: what the signature covers. */
	signingInput: string;
	/** base64url. */
	signature: string;
}

const b64 = (value: string | Buffer) => Buffer.from(value).toString("base64url");

/** Signatures made here: `<signature>\n<message>` -> the public key's `x` it verifies under. */
const signedHere = new Map<string, string>();
const SIGNED_HERE_MAX = 8_192;

/** A key's raw Ed25519 bytes as libsodium takes them: the 64-byte secret (seed and public key) of a private key, the 32-byte public key. */
export interface RawKey {
	x: string;
	publicKey: Buffer;
	secretKey: Buffer | null;
}
const rawKeys = new WeakMap<KeyObject, RawKey>();

/** The raw bytes of an Ed25519 KeyObject, read once (long-lived keys: credentials, the authority, enrolled keys). */
export function raw(key: KeyObject): RawKey {
	let found = rawKeys.get(key);
	if (!found) {
		const jwk = key.export({ format: "jwk" }) as JWK;
		const publicKey = Buffer.from(jwk.x!, "base64url");
		found = {
			x: jwk.x!,
			publicKey,
			secretKey: jwk.d ? Buffer.concat([Buffer.from(jwk.d, "base64url"), publicKey]) : null,
		};
		rawKeys.set(key, found);
	}
	return found;
}

/** An Ed25519 signature over `message`, remembered as made here. */
export function signDetached(privateKey: KeyObject, message: string): string {
	const { x, secretKey } = raw(privateKey);
	if (!secretKey) throw new Error("signDetached needs a private key");
	const sodium = requireSodium();
	const signature = Buffer.alloc(sodium.crypto_sign_BYTES);
	sodium.crypto_sign_detached(signature, Buffer.from(message), secretKey);
	const text = signature.toString("base64url");
	if (signedHere.size >= SIGNED_HERE_MAX) signedHere.delete(signedHere.keys().next().value!);
	signedHere.set(`${text}\n${message}`, x);
	return text;
}

/** Whether `signature` signs `message` under `publicKey`: a lookup when it was made in this process. */
export function verifyDetached(publicKey: KeyObject, message: string, signature: unknown): boolean {
	if (typeof signature !== "string") return false;
	const key = raw(publicKey);
	const here = signedHere.get(`${signature}\n${message}`);
	if (here !== undefined) return here === key.x;
	const bytes = Buffer.from(signature, "base64url");
	const sodium = requireSodium();
	return (
		bytes.length === sodium.crypto_sign_BYTES &&
		sodium.crypto_sign_verify_detached(bytes, Buffer.from(message), key.publicKey)
	);
}

export function signJws(privateKey: KeyObject, header: JwsHeader, claims: object): string {
	const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
	return `${input}.${signDetached(privateKey, input)}`;
}

/** The parts of a compact JWS, not yet verified; null when it is not one. */
export function parseJws<C extends object>(jws: unknown): ParsedJws<C> | null {
	if (typeof jws !== "string") return null;
	const parts = jws.split(".");
	if (parts.length !== 3) return null;
	try {
		const header = JSON.parse(Buffer.from(parts[0], "base64url").toString("utf8"));
		const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
		if (!header || typeof header !== "object" || !claims || typeof claims !== "object")
			return null;
		return { header, claims, signingInput: `${parts[0]}.${parts[1]}`, signature: parts[2] };
	} catch {
		return null;
	}
}

export function verifyJws(parsed: ParsedJws<object>, publicKey: KeyObject): boolean {
	return (
		parsed.header.alg === "EdDSA" &&
		verifyDetached(publicKey, parsed.signingInput, parsed.signature)
	);
}

/** HMAC-SHA256 of a JWS signing input, base64url. */
const hs256 = (key: Uint8Array, input: string) =>
	createHmac("sha256", key).update(input).digest("base64url");

/** A compact JWS with alg HS256 under `key` (a request MAC key: request-mac.ts). */
export function signJwsHs256(key: Uint8Array, header: JwsHeader, claims: object): string {
	const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
	return `${input}.${hs256(key, input)}`;
}

/** Whether `parsed` is an HS256 JWS under `key`, compared in constant time. */
export function verifyJwsHs256(parsed: ParsedJws<object>, key: Uint8Array): boolean {
	if (parsed.header.alg !== "HS256") return false;
	const expected = Buffer.from(hs256(key, parsed.signingInput), "base64url");
	const given = Buffer.from(parsed.signature, "base64url");
	return given.length === expected.length && timingSafeEqual(given, expected);
}
