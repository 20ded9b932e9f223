/**
 * The gateway's part of issue 18, each reproduced: limits per client behind a proxy
 * (TRUSTED_PROXIES, X-Forwarded-For read only from a trusted peer), one client per address
 * whatever its notation, the security headers on every answer (moleculer-web's own 404s and
 * errors, answers to requests Node cannot parse), webhook registration refusing every address
 * delivery refuses, and DATA_DIR 0700 with every file in it 0600 whatever the umask.
 */
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ApiKeyFile } from "../../src/api/api-keys";
import { loadAuthConfig } from "../../src/api/auth";
import { clientAddress, normalizeAddress, TrustedProxies } from "../../src/api/client-address";
import { checkWebhookTarget, ForbiddenTargetError, postJson } from "../../src/api/outbound";
import { ensurePrivateDir, privateAppendStream } from "../../src/private-files";
import { apiOptions } from "../../src/api/settings";
import { ConfigError, loadConfig } from "../../src/config";
import { request, startApiSystem, waitFor, type ApiSystem } from "../support/http";

const CSP = /default-src 'self'.*script-src 'self'.*frame-ancestors 'none'/;

interface Answer {
	status: number;
	headers: http.IncomingHttpHeaders;
	body: any;
}

/** One HTTP request from a chosen loopback source address (each is a distinct client to the gateway). */
function send(
	system: ApiSystem,
	method: string,
	urlPath: string,
	options: {
		from?: string;
		forwardedFor?: string;
		headers?: Record<string, string>;
		body?: string;
	} = {},
): Promise<Answer> {
	const { port } = new URL(system.baseUrl);
	const headers: Record<string, string> = { ...options.headers };
	if (options.forwardedFor !== undefined) headers["X-Forwarded-For"] = options.forwardedFor;
	return new Promise((resolve, reject) => {
		const req = http.request(
			{
				host: "127.0.0.1",
				port: Number(port),
				method,
				path: urlPath,
				localAddress: options.from ?? "127.0.0.1",
				headers,
			},
			(res) => {
				let text = "";
				res.on("data", (chunk) => (text += chunk));
				res.on("end", () => {
					let body: unknown = text;
					try {
						body = JSON.parse(text);
					} catch {
						// Not JSON.
					}
					resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
				});
			},
		);
		req.on("error", reject);
		req.end(options.body);
	});
}

describe("TRUSTED_PROXIES: the setting", () => {
	test("comma-separated IPv4 and IPv6 addresses and CIDR ranges, in canonical form, passed to the gateway's options", () => {
		const config = loadConfig({
			DATA_DIR: "",
			TRUSTED_PROXIES: " 10.0.0.0/8,127.0.0.1 , ::1,FD00::/8, ::ffff:192.168.0.0/112",
		});
		expect(config.trustedProxies).toEqual([
			"10.0.0.0/8",
			"127.0.0.1/32",
			"::1/128",
			"fd00::/8",
			"192.168.0.0/16",
		]);
		expect(apiOptions(config).trustedProxies).toEqual(config.trustedProxies);
	});

	test("unset or empty: no proxy is trusted", () => {
		expect(loadConfig({ DATA_DIR: "" }).trustedProxies).toEqual([]);
		expect(loadConfig({ DATA_DIR: "", TRUSTED_PROXIES: "" }).trustedProxies).toEqual([]);
	});

	test.each([
		["10.0.0.0/33"],
		["::1/129"],
		["proxy.internal"],
		["10.0.0.1/8/1"],
		["1.2.3"],
		["10.0.0.0/-1"],
		["10.0.0.0/x"],
		["fe80::1%eth0"],
		["::ffff:10.0.0.0/64"],
	])("%s is a ConfigError naming TRUSTED_PROXIES and the entry", (entry) => {
		const load = () => loadConfig({ DATA_DIR: "", TRUSTED_PROXIES: `127.0.0.1,${entry}` });
		expect(load).toThrow(ConfigError);
		expect(load).toThrow(
			`TRUSTED_PROXIES must be IP addresses or CIDR ranges separated by commas (e.g. 10.0.0.0/8,127.0.0.1,::1), got "${entry}"`,
		);
	});
});

