/**
 * A submission's callback (POST /api/records with `callbackUrl`): one webhook once every record
 * of it is signed, under the rules of run webhooks (target checked, body signed with the
 * gateway's webhook key, retried), while a follow run signs them.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { base64url, createLocalJWKSet, flattenedVerify } from "jose";
import { request, sleep, startApiSystem, waitFor, type ApiSystem } from "../support/http";

interface Received {
	body: string;
	headers: http.IncomingHttpHeaders;
}

describe("submission webhooks", () => {
	let system: ApiSystem;
	let receiver: http.Server;
	let receiverUrl: string;
	let token: string;
	const received: Received[] = [];

	beforeAll(async () => {
		receiver = http.createServer((req, res) => {
			const chunks: Buffer[] = [];
			req.on("data", (chunk) => chunks.push(chunk));
			req.on("end", () => {
				received.push({
					body: Buffer.concat(chunks).toString("utf8"),
					headers: req.headers,
				});
				res.writeHead(204);
				res.end();
			});
		});
		await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
		receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/records`;
		system = await startApiSystem({
			records: 10,
			keys: 2,
			api: {
				webhook: {
					maxAttempts: 3,
					baseDelayMs: 30,
					maxDelayMs: 100,
					timeoutMs: 2_000,
					allowPrivate: true,
					maxResponseBytes: 8 * 1024,
				},
			},
		});
		token = await system.token("runs:write records:write", { subject: "feeder" });
	});
	afterAll(async () => {
		await system?.stop();
		await new Promise((resolve) => receiver?.close(resolve));
	});

	test("one signed webhook when every record of the submission is signed", async () => {
		const started = await request(system.baseUrl, "POST", "/api/batcher/start", {
			body: { batchSize: 2, follow: true },
			token,
		});
		expect(started.status).toBe(202);
		const records = [
			{ id: "cb-1", data: "one" },
			{ id: "cb-2", data: "two" },
			{ id: "cb-3", data: "three" },
		];
		const answer = await request(system.baseUrl, "POST", "/api/records", {
			body: { records, callbackUrl: receiverUrl },
			token,
		});
		expect(answer.status).toBe(202);
		const submissionId = answer.body.submissionId as string;
		expect(submissionId).toMatch(/^sub-/);

		await waitFor("the submission's webhook", async () => received.length > 0, 10_000);
		// Every record was signed before it went out.
		for (const { id } of records)
			expect(
				(await request(system.baseUrl, "GET", `/api/records/${id}`)).body.signature,
			).not.toBeNull();
		await sleep(600);
		expect(received).toHaveLength(1);
		const [delivered] = received;
		expect(JSON.parse(delivered.body)).toMatchObject({
			event: "records.signed",
			submissionId,
			submittedBy: "feeder",
			records: records.map(({ id }) => ({ id, self: `/api/records/${id}` })),
		});
		expect(delivered.headers["x-webhook-event"]).toBe("records.signed");
		expect(delivered.headers["x-submission-id"]).toBe(submissionId);
		const jwks = (await request(system.baseUrl, "GET", "/.well-known/jwks.json")).body;
		const [protectedHeader, , signature] = String(delivered.headers["x-signature-jws"]).split(
			".",
		);
		const verified = await flattenedVerify(
			{ protected: protectedHeader, payload: base64url.encode(delivered.body), signature },
			createLocalJWKSet(jwks),
		);
		expect(verified.protectedHeader).toMatchObject({ alg: "EdDSA", kid: "webhook-1" });
	});

	test("a callbackUrl the webhook rules refuse is 422 INVALID_CALLBACK_URL, and nothing is stored", async () => {
		const strict = await startApiSystem({ records: 1, keys: 1 });
		try {
			const answer = await request(strict.baseUrl, "POST", "/api/records", {
				body: {
					records: [{ id: "cb-private", data: "x" }],
					callbackUrl: "http://127.0.0.1:9/hook",
				},
				token: await strict.token("records:write"),
			});
			expect(answer.status).toBe(422);
			expect(answer.body).toMatchObject({
				type: "INVALID_CALLBACK_URL",
				data: { field: "callbackUrl" },
			});
			expect((await request(strict.baseUrl, "GET", "/api/records/cb-private")).status).toBe(
				404,
			);
		} finally {
			await strict.stop();
		}
	});
});
