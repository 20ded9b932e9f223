/** Bearer tokens on the gateway: who may start a run, what a refusal looks like, the rate limit, the token command. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { SignJWT } from "jose";
import { loadAuthConfig, verifyToken } from "../../src/api/auth";
import { tokenCommand } from "../../src/cli/token";
import { TEST_SECRET, request, startApiSystem, type ApiSystem } from "../support/http";

describe("authentication and authorization", () => {
	let system: ApiSystem;

	beforeAll(async () => {
		system = await startApiSystem({
			records: 50,
			keys: 2,
			api: { startRateLimit: { window: 60_000, limit: 100 } },
		});
	});
	afterAll(() => system?.stop());

	const post = (headers: Record<string, string>) =>
		request(system.baseUrl, "POST", "/api/batcher/start", { body: { batchSize: 5 }, headers });
	const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

	test("every refused token is a 401 or 403 with a Bearer challenge, and starts nothing", async () => {
		const now = Math.floor(Date.now() / 1000);
		const otherSecret = new Uint8Array(Buffer.alloc(32, 9));
		const cases: Array<[string, Record<string, string>, number, string, RegExp]> = [
			["missing", {}, 401, "NO_TOKEN", /^Bearer realm="record-signer"$/],
			[
				"not a bearer header",
				{ Authorization: "Basic dXNlcjpwYXNz" },
				401,
				"INVALID_AUTHORIZATION_HEADER",
				/error="invalid_request"/,
			],
			["garbage", bearer("not.a.token"), 401, "INVALID_TOKEN", /error="invalid_token"/],
			[
				"expired",
				bearer(await system.token("runs:write", { issuedAt: now - 3600, ttl: 60 })),
				401,
				"TOKEN_EXPIRED",
				/error="invalid_token"/,
			],
			[
				"wrong audience",
				bearer(await system.token("runs:write", { audience: "someone-else" })),
				401,
				"INVALID_AUDIENCE",
				/error="invalid_token"/,
			],
			[
				"wrong issuer",
				bearer(await system.token("runs:write", { issuer: "mallory" })),
				401,
				"INVALID_ISSUER",
				/error="invalid_token"/,
			],
			[
				"other secret",
				bearer(
					await new SignJWT({ scope: "runs:write" })
						.setProtectedHeader({ alg: "HS256" })
						.setIssuer("record-signer")
						.setAudience("record-signer-api")
						.setExpirationTime("5m")
						.sign(otherSecret),
				),
				401,
				"INVALID_TOKEN",
				/error="invalid_token"/,
			],
			[
				"no expiry",
				bearer(
					await new SignJWT({ scope: "runs:write" })
						.setProtectedHeader({ alg: "HS256" })
						.setIssuer("record-signer")
						.setAudience("record-signer-api")
						.sign(new Uint8Array(Buffer.from(TEST_SECRET, "base64"))),
				),
				401,
				"INVALID_TOKEN",
				/error="invalid_token"/,
			],
			[
				"alg none",
				bearer(
					`${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from(JSON.stringify({ scope: "runs:write", iss: "record-signer", aud: "record-signer-api", exp: now + 300 })).toString("base64url")}.`,
				),
				401,
				"INVALID_TOKEN",
				/error="invalid_token"/,
			],
			[
				"wrong scope",
				bearer(await system.token("runs:read")),
				403,
				"INSUFFICIENT_SCOPE",
				/error="insufficient_scope".*scope="runs:write"/,
			],
		];
		for (const [name, headers, status, type, challenge] of cases) {
			const response = await post(headers);
			expect({ name, status: response.status, type: response.body.type }).toEqual({
				name,
				status,
				type,
			});
			expect(response.headers.get("www-authenticate")).toMatch(challenge);
			// A token signed with another store's secret says where to look.
			if (name === "other secret")
				expect(response.body.message).toMatch(
					/signature does not verify\. A token from npm run token is signed with one store's secret \(DATA_DIR\/auth\.secret\) or with AUTH_SECRET/,
				);
		}
		expect((await request(system.baseUrl, "GET", "/api/runs")).body).toEqual([]);
	});

	test("a token with runs:write among other scopes starts a run; reads are open without a token", async () => {
		const completion = system.nextCompletion();
		const started = await post(bearer(await system.token("runs:read runs:write")));
		expect(started.status).toBe(202);
		await completion;
		expect((await request(system.baseUrl, "GET", `/api/runs/${started.body.id}`)).status).toBe(
			200,
		);
		// A token sent on an open read is still checked.
		expect(
			(
				await request(system.baseUrl, "GET", "/api/runs", {
					headers: bearer("bad.token.here"),
				})
			).status,
		).toBe(401);
	});

	test("AUTH_READS=required closes the read routes but not health and JWKS; the start route is rate limited", async () => {
		const closed = await startApiSystem({
			records: 10,
			keys: 1,
			authEnv: { AUTH_READS: "required" },
			api: { startRateLimit: { window: 60_000, limit: 3 } },
		});
		try {
			const runs = await request(closed.baseUrl, "GET", "/api/runs");
			expect(runs).toMatchObject({ status: 401, body: { type: "NO_TOKEN" } });
			expect(runs.headers.get("www-authenticate")).toContain("Bearer");
			expect(
				(
					await request(closed.baseUrl, "GET", "/api/runs", {
						token: await closed.token("runs:read"),
					})
				).status,
			).toBe(200);
			expect((await request(closed.baseUrl, "GET", "/health/ready")).status).toBe(200);
			expect((await request(closed.baseUrl, "GET", "/.well-known/jwks.json")).status).toBe(
				200,
			);

			// Limit 3 per window: three refused starts, then 429 with Retry-After, token or not.
			for (let i = 0; i < 3; i++)
				expect(
					(await request(closed.baseUrl, "POST", "/api/batcher/start", { body: {} }))
						.status,
				).toBe(401);
			const limited = await request(closed.baseUrl, "POST", "/api/batcher/start", {
				body: {},
				token: await closed.token(),
			});
			expect(limited).toMatchObject({ status: 429, body: { type: "RATE_LIMIT_EXCEEDED" } });
			const retryAfter = Number(limited.headers.get("retry-after"));
			expect(retryAfter).toBeGreaterThanOrEqual(1);
			expect(retryAfter).toBeLessThanOrEqual(60);
			expect(
				(await request(closed.baseUrl, "GET", "/api/runs", { token: await closed.token() }))
					.body,
			).toEqual([]);
		} finally {
			await closed.stop();
		}
	});

	test("npm run token: shares DATA_DIR/auth.secret (mode 0600) with the gateway; scope and ttl flags", async () => {
		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "token-"));
		try {
			const notes: string[] = [];
			const token = await tokenCommand(
				["--scope", "runs:write runs:read", "--ttl", "10m"],
				{ DATA_DIR: dataDir },
				(line) => notes.push(line),
			);
			expect(notes).toEqual([
				`Signed with the secret of the store in ${dataDir} (${path.join(dataDir, "auth.secret")}): only a gateway on DATA_DIR=${dataDir} accepts it.`,
			]);
			const file = path.join(dataDir, "auth.secret");
			expect(fs.statSync(file).mode & 0o777).toBe(0o600);
			const gateway = await loadAuthConfig({}, dataDir);
			const principal = await verifyToken(gateway, token);
			expect(principal.scopes).toEqual(["runs:write", "runs:read"]);
			const exp = principal.claims.exp! - principal.claims.iat!;
			expect(exp).toBeGreaterThan(590);
			expect(exp).toBeLessThanOrEqual(600);
			await expect(tokenCommand(["--ttl", "soon"], { DATA_DIR: dataDir })).rejects.toThrow(
				/--ttl/,
			);
			const withSecret = await tokenCommand(
				[],
				{ AUTH_SECRET: TEST_SECRET, DATA_DIR: dataDir },
				(line) => notes.push(line),
			);
			expect(notes[1]).toBe(
				"Signed with AUTH_SECRET: only a gateway with the same AUTH_SECRET accepts it.",
			);
			await expect(verifyToken(system.auth, withSecret)).resolves.toMatchObject({
				scopes: ["runs:write"],
			});
		} finally {
			fs.rmSync(dataDir, { recursive: true, force: true });
		}
	});

	test("EdDSA: with AUTH_PUBLIC_KEY the gateway accepts tokens of the external issuer only", async () => {
		const { generateKeyPair, exportSPKI } = await import("jose");
		const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
		const config = await loadAuthConfig({ AUTH_PUBLIC_KEY: await exportSPKI(publicKey) }, "");
		const token = await new SignJWT({ scope: "runs:write" })
			.setProtectedHeader({ alg: "EdDSA" })
			.setIssuer("record-signer")
			.setAudience("record-signer-api")
			.setExpirationTime("5m")
			.sign(privateKey);
		await expect(verifyToken(config, token)).resolves.toMatchObject({ scopes: ["runs:write"] });
		await expect(verifyToken(config, await system.token())).rejects.toMatchObject({
			status: 401,
			type: "INVALID_TOKEN",
		});
	});
});