describe("clientAddress: who a request comes from", () => {
	const trusted = new TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"]);
	const from = (peer: string, forwardedFor?: string | string[]) =>
		clientAddress(
			{
				socket: { remoteAddress: peer },
				headers: forwardedFor === undefined ? {} : { "x-forwarded-for": forwardedFor },
			},
			trusted,
		);

	test("one address in any notation is one client; distinct addresses are distinct clients", () => {
		expect(from("::ffff:127.0.0.2")).toBe("127.0.0.2");
		expect(from("127.0.0.2")).toBe("127.0.0.2");
		expect(from("127.0.0.3")).toBe("127.0.0.3");
		expect(from("2001:DB8:0:0::1")).toBe("2001:db8::1");
		expect(normalizeAddress("::ffff:cb00:7105")).toBe("203.0.113.5");
	});

	test("an IPv4-mapped peer matches an IPv4 rule: its X-Forwarded-For is read", () => {
		expect(from("::ffff:127.0.0.1", "203.0.113.5")).toBe("203.0.113.5");
		expect(from("::ffff:10.9.8.7", "::ffff:203.0.113.6")).toBe("203.0.113.6");
		expect(from("fd00::5", "2001:db8::7")).toBe("2001:db8::7");
	});

	test("from the right, trusted proxies are skipped; the first untrusted address is the client", () => {
		expect(from("127.0.0.1", "198.51.100.1, 203.0.113.5, 10.1.1.1, 10.2.2.2")).toBe(
			"203.0.113.5",
		);
		expect(from("127.0.0.1", ["198.51.100.1, 203.0.113.5", "10.1.1.1"])).toBe("203.0.113.5");
		// Only trusted hops: the farthest is where the request started.
		expect(from("127.0.0.1", "10.0.0.1, 10.0.0.2")).toBe("10.0.0.1");
		// Nothing forwarded: the peer.
		expect(from("127.0.0.1")).toBe("127.0.0.1");
	});

	test("a malformed entry before the client is found means the peer is the client", () => {
		expect(from("127.0.0.1", "203.0.113.5, not-an-ip")).toBe("127.0.0.1");
		expect(from("127.0.0.1", "203.0.113.5, 10.0.0.1:8080")).toBe("127.0.0.1");
		expect(from("127.0.0.1", "")).toBe("127.0.0.1");
		// Left of the client, nothing is read: whatever is there does not matter.
		expect(from("127.0.0.1", "garbage, 203.0.113.5")).toBe("203.0.113.5");
	});

	test("from an untrusted peer, or with no proxies configured, the header is ignored", () => {
		expect(from("127.0.0.2", "203.0.113.5")).toBe("127.0.0.2");
		expect(from("::ffff:192.0.2.1", "203.0.113.5")).toBe("192.0.2.1");
		expect(
			clientAddress(
				{
					socket: { remoteAddress: "127.0.0.1" },
					headers: { "x-forwarded-for": "203.0.113.5" },
				},
				new TrustedProxies([]),
			),
		).toBe("127.0.0.1");
	});
});

