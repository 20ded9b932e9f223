/**
 * The RFC 6962 tree of src/tlog/merkle.ts against published vectors: the leaf inputs, node
 * hashes and roots of transparency-dev/merkle's testonly/constants.go (the Certificate
 * Transparency vectors), and the happy-path inclusion and consistency proofs of its
 * testdata/inclusion and testdata/consistency folders. Then every proof of every tree up to 40
 * leaves against RFC 6962's recursive definition, and tampered proofs refused. And the leaf
 * test vectors docs/design.md §8.4 publishes, against the code that writes the leaves.
 */
import fs from "node:fs";
import path from "node:path";
import {
	leaseEndLeaf,
	leaseGrantLeaf,
	signatureLeaf,
	signatureLeafHashes,
} from "../../src/tlog/leaves";
import {
	consistencyProof,
	EMPTY_ROOT,
	inclusionProof,
	leafHash,
	nodeHash,
	treeRoot,
	verifyConsistency,
	verifyInclusion,
	type NodeId,
} from "../../src/tlog/merkle";
import { mth } from "../support/tlog";

const hex = (h: string) => Buffer.from(h, "hex");
const b64 = (h: string) => Buffer.from(h, "base64");

/** transparency-dev/merkle testonly.LeafInputs(). */
const LEAVES = [
	"",
	"00",
	"10",
	"2021",
	"3031",
	"40414243",
	"5051525354555657",
	"606162636465666768696a6b6c6d6e6f",
].map(hex);
/** testonly.RootHashes(): the root of the first n leaves, n = 0..8. */
const ROOTS = [
	EMPTY_ROOT.toString("hex"),
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
	"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
	"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
	"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
	"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];
/** testonly.NodeHashes() level 0 (the leaf hashes) and level 1. */
const LEAF_HASHES = [
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
	"0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
	"07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
	"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
	"4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
	"b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
	"46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];
const LEVEL_1 = [
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
	"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
	"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
];

/** testdata/inclusion/{0..4}/happy-path.json. */
const INCLUSION = [
	{
		index: 0,
		size: 1,
		root: "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
		leaf: "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
		proof: [],
	},
	{
		index: 0,
		size: 8,
		root: "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
		leaf: "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
		proof: [
			"lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
			"Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
			"a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
		],
	},
	{
		index: 5,
		size: 8,
		root: "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
		leaf: "QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
		proof: [
			"vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
			"yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
			"037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
		],
	},
	{
		index: 2,
		size: 3,
		root: "rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
		leaf: "ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
		proof: ["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="],
	},
	{
		index: 1,
		size: 5,
		root: "Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
		leaf: "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
		proof: [
			"bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
			"Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
			"vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
		],
	},
];
/** testdata/consistency/{1..4}/happy-path.json. */
const CONSISTENCY = [
	{
		older: 1,
		newer: 8,
		proof: [
			"lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
			"Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
			"a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
		],
	},
	{
		older: 6,
		newer: 8,
		proof: [
			"DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
			"yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
			"037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
		],
	},
	{
		older: 2,
		newer: 5,
		proof: [
			"Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
			"vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
		],
	},
	{
		older: 6,
		newer: 7,
		proof: [
			"DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
			"sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
			"037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
		],
	},
];

/** Complete subtrees computed from the leaf hashes themselves: the tree a store keeps, held in memory. */
function readerOver(hashes: Buffer[]) {
	return (nodes: NodeId[]) =>
		nodes.map(({ level, index }) =>
			mth(hashes.slice(index * 2 ** level, (index + 1) * 2 ** level)),
		);
}

describe("the RFC 6962 tree (src/tlog/merkle.ts)", () => {
	const hashes = LEAVES.map((leaf) => leafHash(leaf));

	test("leaf hashes, level-1 node hashes and every root of the published vectors are reproduced", async () => {
		expect(hashes.map((h) => h.toString("hex"))).toEqual(LEAF_HASHES);
		expect(
			[0, 1, 2, 3].map((i) => nodeHash(hashes[2 * i], hashes[2 * i + 1]).toString("hex")),
		).toEqual(LEVEL_1);
		for (let n = 0; n <= 8; n++)
			expect((await treeRoot(n, readerOver(hashes))).toString("hex")).toBe(ROOTS[n]);
	});

	test("the published inclusion proofs are reproduced, and verify", async () => {
		for (const v of INCLUSION) {
			const proof = await inclusionProof(v.index, v.size, readerOver(hashes));
			expect(proof.map((p) => p.toString("base64"))).toEqual(v.proof);
			expect(hashes[v.index].toString("base64")).toBe(v.leaf);
			expect(
				verifyInclusion(b64(v.leaf), v.index, v.size, v.proof.map(b64), b64(v.root)),
			).toBe(true);
		}
	});

	test("the published consistency proofs are reproduced, and verify", async () => {
		for (const v of CONSISTENCY) {
			const proof = await consistencyProof(v.older, v.newer, readerOver(hashes));
			expect(proof.map((p) => p.toString("base64"))).toEqual(v.proof);
			expect(
				verifyConsistency(
					v.older,
					v.newer,
					v.proof.map(b64),
					hex(ROOTS[v.older]),
					hex(ROOTS[v.newer]),
				),
			).toBe(true);
		}
	});

	test("every inclusion and consistency proof of trees up to 40 leaves verifies, and a tampered one does not", async () => {
		const many = Array.from({ length: 40 }, (_, i) => leafHash(`leaf ${i}`));
		const read = readerOver(many);
		let checked = 0;
		for (let n = 1; n <= many.length; n++) {
			const root = mth(many.slice(0, n));
			expect((await treeRoot(n, read)).equals(root)).toBe(true);
			for (let i = 0; i < n; i++) {
				const proof = await inclusionProof(i, n, read);
				expect(verifyInclusion(many[i], i, n, proof, root)).toBe(true);
				expect(verifyInclusion(many[(i + 1) % n], i, n, proof, root)).toBe(n === 1);
				if (proof.length) {
					const bent = proof.map((p, j) => (j === 0 ? nodeHash(p, p) : p));
					expect(verifyInclusion(many[i], i, n, bent, root)).toBe(false);
				}
				checked++;
			}
			for (let m = 1; m <= n; m++) {
				const older = mth(many.slice(0, m));
				const proof = await consistencyProof(m, n, read);
				expect(verifyConsistency(m, n, proof, older, root)).toBe(true);
				if (m < n) {
					expect(verifyConsistency(m, n, proof, nodeHash(older, older), root)).toBe(
						false,
					);
					expect(verifyConsistency(m, n, proof.slice(1), older, root)).toBe(false);
				}
				checked++;
			}
		}
		expect(checked).toBe(2 * ((40 * 41) / 2));
	});
});

describe("the leaves of docs/design.md §8.4", () => {
	test("its test vectors are the leaves src/tlog/leaves.ts writes for their rows, and their RFC 6962 leaf hashes", () => {
		const design = fs.readFileSync(path.join(__dirname, "../../docs/design.md"), "utf8");
		const block = design.split("Test vectors (leaf, then its leaf hash in hex):")[1];
		const lines = block.split("```")[1].trim().split("\n");
		const vectors = Array.from({ length: lines.length / 2 }, (_, i) => ({
			leaf: lines[2 * i],
			hash: lines[2 * i + 1],
		}));
		const at = "2025-01-01T00:00:00.000Z";
		const written = [
			signatureLeaf({
				recordId: "rec-000001",
				keyId: "key-000",
				batchId: "run-1-b000001",
				leaseId: "lease-1",
				jws: "eyJhbGciOiJFZERTQSIsImtpZCI6ImtleS0wMDAifQ..c2ln",
				signedAt: at,
			}),
			leaseGrantLeaf({
				leaseId: "lease-1",
				keyId: "key-000",
				holder: "signer-1",
				grantSeq: 1,
				grantedAt: at,
			}),
			leaseEndLeaf({
				leaseId: "lease-1",
				keyId: "key-000",
				endSeq: 2,
				endedAt: "2025-01-01T00:00:01.000Z",
				end: "released",
				expiresAt: "2025-01-01T00:00:30.000Z",
			}),
		];
		expect(vectors.map((v) => v.leaf)).toEqual(written);
		for (const { leaf, hash } of vectors)
			expect(leafHash(Buffer.from(leaf, "utf8")).toString("hex")).toBe(hash);
	});

	test("the signing threads' leaf hashes, written in parts, are those of signatureLeaf, whatever the ids hold", () => {
		const under = { keyId: 'key-"0"', batchId: "run-1-b\\1", leaseId: "lease-\u00e9\u2028" };
		const rows: Array<[string, string, string]> = [
			["rec-000001", "eyJhbGciOiJFZERTQSJ9..c2ln", "2025-01-01T00:00:00.000Z"],
			['rec-"quoted"', "a.b.c", "2025-01-01T00:00:00.001Z"],
			["rec-\n\t\u0000-\ud83d\ude00-\ud800", "x..y", "2025-01-01T00:00:00.002Z"],
		];
		const hashes = signatureLeafHashes(rows.length, under, (i) => rows[i]);
		rows.forEach(([recordId, jws, signedAt], i) =>
			expect(hashes.subarray(i * 32, (i + 1) * 32)).toEqual(
				leafHash(signatureLeaf({ ...under, recordId, jws, signedAt })),
			),
		);
	});
});
