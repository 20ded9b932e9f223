/** Record seeding, kept free of the broker so it tests alone. */
import crypto from "node:crypto";
import type { RecordPayload } from "../contract";
import type { RecordsStore } from "./store";

/** `rec-000001`...: zero-padded so that string order is numeric order. */
export function recordId(n: number, count: number): string {
	return `rec-${String(n).padStart(Math.max(6, String(count).length), "0")}`;
}

/** `count` records with random payloads, in chunks sized for one bulk insert each. */
export function* makeRecords(count: number, chunkSize = 10_000): Generator<RecordPayload[]> {
	for (let start = 1; start <= count; start += chunkSize) {
		const chunk: RecordPayload[] = [];
		for (let n = start; n < Math.min(count + 1, start + chunkSize); n++)
			chunk.push({
				id: recordId(n, count),
				data: crypto.randomBytes(32).toString("base64url"),
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