describe("behind a trusted proxy, the limits are per client", () => {
	let system: ApiSystem;
	beforeAll(async () => {
		// The peer 127.0.0.1 (and 127.0.0.4) is the proxy; the rate limit is 2 per minute, 1 event stream per client.
		system = await startApiSystem({
			records: 30,
			keys: 2,
			env: { TRUSTED_PROXIES: "127.0.0.1,127.0.0.4,10.0.0.0/8" },
			api: {
				startRateLimit: { window: 60_000, limit: 2 },
				eventStreams: { perClient: 1, total: 50 },
			},
		});
	});
	afterAll(() => system?.stop());

	/** A rate-limited write that starts nothing: cancelling an unknown run (404 until limited). */
	const write = async (options: { from?: string; forwardedFor?: string }) =>
		send(system, "POST", "/api/runs/run-unknown/cancel", {
			...options,
			headers: { Authorization: `Bearer ${await system.token()}` },
		});

	test("each forwarded client has its own rate limit; the third write of one is 429", async () => {
		expect((await write({ forwardedFor: "203.0.113.1" })).status).toBe(404);
		expect((await write({ forwardedFor: "203.0.113.1" })).status).toBe(404);
		const limited = await write({ forwardedFor: "203.0.113.1" });
		expect(limited.status).toBe(429);
		expect(limited.body).toMatchObject({ type: "RATE_LIMIT_EXCEEDED" });
		expect(limited.headers["x-rate-limit-remaining"]).toBe("0");
		expect(limited.headers["content-security-policy"]).toMatch(CSP);
		// Another client behind the same proxy is not limited.
		expect((await write({ forwardedFor: "203.0.113.2" })).status).toBe(404);
	});

	test("the notations of one address are one client", async () => {
		expect((await write({ forwardedFor: "203.0.113.3" })).status).toBe(404);
		expect((await write({ forwardedFor: "::ffff:203.0.113.3" })).status).toBe(404);
		expect((await write({ forwardedFor: "::FFFF:CB00:7103" })).status).toBe(429);
	});

	test("trusted proxies in the chain are skipped; what the client wrote left of itself does not matter", async () => {
		expect((await write({ forwardedFor: "198.51.100.7, 203.0.113.4, 10.1.2.3" })).status).toBe(
			404,
		);
		expect((await write({ forwardedFor: "spoofed, 203.0.113.4" })).status).toBe(404);
		expect(
			(await write({ forwardedFor: "198.51.100.8, 203.0.113.4, 10.9.9.9, 10.1.2.3" })).status,
		).toBe(429);
	});

	test("an untrusted peer cannot pick its own key with X-Forwarded-For", async () => {
		expect((await write({ from: "127.0.0.2", forwardedFor: "203.0.113.50" })).status).toBe(404);
		expect((await write({ from: "127.0.0.2", forwardedFor: "203.0.113.51" })).status).toBe(404);
		expect((await write({ from: "127.0.0.2", forwardedFor: "203.0.113.52" })).status).toBe(429);
		// Nor get around it without the header.
		expect((await write({ from: "127.0.0.2" })).status).toBe(429);
	});

	test("a malformed X-Forwarded-For from a trusted proxy counts against the proxy itself", async () => {
		expect((await write({ from: "127.0.0.4", forwardedFor: "not-an-ip" })).status).toBe(404);
		expect(
			(await write({ from: "127.0.0.4", forwardedFor: "203.0.113.60, 203.0.113.61:443" }))
				.status,
		).toBe(404);
		expect((await write({ from: "127.0.0.4" })).status).toBe(429);
		// A well-formed one is its client's, not limited.
		expect((await write({ from: "127.0.0.4", forwardedFor: "203.0.113.62" })).status).toBe(404);
	});

	test("event streams: one per forwarded client (429 past it, with the security headers); from an untrusted peer the header is ignored", async () => {
		const { port } = new URL(system.baseUrl);
		const open: http.ClientRequest[] = [];
		const stream = (from: string, forwardedFor: string) =>
			new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>(
				(resolve, reject) => {
					const req = http.get(
						{
							host: "127.0.0.1",
							port: Number(port),
							path: "/api/events",
							localAddress: from,
							headers: { "X-Forwarded-For": forwardedFor },
						},
						(res) => {
							if (res.statusCode === 200) {
								open.push(req);
								return resolve({ status: 200, headers: res.headers, body: "" });
							}
							let body = "";
							res.on("data", (chunk) => (body += chunk));
							res.on("end", () =>
								resolve({
									status: res.statusCode ?? 0,
									headers: res.headers,
									body,
								}),
							);
						},
					);
					req.on("error", reject);
				},
			);
		try {
			const first = await stream("127.0.0.1", "203.0.113.70");
			expect(first.status).toBe(200);
			expect(first.headers["content-security-policy"]).toMatch(CSP);
			const second = await stream("127.0.0.1", "::ffff:203.0.113.70");
			expect(second.status).toBe(429);
			expect(JSON.parse(second.body)).toMatchObject({ type: "TOO_MANY_STREAMS" });
			expect(second.headers["content-security-policy"]).toMatch(CSP);
			expect(second.headers["x-content-type-options"]).toBe("nosniff");
			expect((await stream("127.0.0.1", "203.0.113.71")).status).toBe(200);

			expect((await stream("127.0.0.5", "203.0.113.80")).status).toBe(200);
			expect((await stream("127.0.0.5", "203.0.113.81")).status).toBe(429);

			// Closing a stream frees its client's slot.
			open.shift()!.destroy();
			await waitFor(
				"a stream slot freed for 203.0.113.70",
				async () => (await stream("127.0.0.1", "203.0.113.70")).status === 200,
				5_000,
			);
		} finally {
			for (const req of open) req.destroy();
		}
	});
});

