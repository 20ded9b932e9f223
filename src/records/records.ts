/** Record seeding and unsigned-id paging, kept free of the broker so they test alone. */
import crypto from "node:crypto";
import type { RecordDoc } from "../contract";

/** `rec-000001`...: zero-padded so that string order is numeric order. */
export function recordId(n: number, count: number): string {
	return `rec-${String(n).padStart(Math.max(6, String(count).length), "0")}`;
}

/** `count` records with random payloads, in chunks sized for one bulk insert each. */
export function* makeRecords(count: number, chunkSize = 10_000): Generator<RecordDoc[]> {
	for (let start = 1; start <= count; start += chunkSize) {
		const chunk: RecordDoc[] = [];
		for (let n = start; n < Math.min(count + 1, start + chunkSize); n++)
			chunk.push({ _id: recordId(n, count), data: crypto.randomBytes(32).toString("base64url") });
		yield chunk;
	}
}

/** Index of the first id strictly greater than `after` in the ascending `ids`. */
function firstAfter(ids: string[], after: string | undefined): number {
	if (after === undefined) return 0;
	let lo = 0;
	let hi = ids.length;
	while (lo < hi) {
		const mid = (lo + hi) >>> 1;
		if (ids[mid] <= after) lo = mid + 1;
		else hi = mid;
	}
	return lo;
}

/**
 * The next `limit` ids after `after` that `signedAmong` does not report as signed.
 * Reads candidates a chunk at a time so a mostly-signed store is still paged quickly.
 */
export async function nextUnsigned(ids: string[], after: string | undefined, limit: number, signedAmong: (chunk: string[]) => Promise<string[]>): Promise<string[]> {
	const result: string[] = [];
	let at = firstAfter(ids, after);
	const chunkSize = limit;
	while (result.length < limit && at < ids.length) {
		const chunk = ids.slice(at, at + chunkSize);
		at += chunk.length;
		const signed = new Set(await signedAmong(chunk));
		for (const id of chunk) {
			if (signed.has(id)) continue;
			result.push(id);
			if (result.length === limit) break;
		}
	}
	return result;
}
