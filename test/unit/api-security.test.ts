/**
 * The gateway's gaps of issue 10, each reproduced: webhooks that would reach loopback and
 * private addresses (checked at connect time too), an unbounded webhook answer, unlimited event
 * streams, a full audit on every anonymous call, secrets in published settings and public
 * reads, bad bodies answered with a 500, and pages without a Content-Security-Policy.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import zlib from "node:zlib";
import { ForbiddenTargetError, postJson } from "../../src/api/outbound";
import { request, startApiSystem, waitFor, type ApiSystem } from "../support/http";

let system: ApiSystem;
beforeAll(async () => {
	system = await startApiSystem({
		records: 60,
		keys: 3,
		api: {
			startRateLimit: { window: 60_000, limit: 100 },
			eventStreams: { perClient: 3, total: 5 },
			webhook: {
				maxAttempts: 1,
				baseDelayMs: 10,
				maxDelayMs: 10,
				timeoutMs: 2_000,
				allowPrivate: false,
				maxResponseBytes: 8 * 1024,
			},
		},
	});
});
afterAll(() => system?.stop());

const start = async (body: object, headers: Record<string, string> = {}) =>
	request(system.baseUrl, "POST", "/api/batcher/start", {
		body,
		token: await system.token(),
		headers,
	});

describe("webhooks go to public addresses only, unless WEBHOOK_ALLOW_PRIVATE says otherwise", () => {
	test.each([
		["the cloud metadata address", "http://169.254.169.254/latest/meta-data/"],
		["a loopback port (the metrics endpoint)", "http://127.0.0.1:3030/metrics"],
		["loopback in hex", "http://0x7f000001/"],
		["loopback in IPv6", "http://[::1]:3000/"],
		["an IPv4-mapped loopback", "http://[::ffff:127.0.0.1]/"],
		["a private network", "http://10.0.0.5/hook"],
		["localhost by name", "http://localhost:3000/hook"],
	])("%s is refused when the run starts: 422, nothing started", async (_, callbackUrl) => {
		const refused = await start({ batchSize: 10, callbackUrl });
		expect(refused.status).toBe(422);
		expect(refused.body).toMatchObject({
			type: "INVALID_CALLBACK_URL",
			data: { field: "callbackUrl" },
			message: expect.stringMatching(
				/loopback or private address .*WEBHOOK_ALLOW_PRIVATE=true/,
			),
		});
	});

	test("a name that resolves to a private address is refused when connecting (DNS answers are checked where they are used)", async () => {
		const receiver = http.createServer((_req, res) => res.end());
		await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
		let reached = false;
		receiver.on("request", () => (reached = true));
		try {
			const port = (receiver.address() as AddressInfo).port;
			const refused = await postJson(
				`http://localhost:${port}/`,
				"{}",
				{},
				{ timeoutMs: 2_000, allowPrivate: false, maxResponseBytes: 1024 },
			).catch((err: Error) => err);
			expect(refused).toBeInstanceOf(ForbiddenTargetError);
			expect(reached).toBe(false);
			// Allowed explicitly, the same call goes through.
			expect(
				await postJson(
					`http://localhost:${port}/`,
					"{}",
					{},
					{ timeoutMs: 2_000, allowPrivate: true, maxResponseBytes: 1024 },
				),
			).toEqual({ status: 200 });
		} finally {
			await new Promise((resolve) => receiver.close(resolve));
		}
	});

	test("a receiver answering without end: at most a few KB are read, then the connection is dropped", async () => {
		let written = 0;
		let closedEarly = false;
		const receiver = http.createServer((_req, res) => {
			res.writeHead(200, { "Content-Type": "application/octet-stream" });
			const chunk = Buffer.alloc(64 * 1024, 120);
			const pump = () => {
				while (written < 400 * 1024 * 1024) {
					written += chunk.length;
					if (!res.write(chunk)) return void res.once("drain", pump);
				}
				res.end();
			};
			res.on("close", () => (closedEarly = written < 400 * 1024 * 1024));
			pump();
		});
		await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
		try {
			const { status } = await postJson(
				`http://127.0.0.1:${(receiver.address() as AddressInfo).port}/`,
				"{}",
				{},
				{ timeoutMs: 5_000, allowPrivate: true, maxResponseBytes: 8 * 1024 },
			);
			expect(status).toBe(200);
			await waitFor(
				"the oversized webhook answer to be cut off",
				async () => closedEarly,
				5_000,
			);
			expect(written).toBeLessThan(16 * 1024 * 1024);
		} finally {
			await new Promise((resolve) => receiver.close(resolve));
		}
	});

	test("public reads of a run show the webhook without its query and without network details", async () => {
		const completion = system.nextCompletion();
		const started = await start({
			batchSize: 30,
			callbackUrl: "https://hooks.example.invalid/run-done?token=SECRET-QUERY",
		});
		expect(started.status).toBe(202);
		await completion;
		const run = await waitFor(
			"the webhook to be recorded failed",
			async () => {
				const r = await request(system.baseUrl, "GET", `/api/runs/${started.body.id}`);
				return r.body.webhook?.status === "failed" ? r.body : null;
			},
			15_000,
		);
		expect(run.webhook.url).toBe("https://hooks.example.invalid/run-done");
		expect(run.webhook.attempts).toEqual([
			expect.objectContaining({ attempt: 1, ok: false, status: null, error: "no answer" }),
		]);
		expect(JSON.stringify(run)).not.toMatch(/SECRET-QUERY|ENOTFOUND|EAI_AGAIN|getaddrinfo/);
	});
});

describe("event streams are limited per client and in total", () => {
	test("past 3 streams from one client: 429; past 5 in all: 503; a closed stream frees its slot", async () => {
		const streams: http.ClientRequest[] = [];
		const port = Number(new URL(system.baseUrl).port);
		/** A stream from `from` (loopback addresses are distinct clients to the gateway). */
		const open = (from: string) =>
			new Promise<{ status: number; body: string }>((resolve, reject) => {
				const req = http.get(
					{ host: "127.0.0.1", port, path: "/api/events", localAddress: from },
					(res) => {
						if (res.statusCode === 200) {
							streams.push(req);
							return resolve({ status: 200, body: "" });
						}
						let body = "";
						res.on("data", (chunk) => (body += chunk));
						res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
					},
				);
				req.on("error", reject);
			});
		try {
			for (let i = 0; i < 3; i++) expect((await open("127.0.0.2")).status).toBe(200);
			const fourth = await open("127.0.0.2");
			expect(fourth.status).toBe(429);
			expect(JSON.parse(fourth.body)).toMatchObject({
				type: "TOO_MANY_STREAMS",
				message: expect.stringContaining("at most 3"),
			});
			// Another client may still open some, until 5 are open in all.
			for (let i = 0; i < 2; i++) expect((await open("127.0.0.3")).status).toBe(200);
			const sixth = await open("127.0.0.4");
			expect(sixth.status).toBe(503);
			expect(JSON.parse(sixth.body)).toMatchObject({ type: "STREAMS_EXHAUSTED" });
			// Closing one frees its slot.
			streams.shift()!.destroy();
			await waitFor(
				"a stream slot freed for 127.0.0.4",
				async () => (await open("127.0.0.4")).status === 200,
				5_000,
			);
		} finally {
			for (const stream of streams) stream.destroy();
		}
	});
});

