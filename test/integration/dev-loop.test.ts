/**
 * The Moleculer developer's loop on the TypeScript sources: `npm run dev` (moleculer-runner
 * --hot --repl on services/) and the card's (docs/design.md §1.2) `moleculer-runner services` from the
 * project root. Each runs in its own process on a copy of the sources, so editing a service
 * file for the hot reload touches nothing of the checkout.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT } from "../support/cli";
import { until } from "../support/cluster";
import { startCommand, stopAllCommands } from "../support/command";
import { request, TEST_SECRET } from "../support/http";
import { issueToken, loadAuthConfig } from "../../src/api/auth";

const copies: string[] = [];

/** The project's sources and configuration in a temporary folder, sharing node_modules. */
function projectCopy(): string {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dev-loop-"));
	copies.push(dir);
	for (const entry of [
		"services",
		"mixins",
		"src",
		"public",
		"moleculer.config.ts",
		"moleculer.config.js",
		"package.json",
		"tsconfig.json",
	])
		fs.cpSync(path.join(ROOT, entry), path.join(dir, entry), { recursive: true });
	fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"), "dir");
	return dir;
}

/** `file args` in the copy `cwd`, on its own store, no ports set. */
function start(
	file: string,
	args: string[],
	cwd: string,
	stdin = false,
	env: Record<string, string> = {},
) {
	return startCommand(file, args, {
		cwd,
		env: {
			...process.env,
			...env,
			TRANSPORTER: "",
			MONGO_URI: "",
			SERVICES: "",
			SERVICEDIR: "",
			PORT: "",
			HEALTH_PORT: "",
			METRICS_PORT: "",
			RECORDS: "1500",
			KEYS: "5",
			LOG_LEVEL: "info",
			DATA_DIR: path.join(cwd, "data"),
		},
		stdin,
	});
}

afterAll(async () => {
	await stopAllCommands();
	for (const dir of copies) fs.rmSync(dir, { recursive: true, force: true });
});

const API = /API on http:\/\/0\.0\.0\.0:(\d+)/;
const ALL_STARTED = /ServiceBroker with (\d+) service\(s\) started successfully/;

test("npm run dev: every service from the TypeScript sources with the REPL; editing a service file reloads it and the system keeps answering", async () => {
	const dir = projectCopy();
	const dev = start("npm", ["run", "--silent", "dev"], dir, true);
	await dev.waitFor(ALL_STARTED, 90_000);
	const port = (await dev.waitFor(API))[1];
	for (const name of ["records", "keyring", "batcher", "signer", "metrics", "api"])
		expect(dev.output()).toContain(`Service '${name}' started.`);
	// Loaded from the sources: no dist/ in the copy.
	expect(fs.existsSync(path.join(dir, "dist"))).toBe(false);

	// The REPL in the same terminal: the card's command.
	dev.send("call batcher.start --batchSize 300");
	const runId = (await dev.waitFor(/runId: \S*'(run-[\w-]+)'/))[1];
	const statusOf = async () =>
		(await (await fetch(`http://127.0.0.1:${port}/api/batcher/status`)).json()) as {
			active: boolean;
			run: { runId: string; status: string };
			progress: { signed: number };
		};
	await until(
		`run ${runId} of 1,500 records to end`,
		60_000,
		async () => !(await statusOf()).active,
		200,
	);
	expect(await statusOf()).toMatchObject({
		run: { runId, status: "completed" },
		progress: { signed: 1500 },
	});

	// Edit the records service, which owns a store: the runner reloads it, the store is kept
	// (the signatures are still there) and the API answers from it.
	const file = path.join(dir, "services", "records.service.ts");
	fs.appendFileSync(file, "\n// edited by the hot reload test\n");
	await dev.waitFor(/Service 'records' stopped[\s\S]*Service 'records' started/, 30_000);
	const record = await until(
		"GET /api/records to answer 200 from the reloaded records service",
		10_000,
		async () => {
			const response = await fetch(
				`http://127.0.0.1:${port}/api/records?signed=true&limit=1000`,
			);
			return response.status === 200 ? response : null;
		},
		200,
	);
	expect(((await record.json()) as { records: unknown[] }).records).toHaveLength(1000);
	expect(await statusOf()).toMatchObject({
		run: { runId, status: "completed" },
		progress: { records: 1500, signed: 1500 },
	});
	expect(await dev.interrupt()).toBe(true);
}, 180_000);

test("moleculer-runner services, as the card writes it, from the project root: every service starts from the sources, signs a run started through the gateway, and prints no warning", async () => {
	const dir = projectCopy();
	// As a user types it: none of the flags the npm scripts (and this test run) pass in NODE_OPTIONS.
	const runner = start(
		path.join(dir, "node_modules", ".bin", "moleculer-runner"),
		["services"],
		dir,
		false,
		{ NODE_OPTIONS: "", AUTH_SECRET: TEST_SECRET },
	);
	const services = Number((await runner.waitFor(ALL_STARTED, 90_000))[1]);
	expect(services).toBeGreaterThanOrEqual(7);
	const baseUrl = `http://127.0.0.1:${(await runner.waitFor(API))[1]}`;
	expect((await fetch(`${baseUrl}/health/ready`)).status).toBe(200);

	// A run: the signing threads, the signature log's hashing thread and the checkpointer all
	// start from the TypeScript sources.
	const auth = await loadAuthConfig({ AUTH_SECRET: TEST_SECRET }, "");
	const token = await issueToken(auth, { scope: "runs:write", ttl: 300, subject: "test" });
	const started = await request(baseUrl, "POST", "/api/batcher/start", {
		token,
		body: { batchSize: 300 },
	});
	expect(started.status).toBe(202);
	await until(
		"the run of 1,500 records to end",
		60_000,
		async () => !(await request(baseUrl, "GET", "/api/batcher/status")).body.active,
		200,
	);
	expect((await request(baseUrl, "GET", "/api/batcher/status")).body).toMatchObject({
		run: { runId: started.body.runId, status: "completed" },
		progress: { signed: 1500 },
	});
	expect(await runner.interrupt()).toBe(true);
	// node:sqlite's ExperimentalWarning, MODULE_TYPELESS_PACKAGE_JSON from the worker threads'
	// sources: moleculer.config.js and src/worker-threads.ts keep them off, as the npm scripts do.
	expect(runner.output()).not.toMatch(/Warning/);
}, 120_000);

test("moleculer-runner with no services named, or a folder without services, fails with the working command instead of an empty broker", async () => {
	const dir = projectCopy();
	const bare = start(path.join(dir, "node_modules", ".bin", "moleculer-runner"), [], dir);
	expect(await bare.exited).toBe(2);
	expect(bare.output()).toContain(
		"Name the services to run: npx moleculer-runner services (every service), or npm run dev (with hot reload and the REPL).",
	);
	const empty = start(
		path.join(dir, "node_modules", ".bin", "moleculer-runner"),
		["public"],
		dir,
	);
	expect(await empty.exited).toBe(2);
	expect(empty.output()).toContain(
		`No service files in ${path.join(dir, "public")}: the services are in ${path.join(dir, "services")} (npx moleculer-runner services).`,
	);
}, 60_000);
