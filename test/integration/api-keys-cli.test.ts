/** API keys for scripts and CI: made, listed and revoked by `npm run apikey` (the build, as its own process), used on a real gateway. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { runCli } from "../support/cli";
import { request, startApiSystem, waitFor, type ApiSystem } from "../support/http";

describe("API keys for scripts and CI", () => {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "api-keys-"));
	const file = path.join(dir, "api-keys.json");
	let keyed: ApiSystem;
	beforeAll(async () => {
		keyed = await startApiSystem({
			records: 30,
			keys: 2,
			api: { apiKeysFile: file, startRateLimit: { window: 60_000, limit: 100 } },
		});
	});
	afterAll(async () => {
		await keyed?.stop();
		fs.rmSync(dir, { recursive: true, force: true });
	});
	const startWith = (headers: Record<string, string>) =>
		request(keyed.baseUrl, "POST", "/api/batcher/start", { body: { batchSize: 10 }, headers });

	test("made by the command and shown once, kept only as a hash, accepted with its scopes, refused once revoked", async () => {
		const made = await runCli("apikey.js", ["create", "--name", "ci-job", "--file", file], {});
		expect(made.code).toBe(0);
		const key = made.stdout.trim();
		// The key alone on stdout (KEY=$(npm run --silent apikey -- create ...)); what it is, on stderr.
		expect(made.stderr).toContain('Made API key "ci-job" (scopes: runs:write)');
		expect(key).toMatch(/^rsk_[A-Za-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
		expect(fs.statSync(file).mode & 0o777).toBe(0o600);
		const secret = key.slice(key.indexOf("_", 4) + 1);
		expect(fs.readFileSync(file, "utf8")).not.toContain(secret);
		const listed = await runCli("apikey.js", ["list", "--file", file], {});
		expect(listed.stdout).toMatch(/ci-job\s+runs:write/);
		expect(listed.stdout).not.toContain(secret);

		const completion = keyed.nextCompletion();
		expect((await startWith({ "X-API-Key": key })).status).toBe(202);
		await completion;
		expect(
			await startWith({ "X-API-Key": key.slice(0, -1) + (key.endsWith("A") ? "B" : "A") }),
		).toMatchObject({ status: 401, body: { type: "INVALID_API_KEY" } });
		expect(await startWith({ "X-API-Key": "not-a-key" })).toMatchObject({
			status: 401,
			body: { type: "INVALID_API_KEY" },
		});
		expect(
			await startWith({ "X-API-Key": key, Authorization: `Bearer ${await keyed.token()}` }),
		).toMatchObject({ status: 401, body: { type: "TWO_CREDENTIALS" } });

		expect(
			(await runCli("apikey.js", ["revoke", "--name", "ci-job", "--file", file], {})).stdout,
		).toMatch(/Revoked API key "ci-job"/);
		await waitFor(
			"the revoked key to be refused",
			async () => (await startWith({ "X-API-Key": key })).status === 401,
			5_000,
			200,
		);
	});

	test("a key without the runs:write scope may read but not start a run (403)", async () => {
		const made = await runCli(
			"apikey.js",
			["create", "--name", "reader", "--scope", "", "--file", file],
			{},
		);
		const key = made.stdout.trim();
		expect(await startWith({ "X-API-Key": key })).toMatchObject({
			status: 403,
			body: { type: "INSUFFICIENT_SCOPE" },
		});
		expect(
			(await request(keyed.baseUrl, "GET", "/api/runs", { headers: { "X-API-Key": key } }))
				.status,
		).toBe(200);
	});

	test("without any credential, a write says what to send", async () => {
		const refused = await startWith({});
		expect(refused).toMatchObject({
			status: 401,
			body: {
				type: "NO_TOKEN",
				message: expect.stringMatching(
					/Authorization: Bearer <token> \(npm run token prints one\) or X-API-Key: <key>/,
				),
			},
		});
	});
});