describe("the audit verdict", () => {
	test("anyone reads the last verdict (cached); a fresh audit needs a token", async () => {
		const first = await request(system.baseUrl, "GET", "/api/audit");
		expect(first.status).toBe(200);
		const second = await request(system.baseUrl, "GET", "/api/audit");
		expect(second.body).toMatchObject({
			ok: first.body.ok,
			cached: true,
			checkedAt: first.body.checkedAt,
		});
		const anonymous = await request(system.baseUrl, "GET", "/api/audit?refresh=true");
		expect(anonymous.status).toBe(401);
		expect(anonymous.body.message).toMatch(/fresh audit .* needs a bearer token/);
		const fresh = await request(system.baseUrl, "GET", "/api/audit?refresh=true", {
			token: await system.token(),
		});
		expect(fresh.body).toMatchObject({ cached: false });
		expect(Date.parse(fresh.body.checkedAt)).toBeGreaterThanOrEqual(
			Date.parse(first.body.checkedAt),
		);
	});
});

describe("secrets stay out of published settings and public reads", () => {
	test("no service publishes mongoUri, the master key or a signer credential to other nodes", async () => {
		const services = await system.broker.call<
			Array<{ name: string; settings: Record<string, unknown> }>,
			object
		>("$node.services", { withSettings: true });
		const byName = Object.fromEntries(services.map((s) => [s.name, s.settings]));
		for (const name of ["records", "batcher", "keyring"])
			expect({ name, has: "mongoUri" in byName[name] }).toEqual({ name, has: false });
		expect(byName.keyring).not.toHaveProperty("masterKey");
		expect(byName.signer).not.toHaveProperty("credential");
		// Locally the services still have them.
		expect(
			(
				system.broker.getLocalService("records") as unknown as {
					settings: Record<string, unknown>;
				}
			).settings,
		).toHaveProperty("mongoUri");
	});

	test("a run's Idempotency-Key is not shown on public reads", async () => {
		const completion = system.nextCompletion();
		const started = await start(
			{ batchSize: 10 },
			{ "Idempotency-Key": "client-secret-key-1" },
		);
		expect(started.status).toBe(202);
		await completion;
		const one = await request(system.baseUrl, "GET", `/api/runs/${started.body.id}`);
		const all = await request(system.baseUrl, "GET", "/api/runs");
		expect(one.status).toBe(200);
		expect(JSON.stringify([one.body, all.body])).not.toMatch(
			/client-secret-key-1|idempotencyKey|requestFingerprint/,
		);
	});

	test("a validation error names the field, not the node that checked it", async () => {
		const refused = await request(system.baseUrl, "GET", `/api/runs/${"x".repeat(300)}`);
		expect(refused.status).toBe(422);
		expect(refused.body.data[0]).toMatchObject({ field: "id" });
		expect(JSON.stringify(refused.body)).not.toContain("nodeID");
	});
});