describe("every answer of the gateway carries the Content-Security-Policy and nosniff", () => {
	let system: ApiSystem;
	beforeAll(async () => {
		system = await startApiSystem({
			records: 30,
			keys: 2,
			api: { startRateLimit: { window: 60_000, limit: 100 } },
		});
	});
	afterAll(() => system?.stop());

	const token = () => system.token();
	test.each<
		[string, string, string, () => Promise<Record<string, string>>, string | undefined, number]
	>([
		["a path nothing serves", "GET", "/nonexistent", async () => ({}), undefined, 404],
		["a path nothing serves, HEAD", "HEAD", "/nonexistent", async () => ({}), undefined, 404],
		["an /api path no route has", "GET", "/api/nonexistent", async () => ({}), undefined, 404],
		[
			"a .well-known path no route has",
			"GET",
			"/.well-known/nothing",
			async () => ({}),
			undefined,
			404,
		],
		["an unknown run", "GET", "/api/runs/run-unknown", async () => ({}), undefined, 404],
		[
			"a write without a token",
			"POST",
			"/api/batcher/start",
			async () => ({ "Content-Type": "application/json" }),
			"{}",
			401,
		],
		[
			"a body that is not JSON",
			"POST",
			"/api/batcher/start",
			async () => ({
				"Content-Type": "application/json",
				Authorization: `Bearer ${await token()}`,
			}),
			"{not json",
			400,
		],
		[
			"a body of the wrong media type",
			"POST",
			"/api/batcher/start",
			async () => ({
				"Content-Type": "text/plain",
				Authorization: `Bearer ${await token()}`,
			}),
			"batchSize=10",
			415,
		],
		[
			"a body too large",
			"POST",
			"/api/batcher/start",
			async () => ({
				"Content-Type": "application/json",
				Authorization: `Bearer ${await token()}`,
			}),
			JSON.stringify({ batchSize: 10, pad: "x".repeat(64 * 1024) }),
			413,
		],
		["the liveness probe", "GET", "/health/live", async () => ({}), undefined, 200],
		["the JWKS", "GET", "/.well-known/jwks.json", async () => ({}), undefined, 200],
	])("%s: %s %s", async (_, method, urlPath, headers, body, status) => {
		const answer = await send(system, method, urlPath, { headers: await headers(), body });
		expect(answer.status).toBe(status);
		expect(answer.headers["content-security-policy"]).toMatch(CSP);
		expect(answer.headers["x-content-type-options"]).toBe("nosniff");
	});

	test("a folder without its slash: the redirect has a CSP and nosniff too", async () => {
		const answer = await send(system, "GET", "/docs");
		expect(answer.status).toBe(301);
		expect(answer.headers["content-security-policy"]).toMatch(/default-src '(self|none)'/);
		expect(answer.headers["x-content-type-options"]).toBe("nosniff");
	});

	test("a request Node cannot parse: 400 with the headers, then the connection closes", async () => {
		const { port } = new URL(system.baseUrl);
		const raw = await new Promise<string>((resolve, reject) => {
			const socket = net.connect(Number(port), "127.0.0.1", () =>
				socket.write("GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n"),
			);
			let text = "";
			socket.on("data", (chunk) => (text += chunk));
			socket.on("close", () => resolve(text));
			socket.on("error", reject);
		});
		expect(raw).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
		expect(raw).toMatch(
			/\r\nContent-Security-Policy: default-src 'self'.*frame-ancestors 'none'\r\n/,
		);
		expect(raw).toMatch(/\r\nX-Content-Type-Options: nosniff\r\n/);
	});

	test("the same on a kept-alive connection after a complete answer", async () => {
		const { port } = new URL(system.baseUrl);
		const raw = await new Promise<string>((resolve, reject) => {
			const socket = net.connect(Number(port), "127.0.0.1", () =>
				socket.write("GET /nonexistent HTTP/1.1\r\nHost: x\r\n\r\n"),
			);
			let text = "";
			let second = false;
			socket.on("data", (chunk) => {
				text += chunk;
				// The 404's JSON body has arrived (whole, or its last chunk): now a request Node cannot parse.
				if (!second && /(\}|\r\n0\r\n\r\n)$/.test(text)) {
					second = true;
					socket.write("GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n");
				}
			});
			socket.on("close", () => resolve(text));
			socket.on("error", reject);
		});
		const answers = raw.split(/(?=HTTP\/1\.1 )/);
		expect(answers.map((answer) => answer.split("\r\n")[0])).toEqual([
			"HTTP/1.1 404 Not Found",
			"HTTP/1.1 400 Bad Request",
		]);
		for (const answer of answers)
			expect(answer).toMatch(
				/\r\nContent-Security-Policy: default-src 'self'.*\r\nX-Content-Type-Options: nosniff\r\n/,
			);
	});
});

