/**
 * The signature format of DESIGN.md section 5: a detached compact JWS (RFC 7515 appendix F)
 * per record, `alg: "EdDSA"`, `kid` in the protected header, over the UTF-8 of
 * `JSON.stringify({ id, data })`.
 */
import { FlattenedSign, flattenedVerify, base64url, type CryptoKey, type JWK } from "jose";

export interface RecordPayload {
	id: string;
	data: string;
}

export interface SignedRecord {
	recordId: string;
	jws: string;
	signedAt: string;
}

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

/** Verifies a detached JWS against a public key; resolves false on any mismatch. */
export async function verifyRecord(detached: string, record: RecordPayload, publicKey: CryptoKey | JWK | Uint8Array): Promise<boolean> {
	const [protectedHeader, empty, signature] = detached.split(".");
	if (empty !== "" || !protectedHeader || !signature) return false;
	try {
		await flattenedVerify({ protected: protectedHeader, payload: base64url.encode(signingPayload(record)), signature }, publicKey as CryptoKey);
		return true;
	} catch {
		return false;
	}
}

export class LeaseDeadlineError extends Error {
	constructor(readonly signed: number, readonly total: number) {
		super(`Lease deadline reached after ${signed} of ${total} signatures; the batch is handed back unsigned`);
		this.name = "LeaseDeadlineError";
	}
}

/**
 * Signs every record with one key. WebCrypto runs the Ed25519 work on libuv's thread pool,
 * so launching a chunk at once keeps every core busy. No chunk starts at or after
 * `deadline()`, and a chunk that finishes past it is thrown away: a paused process must
 * not come back and use a lease the keyring may have reclaimed.
 */
export async function signRecords(key: CryptoKey, keyId: string, records: RecordPayload[], deadline: () => number, chunkSize = 512): Promise<SignedRecord[]> {
	const signed: SignedRecord[] = [];
	for (let start = 0; start < records.length; start += chunkSize) {
		if (Date.now() >= deadline()) throw new LeaseDeadlineError(signed.length, records.length);
		const chunk = records.slice(start, start + chunkSize);
		const jwss = await Promise.all(chunk.map(record => signRecord(key, keyId, record)));
		const finishedAt = Date.now();
		if (finishedAt >= deadline()) throw new LeaseDeadlineError(signed.length, records.length);
		const signedAt = new Date(finishedAt).toISOString();
		for (let i = 0; i < chunk.length; i++) signed.push({ recordId: chunk[i].id, jws: jwss[i], signedAt });
	}
	return signed;
}
