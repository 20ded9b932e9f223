/**
 * A signing thread of the signer's pool. Written in erasable TypeScript with an explicit
 * `.ts` import so Node 22 can load it straight from the sources under jest, and from dist/
 * as JavaScript otherwise.
 */
import type { CryptoKey } from "jose";
import { signChunk, type RecordPayload } from "./jws.ts";

export interface SignTask {
	key: CryptoKey;
	keyId: string;
	/** JSON of the chunk's records: one string clones far faster than many small objects. */
	records: string;
	/** Epoch ms; the chunk is not started at or after it. */
	deadline: number;
}

export interface SignTaskResult {
	/** Detached JWS per record, in order, joined by newlines; null when the deadline had passed. */
	jws: string | null;
	finishedAt: number;
}

export default async function sign(task: SignTask): Promise<SignTaskResult> {
	if (Date.now() >= task.deadline) return { jws: null, finishedAt: Date.now() };
	const jws = await signChunk(task.key, task.keyId, JSON.parse(task.records) as RecordPayload[]);
	return { jws: jws.join("\n"), finishedAt: Date.now() };
}
