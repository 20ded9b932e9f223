/** The REST routes against a real gateway and real services: happy paths and every client error. */
import { request, startApiSystem, waitFor, type ApiSystem } from "../support/http";
import { signerService } from "../support/system";

describe("api gateway", () => {
	let system: ApiSystem;
	let writeToken: string;
	let recordId: string;

	beforeAll(async () => {
		system = await startApiSystem({
			records: 2000,
			keys: 4,
			batchSize: 50,
			api: { startRateLimit: { window: 60_000, limit: 1000 } },
		});
		writeToken = await system.token();
		const page = await system.broker.call<{ docs: Array<{ _id: string }> }, object>(
			"records.page",
			{ collection: "records", limit: 1 },
		);
		recordId = page.docs[0]._id;
	});
	afterAll(() => system?.stop());

	const get = (path: string) => request(system.baseUrl, "GET", path);
	const start = (body: unknown, headers: Record<string, string> = {}) =>
		request(system.baseUrl, "POST", "/api/batcher/start", { body, token: writeToken, headers });
	const runCount = async () => (await get("/api/runs")).body.length as number;
	const signed = async () =>
		(await system.broker.call<{ signed: number }>("records.progress")).signed;
	/** Every record signed by some run, whichever test ran first: the read routes need one. */
	const allSigned = async () => {
		if ((await signed()) === 2000) return;
		const completion = system.nextCompletion();
		const started = await start({ batchSize: 100 });
		if (started.status === 202) await completion;
		await waitFor(
			"every record signed and no run active",
			async () =>
				(await signed()) === 2000 && !(await get("/api/batcher/status")).body.active,
		);
	};

	test("health: live, and ready once every service is up", async () => {
		expect(await get("/health/live")).toMatchObject({ status: 200, body: { status: "live" } });
		const ready = await get("/health/ready");
		expect(ready.status).toBe(200);
		expect(ready.body).toMatchObject({ status: "ready", notReady: [] });
	});

	test("health: not ready, naming the service, while a service the routes need is missing", async () => {
		const partial = await startApiSystem({
			records: 10,
			keys: 1,
			services: ["records", "keyring", "batcher", "metrics"],
		});
		try {
			const ready = await request(partial.baseUrl, "GET", "/health/ready");
			expect(ready.status).toBe(503);
			expect(ready.body).toMatchObject({
				status: "not ready",
				notReady: ["service signer is not reachable"],
			});
		} finally {
			await partial.stop();
		}
	});

	test("JWKS: the keyring's keys plus the webhook key, cacheable", async () => {
		const jwks = await get("/.well-known/jwks.json");
		expect(jwks.status).toBe(200);
		expect(jwks.headers.get("cache-control")).toMatch(/public, max-age=\d+/);
		const kids = jwks.body.keys.map((k: { kid: string }) => k.kid);
		expect(kids).toHaveLength(5);
		expect(kids).toContain("webhook-1");
		for (const key of jwks.body.keys) expect(key.d).toBeUndefined();
	});

	test("bad input is refused with the right status and type, and starts nothing", async () => {
		const [runsBefore, signedBefore] = [await runCount(), await signed()];
		const cases: Array<[string, Promise<{ status: number; body: any }>, number, string]> = [
			["batch size 0", start({ batchSize: 0 }), 422, "INVALID_BATCH_SIZE"],
			["batch size too large", start({ batchSize: 100_001 }), 422, "INVALID_BATCH_SIZE"],
			["batch size as text", start({ batchSize: "300" }), 422, "INVALID_BATCH_SIZE"],
			["unknown field", start({ batch_size: 300 }), 422, "VALIDATION_ERROR"],
			["an array for a body", start([{ batchSize: 300 }]), 422, "INVALID_BODY"],
			["callbackUrl not a URL", start({ callbackUrl: "not a url" }), 422, "VALIDATION_ERROR"],
			[
				"malformed JSON",
				request(system.baseUrl, "POST", "/api/batcher/start", {
					rawBody: '{"batchSize": 3',
					token: writeToken,
					headers: { "Content-Type": "application/json" },
				}),
				400,
				"MALFORMED_JSON",
			],
			[
				"body too large",
				request(system.baseUrl, "POST", "/api/batcher/start", {
					rawBody: JSON.stringify({ batchSize: 1, pad: "x".repeat(20_000) }),
					token: writeToken,
					headers: { "Content-Type": "application/json" },
				}),
				413,
				"PAYLOAD_TOO_LARGE",
			],
			[
				"not JSON",
				request(system.baseUrl, "POST", "/api/batcher/start", {
					rawBody: "batchSize=3",
					token: writeToken,
					headers: { "Content-Type": "text/plain" },
				}),
				415,
				"UNSUPPORTED_MEDIA_TYPE",
			],
			[
				"bad idempotency key",
				start({ batchSize: 5 }, { "Idempotency-Key": "é".repeat(3) }),
				422,
				"INVALID_IDEMPOTENCY_KEY",
			],
		];
		for (const [name, pending, status, type] of cases) {
			const response = await pending;
			expect({ name, status: response.status, type: response.body.type }).toEqual({
				name,
				status,
				type,
			});
			expect(response.body).toMatchObject({ code: status, message: expect.any(String) });
		}
		const invalid = await start({ batchSize: 0 });
		expect(invalid.body.data).toMatchObject({ field: "batchSize", min: 1, max: 100_000 });
		const unknownField = await start({ batch_size: 300 });
		expect(JSON.stringify(unknownField.body.data)).toContain("batch_size");
		expect(await runCount()).toBe(runsBefore);
		expect(await signed()).toBe(signedBefore);
	});

	test("unknown ids and routes are 404s with a type", async () => {
		expect(await get("/api/runs/run-nope")).toMatchObject({
			status: 404,
			body: { type: "RUN_NOT_FOUND" },
		});
		expect(await get("/api/records/nope")).toMatchObject({
			status: 404,
			body: { type: "RECORD_NOT_FOUND" },
		});
		expect(await get("/api/nope")).toMatchObject({ status: 404, body: { type: "NOT_FOUND" } });
		expect(await get("/nothing/here")).toMatchObject({
			status: 404,
			body: { type: "NOT_FOUND" },
		});
		expect(await request(system.baseUrl, "DELETE", "/api/runs")).toMatchObject({
			status: 404,
			body: { type: "NOT_FOUND" },
		});
	});

	test("a start is 202 with Location; the idempotency key replays it; another start is 409 naming the run", async () => {
		// No signer yet: the run stays active, deterministically, until one joins.
		const held = await startApiSystem({
			records: 500,
			keys: 4,
			services: ["records", "keyring", "batcher", "metrics"],
			api: { startRateLimit: { window: 60_000, limit: 1000 } },
		});
		try {
			const token = await held.token();
			const startHeld = (body: unknown, headers: Record<string, string> = {}) =>
				request(held.baseUrl, "POST", "/api/batcher/start", { body, token, headers });
			const completion = held.nextCompletion();
			const first = await startHeld({ batchSize: 10 }, { "Idempotency-Key": "key-1" });
			expect(first.status).toBe(202);
			expect(first.body).toMatchObject({
				id: expect.any(String),
				batchSize: 10,
				status: "running",
				replayed: false,
			});
			const runId = first.body.id;
			expect(first.headers.get("location")).toBe(`/api/runs/${runId}`);

			const replay = await startHeld({ batchSize: 10 }, { "Idempotency-Key": "key-1" });
			expect(replay.status).toBe(202);
			expect(replay.body).toMatchObject({ id: runId, replayed: true });
			expect(replay.headers.get("location")).toBe(`/api/runs/${runId}`);
			expect(replay.headers.get("idempotent-replayed")).toBe("true");

			const reused = await startHeld({ batchSize: 20 }, { "Idempotency-Key": "key-1" });
			expect(reused).toMatchObject({ status: 422, body: { type: "IDEMPOTENCY_KEY_REUSED" } });

			const conflict = await startHeld({ batchSize: 10 });
			expect(conflict.status).toBe(409);
			expect(conflict.body).toMatchObject({ type: "RUN_ACTIVE", data: { runId } });
			expect(conflict.body.message).toContain(runId);

			const run = await request(held.baseUrl, "GET", first.headers.get("location")!);
			expect(run.status).toBe(200);
			expect(run.body).toMatchObject({
				runId,
				id: runId,
				batchSize: 10,
				status: "running",
				webhook: null,
			});

			held.broker.createService(signerService());
			await completion;
			const done = await waitFor(`run ${runId} to complete`, async () => {
				const r = await request(held.baseUrl, "GET", `/api/runs/${runId}`);
				return r.body.status === "completed" ? r : null;
			});
			expect(done.body.report).toMatchObject({ records: 500, signedThisRun: 500 });
			// Still replays after the run ended: same run, not a new one.
			const late = await startHeld({ batchSize: 10 }, { "Idempotency-Key": "key-1" });
			expect(late).toMatchObject({
				status: 202,
				body: { id: runId, status: "completed", replayed: true },
			});
			expect((await request(held.baseUrl, "GET", "/api/runs")).body).toHaveLength(1);
		} finally {
			await held.stop();
		}
	});

	test("read routes: status, runs, record with its signature, keys, metrics, audit", async () => {
		await allSigned();
		const status = await get("/api/batcher/status");
		expect(status).toMatchObject({
			status: 200,
			body: { active: false, progress: { records: 2000, signed: 2000 } },
		});
		const runs = await get("/api/runs");
		expect(runs.body.length).toBeGreaterThanOrEqual(1);
		expect(runs.body[0]).toMatchObject({ status: "completed", batchSize: expect.any(Number) });
		const record = await get(`/api/records/${recordId}`);
		expect(record.status).toBe(200);
		expect(record.body).toMatchObject({
			id: recordId,
			data: expect.any(String),
			signature: {
				keyId: expect.any(String),
				batchId: expect.any(String),
				jws: expect.stringMatching(/^[\w-]+\.\.[\w-]+$/),
			},
		});
		const keys = await get("/api/keys");
		expect(keys.body).toHaveLength(4);
		expect(keys.body[0]).toMatchObject({
			keyId: expect.any(String),
			uses: expect.any(Number),
			leased: false,
		});
		const metrics = await get("/api/metrics");
		expect(metrics.body).toMatchObject({ status: "completed", records: 2000, signed: 2000 });
		const audit = await get("/api/audit");
		expect(audit.status).toBe(200);
		expect(audit.body.ok).toBe(true);
	});

	test("browsing records: cursor pages in id order, each record once with its signature; signed=true|false filters; bad values are 422 naming the field", async () => {
		await allSigned();
		const seen: string[] = [];
		let next: string | null = null;
		do {
			const page = await get(
				`/api/records?limit=700${next ? `&after=${encodeURIComponent(next)}` : ""}`,
			);
			expect(page.status).toBe(200);
			for (const record of page.body.records)
				expect(record).toMatchObject({
					id: expect.any(String),
					data: expect.any(String),
					signature: {
						keyId: expect.any(String),
						jws: expect.stringMatching(/^[\w-]+\.\.[\w-]+$/),
					},
				});
			seen.push(...page.body.records.map((r: { id: string }) => r.id));
			next = page.body.next;
		} while (next);
		expect(seen).toHaveLength(2000);
		expect(seen).toEqual([...new Set(seen)].sort());
		expect((await get("/api/records")).body.records).toHaveLength(100);
		expect((await get("/api/records?signed=true&limit=1000")).body).toMatchObject({
			records: expect.any(Array),
			next: expect.any(String),
		});
		expect((await get("/api/records?signed=false")).body).toEqual({ records: [], next: null });
		const bad: Array<[string, string]> = [
			["limit=0", "limit"],
			["limit=1001", "limit"],
			["limit=ten", "limit"],
			["limit=2.5", "limit"],
			["signed=maybe", "signed"],
			["after=", "after"],
			["sort=desc", "sort"],
		];
		for (const [query, field] of bad) {
			const response = await get(`/api/records?${query}`);
			expect({ query, status: response.status, type: response.body.type }).toEqual({
				query,
				status: 422,
				type: "VALIDATION_ERROR",
			});
			expect({ query, fields: JSON.stringify(response.body.data) }).toEqual({
				query,
				fields: expect.stringContaining(`"${field}"`),
			});
		}
	});

	test("dashboard and docs pages are served", async () => {
		const page = await fetch(system.baseUrl + "/");
		expect(page.status).toBe(200);
		expect(page.headers.get("content-type")).toContain("text/html");
		expect(await page.text()).toContain("progress");
		const docs = await fetch(system.baseUrl + "/docs/");
		expect(docs.status).toBe(200);
		expect(await docs.text()).toContain("openapi.json");
	});
});