describe("bad bodies get a clear 4xx", () => {
	test.each([["gzip"], ["br"], ["deflate"]])(
		"a corrupt %s body: 400 MALFORMED_BODY",
		async (encoding) => {
			const response = await fetch(`${system.baseUrl}/api/batcher/start`, {
				method: "POST",
				headers: {
					"Content-Type": "application/json",
					"Content-Encoding": encoding,
					Authorization: `Bearer ${await system.token()}`,
				},
				body: Buffer.from("this is not compressed at all"),
			});
			expect(response.status).toBe(400);
			expect(await response.json()).toMatchObject({
				type: "MALFORMED_BODY",
				message: "The request body does not decompress with its Content-Encoding",
			});
		},
	);

	test("a well-formed gzip body still works", async () => {
		const completion = system.nextCompletion();
		const response = await fetch(`${system.baseUrl}/api/batcher/start`, {
			method: "POST",
			headers: {
				"Content-Type": "application/json",
				"Content-Encoding": "gzip",
				Authorization: `Bearer ${await system.token()}`,
			},
			body: zlib.gzipSync(JSON.stringify({ batchSize: 10 })),
		});
		expect(response.status).toBe(202);
		await completion;
	});

	test('{"batchSize": null} is a 422 naming the field, not a run with the default size', async () => {
		const refused = await start({ batchSize: null });
		expect(refused.status).toBe(422);
		expect(refused.body).toMatchObject({
			type: "INVALID_BATCH_SIZE",
			data: { field: "batchSize" },
		});
	});
});

describe("pages carry a Content-Security-Policy and nosniff", () => {
	test.each([["/"], ["/docs/"], ["/api/openapi.json"]])("%s", async (path) => {
		const response = await fetch(system.baseUrl + path);
		expect(response.status).toBe(200);
		expect(response.headers.get("content-security-policy")).toMatch(
			/default-src 'self'.*script-src 'self'.*style-src 'self'.*frame-ancestors 'none'/,
		);
		expect(response.headers.get("x-content-type-options")).toBe("nosniff");
		await response.text();
	});
});

describe("POST /api/runs/:id/cancel", () => {
	test("needs runs:write; 202 with Location; the run ends cancelled with its report; a new run may start", async () => {
		const slow = await startApiSystem({
			records: 3_000,
			keys: 2,
			window: 1,
			api: { startRateLimit: { window: 60_000, limit: 100 } },
		});
		try {
			const completion = slow.nextCompletion();
			const started = await request(slow.baseUrl, "POST", "/api/batcher/start", {
				body: { batchSize: 10 },
				token: await slow.token(),
			});
			const id = started.body.id;
			expect((await request(slow.baseUrl, "POST", `/api/runs/${id}/cancel`)).status).toBe(
				401,
			);
			expect(
				(
					await request(slow.baseUrl, "POST", `/api/runs/${id}/cancel`, {
						token: await slow.token("runs:read"),
					})
				).status,
			).toBe(403);
			const cancelled = await request(slow.baseUrl, "POST", `/api/runs/${id}/cancel`, {
				token: await slow.token(),
			});
			expect(cancelled.status).toBe(202);
			expect(cancelled.headers.get("location")).toBe(`/api/runs/${id}`);
			expect(cancelled.body).toMatchObject({
				id,
				runId: id,
				cancelRequestedAt: expect.any(String),
			});
			expect(await completion).toMatchObject({ status: "cancelled" });
			const run = await request(slow.baseUrl, "GET", `/api/runs/${id}`);
			expect(run.body).toMatchObject({ status: "cancelled", report: { runId: id } });
			expect(run.body.report.signedThisRun).toBeLessThan(3_000);
			expect(
				await request(slow.baseUrl, "POST", `/api/runs/${id}/cancel`, {
					token: await slow.token(),
				}),
			).toMatchObject({ status: 409, body: { type: "RUN_NOT_ACTIVE" } });
			expect(
				await request(slow.baseUrl, "POST", "/api/runs/run-unknown/cancel", {
					token: await slow.token(),
				}),
			).toMatchObject({ status: 404, body: { type: "RUN_NOT_FOUND" } });
			const next = slow.nextCompletion();
			expect(
				(
					await request(slow.baseUrl, "POST", "/api/batcher/start", {
						body: { batchSize: 300 },
						token: await slow.token(),
					})
				).status,
			).toBe(202);
			expect(await next).toMatchObject({ status: "completed", report: { records: 3_000 } });
		} finally {
			await slow.stop();
		}
	});
});
