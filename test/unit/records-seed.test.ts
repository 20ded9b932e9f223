/**
 * Seeding (src/records/records.ts): records in id order, in chunks of one bulk insert each, each
 * with its own 32 random bytes as base64url, the chunk's bytes drawn in one call.
 */
import { makeRecords, recordId } from "../../src/records/records";

describe("seeded records", () => {
	test("come in chunks, numbered in order, each with a payload of its own", () => {
		const chunks = [...makeRecords(25, 10)];
		expect(chunks.map((chunk) => chunk.length)).toEqual([10, 10, 5]);
		const records = chunks.flat();
		expect(records.map((r) => r.id)).toEqual(
			Array.from({ length: 25 }, (_, i) => recordId(i + 1, 25)),
		);
		expect(records[0].id).toBe("rec-000001");
		for (const { data } of records) {
			expect(data).toMatch(/^[A-Za-z0-9_-]{43}$/);
			expect(Buffer.from(data, "base64url")).toHaveLength(32);
		}
		expect(new Set(records.map((r) => r.data)).size).toBe(25);
	});

	test("ids are zero-padded to the count's width, so string order is numeric order", () => {
		expect(recordId(7, 10_000_000)).toBe("rec-00000007");
		expect(recordId(10_000_000, 10_000_000)).toBe("rec-10000000");
		expect(recordId(7, 100)).toBe("rec-000007");
		expect(recordId(9, 10_000_000) < recordId(10, 10_000_000)).toBe(true);
	});
});
