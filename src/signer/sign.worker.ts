/**
 * A signing thread of the signer's pool. Written in erasable TypeScript with an explicit
 * `.ts` import so Node 22 can load it straight from the sources under jest, and from dist/
 * as JavaScript otherwise. Nothing but signing happens here.
 */
import { protectedHeader, signDetached, type SigningKey } from "./jws.ts";

export interface SignTask {
	/** The lease's Ed25519 private key (a non-extractable CryptoKey crosses to this thread as it is). */
	key: SigningKey;
	keyId: string;
	/** JSON of the chunk's `[id, data]` pairs: one string clones far faster than many small objects. */
	records: string;
	/** Epoch ms; the chunk is not started at or after it. */
	deadline: number;
}

export interface SignTaskResult {
	/** Detached JWS per record, in order, joined by newlines; null when the deadline had passed. */
	jws: string | null;
	finishedAt: number;
}

/** One header per key id: every signature of a key shares it. */
const headers = new Map<string, string>();

export default function sign(task: SignTask): SignTaskResult {
	if (Date.now() >= task.deadline) return { jws: null, finishedAt: Date.now() };
	let header = headers.get(task.keyId);
	if (!header) headers.set(task.keyId, (header = protectedHeader(task.keyId)));
	const records = JSON.parse(task.records) as Array<[string, string]>;
	const jws = new Array<string>(records.length);
	for (let i = 0; i < records.length; i++) jws[i] = signDetached(task.key, header, { id: records[i][0], data: records[i][1] });
	return { jws: jws.join("\n"), finishedAt: Date.now() };
}
