/** Run-completion webhooks: retried with backoff, every attempt on the run, signature verifiable from the JWKS. */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { base64url, createLocalJWKSet, flattenedVerify } from "jose";
import { FakeClock } from "../support/fake-clock";
import { request, startApiSystem, waitFor, type ApiSystem } from "../support/http";

interface Received {
	body: string;
	headers: http.IncomingHttpHeaders;
}

describe("webhooks", () => {
	let system: ApiSystem;
	let receiver: http.Server;
	let receiverUrl: string;
	const received: Received[] = [];

	// Backoffs run on this clock: each wait is exact, whatever the machine's load.
	const clock = new FakeClock(Date.now());
	/** The run's webhook once it is `status`, moving the clock on between looks. */
	const webhookOf = (runId: string, status: string) =>
		waitFor(
			`the webhook of ${runId} to be ${status}`,
			async () => {
				await clock.advance(10);
				const r = await request(system.baseUrl, "GET", `/api/runs/${runId}`);
				return r.body.webhook?.status === status ? r.body : null;
			},
			15_000,
		);

	beforeAll(async () => {
		system = await startApiSystem({
			clock,
			records: 300,
			keys: 3,
			api: {
				startRateLimit: { window: 60_000, limit: 100 },
				webhook: {
					maxAttempts: 5,
					baseDelayMs: 30,
					maxDelayMs: 500,
					timeoutMs: 2_000,
					allowPrivate: true,
					maxResponseBytes: 8 * 1024,
				},
			},
		});
		// Fails twice, then accepts.
		receiver = http.createServer((req, res) => {
			const chunks: Buffer[] = [];
			req.on("data", (chunk) => chunks.push(chunk));
			req.on("end", () => {
				received.push({
					body: Buffer.concat(chunks).toString("utf8"),
					headers: req.headers,
				});
				res.writeHead(received.length <= 2 ? 503 : 204);
				res.end();
			});
		});
		await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
		receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/run`;
	});
	afterAll(async () => {
		await system?.stop();
		await new Promise((resolve) => receiver?.close(resolve));
	});

	test("delivered on the third attempt; the attempts are on the run; the body's signature verifies against the JWKS", async () => {
		const completion = system.nextCompletion();
		const started = await request(system.baseUrl, "POST", "/api/batcher/start", {
			body: { batchSize: 25, callbackUrl: receiverUrl },
			token: await system.token(),
		});
		expect(started.status).toBe(202);
		const runId = started.body.id;
		await completion;

		const run = await webhookOf(runId, "delivered");
		expect(run.webhook.url).toBe(receiverUrl);
		expect(run.webhook.attempts.map((a: { status: number }) => a.status)).toEqual([
			503, 503, 204,
		]);
		expect(run.webhook.attempts.map((a: { ok: boolean }) => a.ok)).toEqual([
			false,
			false,
			true,
		]);
		expect(run.webhook.attempts.map((a: { attempt: number }) => a.attempt)).toEqual([1, 2, 3]);
		// Exponential backoff with up to 20% jitter: 30-36 ms, then 60-72 ms.
		// Measured on the gateway's clock from the end of one attempt to the start of the next.
		const gaps = run.webhook.attempts
			.slice(1)
			.map(
				(a: { at: string }, i: number) =>
					Date.parse(a.at) -
					(Date.parse(run.webhook.attempts[i].at) + run.webhook.attempts[i].durationMs),
			);
		expect(gaps[0]).toBeGreaterThanOrEqual(30);
		expect(gaps[0]).toBeLessThanOrEqual(36);
		expect(gaps[1]).toBeGreaterThanOrEqual(60);
		expect(gaps[1]).toBeLessThanOrEqual(72);

		expect(received).toHaveLength(3);
		expect(new Set(received.map((r) => r.body)).size).toBe(1);
		const delivered = received[2];
		expect(JSON.parse(delivered.body)).toMatchObject({
			event: "run.completed",
			runId,
			status: "completed",
			report: { runId, signedThisRun: 300 },
		});
		expect(delivered.headers["x-webhook-attempt"]).toBe("3");

		// What a receiver does: the detached JWS plus the body, against the public JWKS.
		const jwks = (await request(system.baseUrl, "GET", "/.well-known/jwks.json")).body;
		const [protectedHeader, payload, signature] = String(
			delivered.headers["x-signature-jws"],
		).split(".");
		expect(payload).toBe("");
		const verified = await flattenedVerify(
			{ protected: protectedHeader, payload: base64url.encode(delivered.body), signature },
			createLocalJWKSet(jwks),
		);
		expect(verified.protectedHeader).toMatchObject({ alg: "EdDSA", kid: "webhook-1" });
		await expect(
			flattenedVerify(
				{
					protected: protectedHeader,
					payload: base64url.encode(delivered.body.replace("completed", "failed")),
					signature,
				},
				createLocalJWKSet(jwks),
			),
		).rejects.toThrow();
	});

	test("a receiver that never accepts: every attempt recorded, then failed", async () => {
		const completion = system.nextCompletion();
		const started = await request(system.baseUrl, "POST", "/api/batcher/start", {
			body: { callbackUrl: "http://127.0.0.1:1/unreachable" },
			token: await system.token(),
		});
		expect(started.status).toBe(202);
		await completion;
		const run = await webhookOf(started.body.id, "failed");
		expect(run.webhook.attempts).toHaveLength(5);
		expect(
			run.webhook.attempts.every(
				(a: { status: number | null; error: string }) => a.status === null && a.error,
			),
		).toBe(true);
	});
});
