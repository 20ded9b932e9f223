/**
 * The transparency logs through the gateway (docs/api.md, docs/design.md §8.4), on a real
 * embedded system over HTTP: the verifier keys, the latest checkpoints as signed notes, a
 * record's inclusion proof and consistency proofs, each checked here the way a third party
 * would, with nothing but the answers and the RFC 9162 verification; and every bad input a 4xx
 * naming the field.
 */
import { request, startApiSystem, waitFor, type ApiSystem } from "../support/http";
import { verifyProof } from "../../src/audit/verify-record";
import { openCheckpoint } from "../../src/tlog/checkpoint";
import { signatureLeaf } from "../../src/tlog/leaves";
import { leafHash, verifyConsistency, verifyInclusion } from "../../src/tlog/merkle";
import { parseVerifierKey } from "../../src/tlog/note";
import { mth } from "../support/tlog";

const RECORDS = 120;

const b64 = (hashes: string[]) => hashes.map((hash) => Buffer.from(hash, "base64"));

describe("the transparency logs through the gateway", () => {
	let system: ApiSystem;
	let recordIds: string[];
	const get = (path: string) => request(system.baseUrl, "GET", path);

	beforeAll(async () => {
		system = await startApiSystem({ records: RECORDS, keys: 3, batchSize: 25 });
		const page = await system.broker.call<{ docs: Array<{ _id: string }> }, object>(
			"records.page",
			{ collection: "records", limit: RECORDS },
		);
		recordIds = page.docs.map((doc) => doc._id);
	});
	afterAll(() => system?.stop());

	/** The verifier keys from GET /api/logs, parsed as a client would. */
	const verifiers = async () => {
		const logs = await get("/api/logs");
		expect(logs.status).toBe(200);
		return Object.fromEntries(
			(logs.body.logs as Array<{ log: string; verifierKey: string }>).map((l) => [
				l.log,
				parseVerifierKey(l.verifierKey),
			]),
		);
	};

	test("before any signature: an unsigned record has no proof (404 SIGNATURE_NOT_FOUND)", async () => {
		expect(await get(`/api/records/${recordIds[0]}/proof`)).toMatchObject({
			status: 404,
			body: { type: "SIGNATURE_NOT_FOUND", data: { id: recordIds[0] } },
		});
	});

	describe("after a run", () => {
		let checkpointSize: number;
		beforeAll(async () => {
			const completion = system.nextCompletion();
			await system.broker.call("batcher.start", {});
			expect((await completion).status).toBe("completed");
			// A checkpoint is published at the run's end: wait until it covers every signature.
			checkpointSize = await waitFor("a checkpoint of every signature", async () => {
				const { body } = await get("/api/logs");
				const size = body.logs?.find((l: { log: string }) => l.log === "signatures")?.size;
				return size === RECORDS && size;
			});
		});

		test("GET /api/logs names both logs with their verifier keys and latest sizes", async () => {
			const { body } = await get("/api/logs");
			expect(body.logs.map((l: { log: string }) => l.log)).toEqual(["signatures", "leases"]);
			expect(body.logs[0]).toMatchObject({
				origin: "record-signer/signatures",
				size: RECORDS,
				links: { checkpoint: "/api/logs/signatures/checkpoint" },
			});
			expect(body.logs[1].origin).toBe("record-signer/leases");
			const keys = await verifiers();
			expect(keys.signatures.name).toBe("record-signer/signatures");
			expect(keys.leases.name).toBe("record-signer/leases");
		});

		test("GET /api/logs/:log/checkpoint is the signed note, as text, opening with the log's key", async () => {
			const keys = await verifiers();
			const response = await fetch(`${system.baseUrl}/api/logs/signatures/checkpoint`);
			expect(response.status).toBe(200);
			expect(response.headers.get("content-type")).toMatch(/^text\/plain/);
			const note = await response.text();
			expect(note).toMatch(/^record-signer\/signatures\n120\n[A-Za-z0-9+/]+=*\n\n\u2014 /);
			expect(openCheckpoint(note, keys.signatures).size).toBe(checkpointSize);
			// A note does not open with the other log's key.
			expect(() => openCheckpoint(note, keys.leases)).toThrow();

			const leaseDocs = await system.broker.call<{ docs: unknown[] }, object>(
				"keyring.page",
				{ collection: "leases", limit: 1000 },
			);
			// Every lease was granted and ended: two leaves each, checkpointed at the run's end.
			const expected = 2 * leaseDocs.docs.length;
			const leases = await waitFor("the lease log's checkpoint of every end", async () => {
				const answer = await fetch(`${system.baseUrl}/api/logs/leases/checkpoint`);
				const text = await answer.text();
				return answer.status === 200 && text.split("\n")[1] === String(expected) && text;
			});
			expect(openCheckpoint(leases, keys.leases).size).toBe(expected);
			expect(() => openCheckpoint(leases, keys.signatures)).toThrow();
		});

		test("every record's proof verifies against the checkpoint, whose root is the MTH of the leaves in log order", async () => {
			const keys = await verifiers();
			const leaves: Buffer[] = new Array(RECORDS);
			for (const id of recordIds) {
				const proof = await get(`/api/records/${id}/proof`);
				expect(proof.status).toBe(200);
				const record = await get(`/api/records/${id}`);
				expect(proof.body).toMatchObject({
					recordId: id,
					origin: "record-signer/signatures",
					treeSize: RECORDS,
					leaf: signatureLeaf({ recordId: id, ...record.body.signature }),
				});
				const checkpoint = openCheckpoint(proof.body.checkpoint, keys.signatures);
				const leaf = leafHash(proof.body.leaf);
				expect(
					verifyInclusion(
						leaf,
						proof.body.logIndex,
						checkpoint.size,
						b64(proof.body.proof),
						checkpoint.root,
					),
				).toBe(true);
				expect(leaves[proof.body.logIndex]).toBeUndefined();
				leaves[proof.body.logIndex] = leaf;
			}
			const note = await (
				await fetch(`${system.baseUrl}/api/logs/signatures/checkpoint`)
			).text();
			const checkpoint = openCheckpoint(note, keys.signatures);
			expect(mth(leaves).equals(checkpoint.root)).toBe(true);

			// Consistency from any earlier size, against the roots a client that kept them would hold.
			for (const from of [0, 1, 7, 16, 17, 64, 100, RECORDS - 1, RECORDS]) {
				const response = await get(`/api/logs/signatures/consistency?from=${from}`);
				expect(response.status).toBe(200);
				expect(response.body).toMatchObject({ from, to: RECORDS });
				const ok = verifyConsistency(
					from,
					RECORDS,
					b64(response.body.proof),
					mth(leaves.slice(0, from)),
					checkpoint.root,
				);
				expect({ from, ok }).toEqual({ from, ok: true });
			}
			// And between two earlier sizes, against the roots of their leaves.
			const between = await get("/api/logs/signatures/consistency?from=10&to=50");
			expect(
				verifyConsistency(
					10,
					50,
					b64(between.body.proof),
					mth(leaves.slice(0, 10)),
					mth(leaves.slice(0, 50)),
				),
			).toBe(true);
			const atSize = await get(`/api/records/${recordIds[0]}/proof?size=${RECORDS}`);
			expect(atSize.body.checkpoint).toBe(note);
			// A saved answer checks offline (npm run verify) with the key alone; a changed leaf does not.
			const key = (await get("/api/logs")).body.logs[0].verifierKey;
			expect(verifyProof(atSize.body, key)).toMatchObject({ ok: true });
			const forged = {
				...atSize.body,
				leaf: atSize.body.leaf.replace(/\.\.[^"]+"/, '..AAAA"'),
			};
			expect(forged.leaf).not.toBe(atSize.body.leaf);
			expect(verifyProof(forged, key)).toMatchObject({ ok: false });
		});

		test("bad input is a 4xx naming the field; no size past the latest checkpoint is proved", async () => {
			const id = recordIds[0];
			// A record whose leaf is not the first: a tree of its index leaves lacks it.
			let later = { id, logIndex: 0 };
			for (const other of recordIds) {
				const { body } = await get(`/api/records/${other}/proof`);
				if (body.logIndex > later.logIndex) later = { id: other, logIndex: body.logIndex };
			}
			const cases: Array<[string, number, string, string | null]> = [
				["/api/logs/nope/checkpoint", 404, "LOG_NOT_FOUND", null],
				["/api/logs/nope/consistency?from=1", 404, "LOG_NOT_FOUND", null],
				["/api/records/nope/proof", 404, "RECORD_NOT_FOUND", null],
				[
					`/api/logs/signatures/consistency?from=${RECORDS + 1}`,
					422,
					"INVALID_TREE_SIZE",
					"from",
				],
				[
					"/api/logs/signatures/consistency?from=20&to=10",
					422,
					"INVALID_TREE_SIZE",
					"from",
				],
				[
					`/api/logs/signatures/consistency?from=1&to=${RECORDS + 1}`,
					422,
					"INVALID_TREE_SIZE",
					"to",
				],
				["/api/logs/signatures/consistency", 422, "VALIDATION_ERROR", "from"],
				["/api/logs/signatures/consistency?from=-1", 422, "VALIDATION_ERROR", "from"],
				["/api/logs/signatures/consistency?from=abc", 422, "VALIDATION_ERROR", "from"],
				["/api/logs/leases/consistency?from=1&to=1.5", 422, "VALIDATION_ERROR", "to"],
				[`/api/records/${id}/proof?size=0`, 422, "VALIDATION_ERROR", "size"],
				[`/api/records/${id}/proof?size=${RECORDS + 1}`, 422, "INVALID_TREE_SIZE", "size"],
				[
					`/api/records/${later.id}/proof?size=${later.logIndex}`,
					422,
					"INVALID_TREE_SIZE",
					"size",
				],
				[`/api/records/${id}/proof?sizes=3`, 422, "VALIDATION_ERROR", '"actual":"sizes"'],
			];
			for (const [path, status, type, field] of cases) {
				const response = await get(path);
				expect({ path, status: response.status, type: response.body.type }).toEqual({
					path,
					status,
					type,
				});
				if (field)
					expect({ path, data: JSON.stringify(response.body.data) }).toEqual({
						path,
						data: expect.stringContaining(
							field.startsWith('"') ? field : `"field":"${field}"`,
						),
					});
			}
		});
	});
});
