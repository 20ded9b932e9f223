/**
 * Compact JWS (EdDSA over Ed25519) with node:crypto directly: the signed statements that
 * cross the bus (signer proofs, dispatch tickets, lease tokens) are made and checked on every
 * batch, so they skip a JOSE library's generality. Any JOSE library verifies them.
 */
import { sign, verify, type KeyObject } from "node:crypto";

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
	/** `<header>.<payload>`: the bytes the signature covers. */
	signingInput: Buffer;
	signature: Buffer;
}

const b64 = (value: string | Buffer) => Buffer.from(value).toString("base64url");

export function signJws(privateKey: KeyObject, header: JwsHeader, claims: object): string {
	const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
	return `${input}.${sign(null, Buffer.from(input), privateKey).toString("base64url")}`;
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
		return { header, claims, signingInput: Buffer.from(`${parts[0]}.${parts[1]}`), signature: Buffer.from(parts[2], "base64url") };
	} catch {
		return null;
	}
}

export function verifyJws(parsed: ParsedJws<object>, publicKey: KeyObject): boolean {
	return parsed.header.alg === "EdDSA" && verify(null, parsed.signingInput, publicKey, parsed.signature);
}