describe("webhook registration refuses every address delivery refuses", () => {
	let system: ApiSystem;
	beforeAll(async () => {
		system = await startApiSystem({
			records: 30,
			keys: 2,
			api: { startRateLimit: { window: 60_000, limit: 100 } },
		});
	});
	afterAll(() => system?.stop());

	test.each([
		["a loopback name, upper case, fully qualified", "http://LOCALHOST./hook"],
		["the /etc/hosts alias of loopback", "http://localhost.localdomain/hook"],
		["a name under .localhost, fully qualified", "http://api.localhost./hook"],
		["IPv4-compatible loopback", "http://[::127.0.0.1]/hook"],
		["IPv4-translated loopback", "http://[::ffff:0:7f00:1]/hook"],
		["IPv4-mapped private, in hex", "http://[::ffff:a00:5]/hook"],
		["site-local IPv6", "http://[fec0::1]/hook"],
		["link-local IPv6", "http://[fe80::1]/hook"],
		["the unspecified IPv6 address", "http://[::]/hook"],
		["NAT64 of a private address", "http://[64:ff9b::a00:1]/hook"],
		["6to4 of loopback", "http://[2002:7f00:1::1]/hook"],
		["this network (0)", "http://0/hook"],
	])(
		"%s (%s): 422 naming callbackUrl at registration, refused at delivery",
		async (_, callbackUrl) => {
			const before = await request(system.baseUrl, "GET", "/api/runs");
			const refused = await request(system.baseUrl, "POST", "/api/batcher/start", {
				body: { batchSize: 10, callbackUrl },
				token: await system.token(),
			});
			expect(refused.status).toBe(422);
			expect(refused.body).toMatchObject({
				type: "INVALID_CALLBACK_URL",
				data: { field: "callbackUrl" },
				message: expect.stringMatching(
					/^callbackUrl points at a loopback or private address .*WEBHOOK_ALLOW_PRIVATE=true/,
				),
			});
			// Nothing started.
			expect((await request(system.baseUrl, "GET", "/api/runs")).body).toEqual(before.body);
			// Delivery refuses the same URL before connecting.
			await expect(
				postJson(
					callbackUrl,
					"{}",
					{},
					{ timeoutMs: 2_000, allowPrivate: false, maxResponseBytes: 1024 },
				),
			).rejects.toBeInstanceOf(ForbiddenTargetError);
			// With WEBHOOK_ALLOW_PRIVATE=true, as delivery, registration lets it through.
			expect(await checkWebhookTarget(callbackUrl, true)).toBeNull();
		},
	);

	test("a name is resolved at registration as delivery resolves it: a private answer is refused, no answer is left to delivery", async () => {
		const answers =
			(...addresses: string[]) =>
			async () =>
				addresses.map((address) => ({ address, family: net.isIP(address) }));
		expect(
			await checkWebhookTarget(
				"https://hooks.example.test/run",
				false,
				answers("93.184.215.14", "10.0.0.7"),
			),
		).toBe(
			"callbackUrl points at a loopback or private address (hooks.example.test resolves to 10.0.0.7); set WEBHOOK_ALLOW_PRIVATE=true to allow it",
		);
		expect(
			await checkWebhookTarget(
				"https://hooks.example.test/run",
				false,
				answers("::ffff:169.254.169.254"),
			),
		).toMatch(/resolves to ::ffff:169\.254\.169\.254/);
		expect(
			await checkWebhookTarget(
				"https://hooks.example.test/run",
				false,
				answers("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"),
			),
		).toBeNull();
		expect(
			await checkWebhookTarget("https://hooks.example.test/run", false, () =>
				Promise.reject(
					Object.assign(new Error("getaddrinfo ENOTFOUND"), { code: "ENOTFOUND" }),
				),
			),
		).toBeNull();
		const started = Date.now();
		expect(
			await checkWebhookTarget(
				"https://hooks.example.test/run",
				false,
				() => new Promise(() => undefined),
				100,
			),
		).toBeNull();
		expect(Date.now() - started).toBeLessThan(2_000);
	});
});

