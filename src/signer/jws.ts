/**
 * The signature format of docs/design.md §8.1: a detached compact JWS (RFC 7515 appendix F)
 * per record, `alg: "EdDSA"`, `kid` in the protected header, over the UTF-8 of
 * `JSON.stringify({ id, data })`. Signed with libsodium's Ed25519 (`crypto_sign_detached`, in
 * the signing threads: src/signer/sign.worker.ts): the protected header is encoded once per
 * key, and each record costs one JSON, one base64url and one sign. Ed25519 signatures are
 * deterministic, so node:crypto (OpenSSL), which signed before, makes the same bytes for the
 * same key and record; it stays here for the benchmark's node:crypto floor and the tests.
 */
import crypto, { type KeyObject, type webcrypto } from "node:crypto";
import type { RecordPayload } from "../contract";
import { SIGNATURE_BYTES, type Sodium } from "../sodium.ts";

export type { RecordPayload };

/** base64url of the protected header `{"alg":"EdDSA","kid":<keyId>}`. */
export function protectedHeader(keyId: string): string {
	return Buffer.from(JSON.stringify({ alg: "EdDSA", kid: keyId }), "utf8").toString("base64url");
}

/** The bytes a signature covers: `<protected>.<base64url(UTF-8 of {"id","data"})>`. */
export function signingInput(header: string, record: RecordPayload): Buffer {
	const payload = Buffer.from(
		JSON.stringify({ id: record.id, data: record.data }),
		"utf8",
	).toString("base64url");
	return Buffer.from(`${header}.${payload}`, "ascii");
}

/**
 * Signs records with one libsodium secret key (64 bytes: seed + public key), each as the
 * detached compact JWS `<protected>..<signature>`. The key stays the caller's: this neither
 * copies nor keeps it beyond the signer's use, and one signature buffer serves every record.
 */
export function sodiumSigner(
	sodium: Sodium,
	secretKey: Uint8Array,
): (header: string, record: RecordPayload) => string {
	const signature = Buffer.alloc(SIGNATURE_BYTES);
	return (header, record) => {
		sodium.crypto_sign_detached(signature, signingInput(header, record), secretKey as Buffer);
		return `${header}..${signature.toString("base64url")}`;
	};
}

/** A private Ed25519 key node:crypto signs with. */
export type NodeCryptoKey = KeyObject | webcrypto.CryptoKey;

/** The same detached compact JWS with node:crypto (OpenSSL), as the signer made it before libsodium. */
export function nodeCryptoSignDetached(
	key: NodeCryptoKey,
	header: string,
	record: RecordPayload,
): string {
	// node:crypto signs with a CryptoKey as it does with a KeyObject (@types/node does not say so).
	return `${header}..${crypto.sign(null, signingInput(header, record), key as KeyObject).toString("base64url")}`;
}

export class LeaseDeadlineError extends Error {
	readonly signed: number;
	readonly total: number;
	constructor(signed: number, total: number) {
		super(
			`Lease deadline reached after ${signed} of ${total} signatures; the batch is handed back unsigned`,
		);
		this.name = "LeaseDeadlineError";
		this.signed = signed;
		this.total = total;
	}
}
