/**
 * POST /api/records and records.submit against a real gateway and real services: records are
 * stored naming who submitted them, a replay changes nothing, a conflict and bad input store
 * nothing of the request, only a `records:write` credential submits over HTTP, and only a holder
 * of the batcher's credential on the bus (docs/design.md §6.10).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ApiKeyFile } from "../../src/api/api-keys";
import { newCredential } from "../../src/identity/credential";
import { makeSubmitProof } from "../../src/identity/submit-proof";
import { request, startApiSystem, type ApiSystem } from "../support/http";

describe("submitting records", () => {
	let system: ApiSystem;
	let dir: string;
	let apiKey: string;
	let writeToken: string;

	beforeAll(async () => {
		dir = fs.mkdtempSync(path.join(os.tmpdir(), "api-records-"));
		const keys = path.join(dir, "api-keys.json");
		apiKey = new ApiKeyFile(keys).create("feeder", ["records:write"]).key;
		system = await startApiSystem({ records: 10, keys: 2, api: { apiKeysFile: keys } });
		writeToken = await system.token("records:write", { subject: "ingest-job" });
	});
	afterAll(async () => {
		await system?.stop();
		fs.rmSync(dir, { recursive: true, force: true });
	});

	const submit = (body: unknown, credential: { token?: string; apiKey?: string } = {}) =>
		request(system.baseUrl, "POST", "/api/records", {
			body,
			token: credential.token ?? (credential.apiKey ? undefined : writeToken),
			headers: credential.apiKey ? { "X-API-Key": credential.apiKey } : {},
		});
	const read = (id: string) =>
		request(system.baseUrl, "GET", `/api/records/${encodeURIComponent(id)}`);
	const recordCount = async () =>
		(await system.broker.call<{ records: number }>("records.progress")).records;

	test("a submission is stored naming its submitter, and answered 202 with where each signature is read", async () => {
		const answer = await submit({
			records: [
				{ id: "order-1", data: "pay 10 to alice" },
				{ id: "order-2", data: "pay 20 to bob" },
			],
		});
		expect(answer.status).toBe(202);
		expect(answer.body).toMatchObject({
			accepted: 2,
			stored: 2,
			replayed: 0,
			submittedBy: "ingest-job",
			records: [
				{ id: "order-1", self: "/api/records/order-1" },
				{ id: "order-2", self: "/api/records/order-2" },
			],
		});
		const stored = await read("order-1");
		expect(stored.status).toBe(200);
		expect(stored.body).toMatchObject({
			id: "order-1",
			data: "pay 10 to alice",
			submittedBy: "ingest-job",
			signature: null,
		});
		expect(Date.parse(stored.body.submittedAt)).toBeGreaterThan(Date.now() - 60_000);
		// A seeded record names no submitter.
		expect((await read("rec-000001")).body).toMatchObject({ submittedBy: null });

		const one = await submit({ records: [{ id: "order-3", data: "x" }] });
		expect(one.headers.get("location")).toBe("/api/records/order-3");
	});

	test("an API key with records:write submits, and the record names the key", async () => {
		const answer = await submit({ records: [{ id: "by-key-1", data: "d" }] }, { apiKey });
		expect(answer.status).toBe(202);
		expect((await read("by-key-1")).body.submittedBy).toBe("api-key:feeder");
	});

	test("the same id with the same data again is an accepted replay that changes nothing", async () => {
		await submit({ records: [{ id: "replay-1", data: "same" }] });
		const before = await read("replay-1");
		const count = await recordCount();
		const again = await submit(
			{ records: [{ id: "replay-1", data: "same" }] },
			{ token: await system.token("records:write", { subject: "someone-else" }) },
		);
		expect(again.status).toBe(202);
		expect(again.body).toMatchObject({ accepted: 1, stored: 0, replayed: 1 });
		expect(await recordCount()).toBe(count);
		expect((await read("replay-1")).body).toEqual(before.body);
	});

	test("an id stored with other data is refused (409) and nothing of the request is stored", async () => {
		await submit({ records: [{ id: "conflict-1", data: "original" }] });
		const count = await recordCount();
		const answer = await submit({
			records: [
				{ id: "conflict-new", data: "would be new" },
				{ id: "conflict-1", data: "changed" },
			],
		});
		expect(answer.status).toBe(409);
		expect(answer.body).toMatchObject({ type: "RECORD_CONFLICT" });
		expect(answer.body.data).toMatchObject({ ids: ["conflict-1"] });
		expect(await recordCount()).toBe(count);
		expect((await read("conflict-1")).body.data).toBe("original");
		expect((await read("conflict-new")).status).toBe(404);
		// A seeded record's id too.
		expect((await submit({ records: [{ id: "rec-000002", data: "forged" }] })).status).toBe(
			409,
		);
	});

	test.each<[string, unknown, string]>([
		["no records field", {}, "records"],
		["records not an array", { records: { id: "a", data: "b" } }, "records"],
		["no records", { records: [] }, "records"],
		[
			"1,001 records",
			{ records: Array.from({ length: 1001 }, (_, i) => ({ id: `many-${i}`, data: "d" })) },
			"records",
		],
		["a record that is not an object", { records: ["x"] }, "records[0]"],
		[
			"an id with a slash",
			{
				records: [
					{ id: "ok-1", data: "d" },
					{ id: "a/b", data: "d" },
				],
			},
			"records[1].id",
		],
		["an id too long", { records: [{ id: "a".repeat(129), data: "d" }] }, "records[0].id"],
		["an empty id", { records: [{ id: "", data: "d" }] }, "records[0].id"],
		["a number id", { records: [{ id: 7, data: "d" }] }, "records[0].id"],
		["data missing", { records: [{ id: "bad-data-1" }] }, "records[0].data"],
		["data empty", { records: [{ id: "bad-data-0", data: "" }] }, "records[0].data"],
		[
			"data not a string",
			{ records: [{ id: "bad-data-2", data: { a: 1 } }] },
			"records[0].data",
		],
		[
			"data too long",
			{ records: [{ id: "bad-data-3", data: "x".repeat(1025) }] },
			"records[0].data",
		],
		[
			"data with a lone surrogate",
			{ records: [{ id: "bad-data-4", data: "\ud800" }] },
			"records[0].data",
		],
		[
			"an id twice",
			{
				records: [
					{ id: "twice", data: "a" },
					{ id: "twice", data: "a" },
				],
			},
			"records[1].id",
		],
	])(
		"bad input (%s) is refused with 422 naming the field, and nothing is stored",
		async (_, body, field) => {
			const count = await recordCount();
			const answer = await submit(body);
			expect(answer.status).toBe(422);
			expect(answer.body.type).toBe("INVALID_RECORDS");
			expect(answer.body.data.field).toBe(field);
			expect(await recordCount()).toBe(count);
			expect((await read("ok-1")).status).toBe(404);
		},
	);

	test("a body that is the records array itself is refused with 422 saying to wrap it in { records }, and nothing is stored", async () => {
		const count = await recordCount();
		const answer = await submit([{ id: "bare-1", data: "d" }]);
		expect(answer.status).toBe(422);
		expect(answer.body).toMatchObject({
			type: "INVALID_BODY",
			message:
				'The body must be a JSON object, not an array: send { "records": [{ "id": "...", "data": "..." }] }',
			data: { field: "body" },
		});
		expect(await recordCount()).toBe(count);
		expect((await read("bare-1")).status).toBe(404);
	});

	test("a data of the wrong length or type is refused with what it got, said as such", async () => {
		const empty = await submit({ records: [{ id: "bad-data-5", data: "" }] });
		expect(empty.body.message).toBe(
			"records[0].data must be a string of 1 to 1024 characters, got 0",
		);
		const long = await submit({ records: [{ id: "bad-data-6", data: "x".repeat(1025) }] });
		expect(long.body.message).toBe(
			"records[0].data must be a string of 1 to 1024 characters, got 1025",
		);
		const number = await submit({ records: [{ id: "bad-data-7", data: 0 }] });
		expect(number.body.message).toBe(
			"records[0].data must be a string of 1 to 1024 characters, got number",
		);
		expect(number.body.data).toEqual({
			field: "records[0].data",
			rule: "must be a string of 1 to 1024 characters, got number",
		});
	});

	test("the largest request the limits allow is taken: 1,000 records of 1,024 characters and 128-character ids", async () => {
		const records = Array.from({ length: 1000 }, (_, i) => ({
			id: `${"k".repeat(120)}-${String(i).padStart(7, "0")}`,
			data: "é".repeat(1024),
		}));
		const answer = await submit({ records });
		expect(answer.status).toBe(202);
		expect(answer.body).toMatchObject({ accepted: 1000, stored: 1000 });
		expect((await read(records[999].id)).body.data).toBe("é".repeat(1024));
	});

	test("data that would take more than 3,072 bytes as JSON (control characters take 6 each) is 422 naming the field and the sizes, and nothing is stored; 512 of them fit", async () => {
		const count = await recordCount();
		const answer = await submit({
			records: [
				{ id: "ctl-ok", data: "ok" },
				{ id: "ctl-1", data: "\u0001".repeat(1024) },
			],
		});
		expect(answer.status).toBe(422);
		expect(answer.body).toMatchObject({
			type: "INVALID_RECORDS",
			data: { field: "records[1].data" },
		});
		expect(answer.body.message).toMatch(
			/records\[1\]\.data must take at most 3072 bytes as JSON .*, got 6144/,
		);
		expect(await recordCount()).toBe(count);
		const fits = await submit({ records: [{ id: "ctl-2", data: "\u0001".repeat(512) }] });
		expect(fits.status).toBe(202);
		expect((await read("ctl-2")).body.data).toBe("\u0001".repeat(512));
	});

	test("a body that is not JSON is 415, and nothing is stored", async () => {
		const count = await recordCount();
		const answer = await request(system.baseUrl, "POST", "/api/records", {
			rawBody: "id=x&data=y",
			token: writeToken,
			headers: { "Content-Type": "application/x-www-form-urlencoded" },
		});
		expect(answer.status).toBe(415);
		expect(await recordCount()).toBe(count);
	});

	test("an unknown field is refused with 422 naming it", async () => {
		const answer = await submit({ records: [{ id: "u-1", data: "d" }], priority: "high" });
		expect(answer.status).toBe(422);
		expect(JSON.stringify(answer.body)).toContain("priority");
		expect((await read("u-1")).status).toBe(404);
	});

	test("only a credential with records:write submits: none is 401, runs:write alone is 403", async () => {
		const count = await recordCount();
		const body = { records: [{ id: "unauthorised-1", data: "d" }] };
		const anonymous = await request(system.baseUrl, "POST", "/api/records", { body });
		expect(anonymous.status).toBe(401);
		const runsOnly = await submit(body, { token: await system.token("runs:write") });
		expect(runsOnly.status).toBe(403);
		expect(runsOnly.body.type).toBe("INSUFFICIENT_SCOPE");
		const runsKey = new ApiKeyFile(path.join(dir, "api-keys.json")).create("runs-only", [
			"runs:write",
		]).key;
		expect((await submit(body, { apiKey: runsKey })).status).toBe(403);
		expect(await recordCount()).toBe(count);
	});

	test("on the bus, records.submit takes only the batcher credential's proof: a stranger gets 403 and nothing is stored", async () => {
		const count = await recordCount();
		const records = [{ id: "bus-1", data: "chosen by a stranger" }];
		const refusal = (params: object) =>
			system.broker.call("records.submit", params).then(
				() => null,
				(err: { code: number; type: string }) => ({ code: err.code, type: err.type }),
			);
		expect(await refusal({ records, submitter: "stranger", iat: Date.now() })).toEqual({
			code: 403,
			type: "SUBMIT_PROOF_MISSING",
		});
		expect(
			await refusal({ records, ...makeSubmitProof(newCredential("stranger"), "x", records) }),
		).toEqual({ code: 403, type: "SUBMIT_PROOF_INVALID" });
		expect(await recordCount()).toBe(count);
		expect((await read("bus-1")).status).toBe(404);
	});
});
