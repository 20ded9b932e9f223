/** Record seeding, kept free of the broker so it tests alone. */
import crypto from "node:crypto";
import type { RecordPayload } from "../contract";
import type { RecordsStore } from "./store";

/** `rec-000001`...: zero-padded so that string order is numeric order. */
export function recordId(n: number, count: number): string {
	return `rec-${String(n).padStart(Math.max(6, String(count).length), "0")}`;
}

/** Random bytes in a record's payload (base64url: 43 characters). */
const PAYLOAD_BYTES = 32;

/**
 * `count` records with random payloads, in chunks sized for one bulk insert each. One call for
 * a chunk's random bytes: a call per record cost 3.5 µs, nearly all of seeding (35 s of a
 * 10-million-record store's 38).
 */
export function* makeRecords(count: number, chunkSize = 10_000): Generator<RecordPayload[]> {
	for (let start = 1; start <= count; start += chunkSize) {
		const size = Math.min(count + 1, start + chunkSize) - start;
		const random = crypto.randomBytes(size * PAYLOAD_BYTES);
		const chunk: RecordPayload[] = [];
		for (let i = 0; i < size; i++)
			chunk.push({
				id: recordId(start + i, count),
				data: random.toString("base64url", i * PAYLOAD_BYTES, (i + 1) * PAYLOAD_BYTES),
			});
		yield chunk;
	}
}

/** Seeds `count` records into an empty store; returns how many it wrote (0 when not empty). */
export async function seedIfEmpty(store: RecordsStore, count: number): Promise<number> {
	if (count <= 0 || (await store.recordCount()) > 0) return 0;
	for (const chunk of makeRecords(count)) await store.insertRecords(chunk);
	return count;
}