/** Every folder and file under `dir` (itself included) with its permission bits, as "0700". */
function modes(dir: string): Record<string, string> {
	const found: Record<string, string> = {
		".": `0${(fs.statSync(dir).mode & 0o7777).toString(8)}`,
	};
	const walk = (folder: string) => {
		for (const entry of fs.readdirSync(folder, { withFileTypes: true })) {
			const full = path.join(folder, entry.name);
			found[path.relative(dir, full)] = `0${(fs.lstatSync(full).mode & 0o7777).toString(8)}`;
			if (entry.isDirectory()) walk(full);
		}
	};
	walk(dir);
	return found;
}

/** The entries of `found` whose mode is not the private one (0700 folders, 0600 files). */
function exposed(dir: string, found: Record<string, string>): Record<string, string> {
	return Object.fromEntries(
		Object.entries(found).filter(
			([name, mode]) =>
				mode !== (fs.lstatSync(path.join(dir, name)).isDirectory() ? "0700" : "0600"),
		),
	);
}

describe("DATA_DIR is 0700 and every file in it 0600", () => {
	const dirs: string[] = [];
	const tempDir = (prefix: string) => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
		dirs.push(dir);
		return dir;
	};
	afterAll(() => {
		for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
	});

	test("with umask 0: a 0755 DATA_DIR is tightened; the stores (with -wal and -shm), keys, auth.secret and api-keys.json are 0600, running and after a restart over files an earlier version left 0644", async () => {
		const dir = tempDir("data-modes-");
		fs.chmodSync(dir, 0o755);
		const umask = process.umask(0);
		let system: ApiSystem | null = null;
		try {
			system = await startApiSystem({
				records: 40,
				keys: 2,
				dataDir: dir,
				api: { startRateLimit: { window: 60_000, limit: 100 } },
			});
			const completion = system.nextCompletion();
			expect(
				(
					await request(system.baseUrl, "POST", "/api/batcher/start", {
						body: { batchSize: 10 },
						token: await system.token(),
					})
				).status,
			).toBe(202);
			await completion;
			new ApiKeyFile(path.join(dir, "api-keys.json")).create("ci-job", ["runs:write"]);
			expect((await loadAuthConfig({}, dir)).key).toMatchObject({
				source: "file",
				file: path.join(dir, "auth.secret"),
			});

			const running = modes(dir);
			expect(Object.keys(running)).toEqual(
				expect.arrayContaining([
					"records.sqlite",
					"records.sqlite-wal",
					"records.sqlite-shm",
					"records.sqlite.lock",
					"keyring.sqlite",
					"batcher.sqlite",
					"webhook-key.json",
					"auth.secret",
					"api-keys.json",
				]),
			);
			expect(exposed(dir, running)).toEqual({});
			await system.stop();
			system = null;
			expect(exposed(dir, modes(dir))).toEqual({});

			// As an earlier version left it: the folder 0755, every file 0644.
			fs.chmodSync(dir, 0o755);
			for (const name of Object.keys(modes(dir)))
				if (name !== "." && fs.statSync(path.join(dir, name)).isFile())
					fs.chmodSync(path.join(dir, name), 0o644);
			system = await startApiSystem({ records: 40, keys: 2, dataDir: dir });
			const reopened = modes(dir);
			expect(reopened["."]).toBe("0700");
			for (const store of ["records", "keyring", "batcher"])
				for (const suffix of ["", "-wal", "-shm", ".lock"])
					if (reopened[`${store}.sqlite${suffix}`])
						expect({
							[`${store}.sqlite${suffix}`]: reopened[`${store}.sqlite${suffix}`],
						}).toEqual({ [`${store}.sqlite${suffix}`]: "0600" });
		} finally {
			await system?.stop();
			process.umask(umask);
		}
	});

	test("an existing 0755 folder is tightened to 0700 and said so once; a missing one is made 0700", () => {
		const dir = tempDir("data-tighten-");
		fs.chmodSync(dir, 0o755);
		const lines: string[] = [];
		ensurePrivateDir(dir, (line) => lines.push(line));
		ensurePrivateDir(dir, (line) => lines.push(line));
		expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
		expect(lines).toEqual([
			`DATA_DIR ${dir} was mode 0755, open to other users: tightened to 0700`,
		]);

		const umask = process.umask(0);
		try {
			const fresh = path.join(dir, "fresh", "data");
			ensurePrivateDir(fresh, (line) => lines.push(line));
			expect(fs.statSync(fresh).mode & 0o777).toBe(0o700);
			expect(lines).toHaveLength(1);
		} finally {
			process.umask(umask);
		}
	});

	test("the cluster launcher's role logs: a new one is 0600 whatever the umask, an existing 0644 one becomes 0600", async () => {
		const dir = tempDir("launcher-logs-");
		const umask = process.umask(0);
		try {
			const fresh = path.join(dir, "keyring.log");
			const old = path.join(dir, "main.log");
			fs.writeFileSync(old, "--- an earlier run\n", { mode: 0o644 });
			fs.chmodSync(old, 0o644);
			for (const file of [fresh, old]) {
				const log = privateAppendStream(file);
				log.write("a line\n");
				await new Promise<void>((resolve) => log.end(resolve));
				expect({ file: path.basename(file), mode: fs.statSync(file).mode & 0o777 }).toEqual(
					{ file: path.basename(file), mode: 0o600 },
				);
			}
			expect(fs.readFileSync(old, "utf8")).toBe("--- an earlier run\na line\n");
		} finally {
			process.umask(umask);
		}
	});
});
