/**
 * The benchmark's jose floor: the same detached JWS as src/signer/jws.ts, made with jose's
 * FlattenedSign (WebCrypto), one chunk at a time. Only `npm run bench` uses it, to show what
 * the signing path gained over jose (first node:crypto, now libsodium); the system never signs with it.
 */
import { FlattenedSign, importJWK, type CryptoKey, type JWK } from "jose";

export interface JoseTask {
	jwk: JWK;
	keyId: string;
	/** JSON of `[id, data]` pairs. */
	records: string;
}

const keys = new Map<string, Promise<CryptoKey>>();

export default async function sign(task: JoseTask): Promise<number> {
	let key = keys.get(task.keyId);
	if (!key) keys.set(task.keyId, (key = importJWK(task.jwk, "EdDSA") as Promise<CryptoKey>));
	const privateKey = await key;
	const records = JSON.parse(task.records) as Array<[string, string]>;
	const encoder = new TextEncoder();
	const jws = await Promise.all(
		records.map(([id, data]) =>
			new FlattenedSign(encoder.encode(JSON.stringify({ id, data })))
				.setProtectedHeader({ alg: "EdDSA", kid: task.keyId })
				.sign(privateKey)
				.then((s) => `${s.protected}..${s.signature}`),
		),
	);
	return jws.length;
}
