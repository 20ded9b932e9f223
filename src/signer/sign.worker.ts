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
	records: RecordPayload[];
	/** Epoch ms; the chunk is not started at or after it. */
	deadline: number;
}

export interface SignTaskResult {
	/** Detached JWS per record, in order; null when the deadline had passed. */
	jws: string[] | null;
	finishedAt: number;
}

export default async function sign(task: SignTask): Promise<SignTaskResult> {
	if (Date.now() >= task.deadline) return { jws: null, finishedAt: Date.now() };
	const jws = await signChunk(task.key, task.keyId, task.records);
	return { jws, finishedAt: Date.now() };
}
