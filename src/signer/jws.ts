/**
 * The signature format of DESIGN.md section 5: a detached compact JWS (RFC 7515 appendix F)
 * per record, `alg: "EdDSA"`, `kid` in the protected header, over the UTF-8 of
 * `JSON.stringify({ id, data })`.
 */
import { FlattenedSign, type CryptoKey } from "jose";
import type { RecordPayload } from "../contract";

export type { RecordPayload };

const encoder = new TextEncoder();

export function signingPayload(record: RecordPayload): Uint8Array {
	return encoder.encode(JSON.stringify({ id: record.id, data: record.data }));
}

export function signRecord(key: CryptoKey, keyId: string, record: RecordPayload): Promise<string> {
	return new FlattenedSign(signingPayload(record))
		.setProtectedHeader({ alg: "EdDSA", kid: keyId })
		.sign(key)
		.then(jws => `${jws.protected}..${jws.signature}`);
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

/** Signs a chunk at once: WebCrypto runs the Ed25519 work on libuv's thread pool. */
export function signChunk(key: CryptoKey, keyId: string, records: RecordPayload[]): Promise<string[]> {
	return Promise.all(records.map(record => signRecord(key, keyId, record)));
}
