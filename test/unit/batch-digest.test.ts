/**
 * The digests a dispatch ticket and a lease token bind a batch by (src/identity/batch-digest.ts)
 * cross the bus between nodes of different versions: their bytes are fixed. Each is SHA-256 over
 * `<length>:<text>` per field, in UTF-16 code units (UTF-16LE), concatenated. The vectors were
 * made by the version before the encoder wrote into a buffer; the definition is computed here
 * from the concatenated string as well, over ids and data of every kind a record may hold. The
 * store proof's group digests (src/identity/signature-groups.ts) are checked the same way.
 */
import { createHash } from "node:crypto";
import {
	idChunkDigests,
	idsDigest,
	recordsDigest,
	sealRecords,
	signaturesDigestV2,
} from "../../src/identity/batch-digest";
import { SIGNATURE_GROUP, signatureGroupDigests } from "../../src/identity/signature-groups";

const byDefinition = (fields: string[]) =>
	createHash("sha256")
		.update(fields.map((text) => `${text.length}:${text}`).join(""), "utf16le")
		.digest("base64url");

const records = [
	{ id: "rec-000001", data: '{"pay":10}' },
	{ id: "é-ü", data: "x".repeat(123) },
	{ id: "a\ud800b", data: "😀 ok" },
];

describe("batch digests", () => {
	test("the records' and ids' digests are the vectors of the earlier encoder", () => {
		expect(recordsDigest(records)).toBe("LgzAeeXhK3SD7E63P7HykaB_DbjNgzlT4qJsaZk2a3A");
		expect(idsDigest(records.map((r) => r.id))).toBe(
			"fLmtS2l-g0CBaPSXUcgpWvGAuHJrZq0CQA1l_MuAcws",
		);
	});

	test("they follow the definition for empty, long, non-ASCII, astral and lone-surrogate text", () => {
		const odd = [
			{ id: "", data: "" },
			{ id: "k".repeat(9), data: "d".repeat(10) },
			{ id: "\udc00", data: "y".repeat(99_999) },
			{ id: "日本", data: "🔑".repeat(1_000) },
		];
		for (const set of [records, odd, [...records, ...odd]]) {
			expect(recordsDigest(set)).toBe(byDefinition(set.flatMap((r) => [r.id, r.data])));
			expect(idsDigest(set.map((r) => r.id))).toBe(byDefinition(set.map((r) => r.id)));
		}
		// A batch after a large one: the buffer grown for the large one starts over.
		expect(recordsDigest(records)).toBe("LgzAeeXhK3SD7E63P7HykaB_DbjNgzlT4qJsaZk2a3A");
	});

	test("a field's length and text are not confused with the next field's", () => {
		expect(recordsDigest([{ id: "ab", data: "c" }])).not.toBe(
			recordsDigest([{ id: "a", data: "bc" }]),
		);
		expect(idsDigest(["1:a"])).not.toBe(idsDigest(["1", "a"]));
	});

	test("a sealed array's digest is remembered; id chunks are digested 2,000 ids at a time", () => {
		const batch = records.map((r) => ({ ...r }));
		const digest = sealRecords(batch);
		expect(digest).toBe(byDefinition(batch.flatMap((r) => [r.id, r.data])));
		expect(recordsDigest(batch)).toBe(digest);
		const ids = Array.from({ length: 4_500 }, (_, i) => `rec-${i}`);
		expect(idChunkDigests(ids)).toEqual([
			byDefinition(ids.slice(0, 2_000)),
			byDefinition(ids.slice(2_000, 4_000)),
			byDefinition(ids.slice(4_000)),
		]);
	});

	test("a piece's group digests are SHA-256 over each group's fields in UTF-8, as version 2 defines them", () => {
		const signatures = Array.from({ length: 2 * SIGNATURE_GROUP + 3 }, (_, i) => ({
			recordId: i % 5 ? `rec-${i}` : `ré-😀-${i}`,
			jws: `eyJhbGciOiJFZERTQSJ9..sig-${i}`,
			signedAt: "2026-12-07T23:03:18.000Z",
		}));
		const groups = signatureGroupDigests(signatures.length, (i) => [
			signatures[i].recordId,
			signatures[i].jws,
			signatures[i].signedAt,
		]);
		const expected: Buffer[] = [];
		for (let g = 0; g < signatures.length; g += SIGNATURE_GROUP)
			expected.push(
				createHash("sha256")
					.update(
						signatures
							.slice(g, g + SIGNATURE_GROUP)
							.flatMap((s) => [s.recordId, s.jws, s.signedAt])
							.map((text) => `${text.length}:${text}`)
							.join(""),
						"utf8",
					)
					.digest(),
			);
		expect(groups).toEqual(Buffer.concat(expected));
		expect(signaturesDigestV2(signatures)).toBe(
			createHash("sha256").update(Buffer.concat(expected)).digest("base64url"),
		);
	});
});
