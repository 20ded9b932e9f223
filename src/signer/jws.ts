/**
 * The signature format of docs/design.md §8.1: a detached compact JWS (RFC 7515 appendix F)
 * per record, `alg: "EdDSA"`, `kid` in the protected header, over the UTF-8 of
 * `JSON.stringify({ id, data })`. Signed with node:crypto's Ed25519 (OpenSSL): the protected
 * header is encoded once per key, and each record costs one JSON, one base64url and one sign.
 */
import crypto, { type KeyObject, type webcrypto } from "node:crypto";
import type { RecordPayload } from "../contract";

export type { RecordPayload };

/** base64url of the protected header `{"alg":"EdDSA","kid":<keyId>}`. */
export function protectedHeader(keyId: string): string {
	return Buffer.from(JSON.stringify({ alg: "EdDSA", kid: keyId }), "utf8").toString("base64url");
}

/** The bytes a signature covers: `<protected>.<base64url(UTF-8 of {"id","data"})>`. */
export function signingInput(header: string, record: RecordPayload): Buffer {
	const payload = Buffer.from(JSON.stringify({ id: record.id, data: record.data }), "utf8").toString("base64url");
	return Buffer.from(`${header}.${payload}`, "ascii");
}

/** A private Ed25519 key node:crypto signs with (a lease's key is a non-extractable CryptoKey). */
export type SigningKey = KeyObject | webcrypto.CryptoKey;

/** The detached compact JWS of one record: `<protected>..<signature>`. */
export function signDetached(key: SigningKey, header: string, record: RecordPayload): string {
	// node:crypto signs with a CryptoKey as it does with a KeyObject (@types/node does not say so).
	return `${header}..${crypto.sign(null, signingInput(header, record), key as KeyObject).toString("base64url")}`;
}

export class LeaseDeadlineError extends Error {
	readonly signed: number;
	readonly total: number;
	constructor(signed: number, total: number) {
		super(`Lease deadline reached after ${signed} of ${total} signatures; the batch is handed back unsigned`);
		this.name = "LeaseDeadlineError";
		this.signed = signed;
		this.total = total;
	}
}
