/**
 * Compact JWS (EdDSA over Ed25519) with node:crypto directly: the signed statements that
 * cross the bus (signer proofs, dispatch tickets, lease tokens) are made and checked on every
 * batch, so they skip a JOSE library's generality. Any JOSE library verifies them.
 *
 * A statement signed in this process is known to verify when it is checked in this process
 * (the services of `npm start` share one): the last few thousand are remembered, so that
 * check costs a lookup instead of an Ed25519 verification. Only this module's own signing
 * puts an entry there, with the public key it verifies under.
 */
import { createPublicKey, sign, verify, type KeyObject } from "node:crypto";

export interface JwsHeader {
	alg: "EdDSA";
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

/** Signatures made here: `<signature>\n<message>` -> the public key's DER (as base64) it verifies under. */
const signedHere = new Map<string, string>();
const SIGNED_HERE_MAX = 8_192;
const publicDer = new WeakMap<KeyObject, string>();

/** A key's public half as one string, computed once per KeyObject. */
function publicId(key: KeyObject): string {
	let id = publicDer.get(key);
	if (id === undefined) {
		id = (key.type === "private" ? createPublicKey(key) : key).export({ format: "der", type: "spki" }).toString("base64");
		publicDer.set(key, id);
	}
	return id;
}

/** An Ed25519 signature over `message`, remembered as made here. */
export function signDetached(privateKey: KeyObject, message: string): string {
	const signature = sign(null, Buffer.from(message), privateKey).toString("base64url");
	if (signedHere.size >= SIGNED_HERE_MAX) signedHere.delete(signedHere.keys().next().value!);
	signedHere.set(`${signature}\n${message}`, publicId(privateKey));
	return signature;
}

/** Whether `signature` signs `message` under `publicKey`: a lookup when it was made in this process. */
export function verifyDetached(publicKey: KeyObject, message: string, signature: unknown): boolean {
	if (typeof signature !== "string") return false;
	const here = signedHere.get(`${signature}\n${message}`);
	if (here !== undefined) return here === publicId(publicKey);
	return verify(null, Buffer.from(message), publicKey, Buffer.from(signature, "base64url"));
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
		if (!header || typeof header !== "object" || !claims || typeof claims !== "object") return null;
		return { header, claims, signingInput: `${parts[0]}.${parts[1]}`, signature: parts[2] };
	} catch {
		return null;
	}
}

export function verifyJws(parsed: ParsedJws<object>, publicKey: KeyObject): boolean {
	return parsed.header.alg === "EdDSA" && verifyDetached(publicKey, parsed.signingInput, parsed.signature);
}
