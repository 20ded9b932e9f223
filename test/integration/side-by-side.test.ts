/**
 * Two commands side by side on one machine, as a user runs them in two terminals: the real
 * `npm run serve` and `npm run repl` (moleculer-runner), each a separate process, with the
 * ports left at their defaults (a taken default gives way with a warning; nothing crashes).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT, runCli } from "../support/cli";
import { until } from "../support/cluster";
import { startCommand, stopAllCommands, type Command } from "../support/command";

/** `npm run <script>` (built already), with this test's environment (small store, no ports set). */
function npmRun(script: string, env: Record<string, string>, stdin = false): Command {
	// --ignore-scripts: not the build before it (npm test has built; two builds at once would race).
	return startCommand("npm", ["run", "--ignore-scripts", "--silent", script], {
		cwd: ROOT,
		env: {
			...process.env,
			TRANSPORTER: "",
			MONGO_URI: "",
			SERVICES: "",
			PORT: "",
			HEALTH_PORT: "",
			METRICS_PORT: "",
			RECORDS: "2000",
			KEYS: "5",
			LOG_LEVEL: "info",
			...env,
		},
		stdin,
	});
}

const dirs: string[] = [];
function dataDir(): string {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "side-by-side-"));
	dirs.push(dir);
	return dir;
}

/** The serve.json a running serve wrote (its API address, its NATS for REPLs). */
const serveFile = (dir: string) =>
	JSON.parse(fs.readFileSync(path.join(dir, "serve.json"), "utf8")) as {
		pid: number;
		api: string;
		nats: string;
	};
const SERVE_READY = /A REPL can join this process/;

afterAll(async () => {
	await stopAllCommands();
	for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

test("npm run repl next to npm run serve joins it over NATS; call batcher.start --batchSize 300 signs the serve's store", async () => {
	const dir = dataDir();
	const serve = npmRun("serve", { DATA_DIR: dir });
	await serve.waitFor(SERVE_READY);
	const { api, pid } = serveFile(dir);
	expect(() => process.kill(pid, 0)).not.toThrow();
	expect(fs.statSync(path.join(dir, "serve.json")).mode & 0o777).toBe(0o600);

	const repl = npmRun("repl", { DATA_DIR: dir }, true);
	await repl.waitFor(
		/Joining npm run serve \(pid \d+, API http:\/\/127\.0\.0\.1:\d+\) over NATS at nats:\/\/ops:\*\*\*@127\.0\.0\.1:\d+, with no services of its own/,
	);
	await repl.waitFor(/ServiceBroker with 1 service\(s\) started/);
	repl.send("call batcher.start --batchSize 300");
	const runId = (await repl.waitFor(/runId: \S*'(run-[\w-]+)'/))[1];
	// The serve's own gateway reports the run the REPL started, completed over its store.
	type Status = {
		active: boolean;
		run: { runId: string; status: string; batchSize: number };
		progress: { records: number; signed: number };
	};
	const status = await until(
		`run ${runId} of 2,000 records to end, as the serve's gateway reports it`,
		60_000,
		async () => {
			const now = (await (await fetch(`${api}/api/batcher/status`)).json()) as Status;
			return !now.active && now.run?.runId === runId ? now : null;
		},
		200,
	);
	expect(status).toMatchObject({
		run: { runId, status: "completed", batchSize: 300 },
		progress: { records: 2000, signed: 2000 },
	});
	repl.send("exit");
	expect(await repl.interrupt()).toBe(true);
	// The REPL bound nothing and crashed on nothing.
	expect(repl.output().match(/.*(EADDRINUSE|Unhandled).*/)?.[0] ?? null).toBeNull();

	// npm run keys beside it asks its keyring over its NATS, as the README pairs them.
	const keys = await runCli("keys.js", ["list"], { DATA_DIR: dir, TRANSPORTER: "" });
	expect(keys.stderr).toMatch(
		/Asking the keyring of npm run serve \(pid \d+\) over NATS at nats:\/\/ops:\*\*\*@127\.0\.0\.1:\d+/,
	);
	expect(keys.stdout).toMatch(/^key-000 {2}active .*\n(.*\n)*5 key\(s\), 5 active/);
	expect(keys.code).toBe(0);

	expect(await serve.interrupt()).toBe(true);
	expect(fs.existsSync(path.join(dir, "serve.json"))).toBe(false);
}, 120_000);

test("a second npm run serve on the same DATA_DIR is refused by a store's lock, with its message; the first keeps serving", async () => {
	const dir = dataDir();
	const first = npmRun("serve", { DATA_DIR: dir });
	await first.waitFor(SERVE_READY);
	const { api } = serveFile(dir);

	const second = npmRun("serve", { DATA_DIR: dir });
	expect(await second.exited).not.toBe(0);
	// Whichever store it opens first: records' or the batcher's writer lock (src/store/writer-lock.ts),
	// or the keyring's role; each names the first serve's process.
	const pid = serveFile(dir).pid;
	expect(second.output()).toMatch(
		new RegExp(
			`The store \\S+(records|batcher)\\.sqlite is in use by another process \\(pid ${pid} on [^,]+, since [^)]+\\): one process writes a store|` +
				`The keyring store \\S+keyring\\.sqlite is in use by another keyring \\(pid ${pid} on [^,]+, node [^,]+, since [^,]+, its claim valid until [^)]+\\)\\. Two keyrings must never grant leases from one store`,
		),
	);
	expect(second.output()).not.toContain("Resuming run");
	// Its ports were taken: it gave way with warnings naming the settings, never an unhandled error.
	expect(second.output()).toMatch(/the default of (PORT|HEALTH_PORT|METRICS_PORT)\) is in use/);
	expect(second.output()).not.toMatch(/EADDRINUSE|Unhandled 'error'/);

	expect((await fetch(`${api}/health/ready`)).status).toBe(200);
	// serve.json still names the first.
	expect(serveFile(dir).api).toBe(api);
	expect(await first.interrupt()).toBe(true);
}, 120_000);

test("two npm run serve on two DATA_DIRs both run, each on its own ports and store", async () => {
	const [a, b] = [dataDir(), dataDir()];
	const first = npmRun("serve", { DATA_DIR: a });
	await first.waitFor(SERVE_READY);
	const second = npmRun("serve", { DATA_DIR: b });
	await second.waitFor(SERVE_READY);
	const [apiA, apiB] = [serveFile(a).api, serveFile(b).api];
	expect(apiA).not.toBe(apiB);
	for (const api of [apiA, apiB]) {
		expect((await fetch(`${api}/health/ready`)).status).toBe(200);
		expect(await (await fetch(`${api}/api/batcher/status`)).json()).toMatchObject({
			progress: { records: 2000, signed: 0 },
		});
	}
	expect(first.output() + second.output()).not.toMatch(/EADDRINUSE|Unhandled 'error'/);
	expect(await second.interrupt()).toBe(true);
	expect(await first.interrupt()).toBe(true);
}, 120_000);

test("a port the user set that is taken is a clear error naming the setting", async () => {
	const dir = dataDir();
	const first = npmRun("serve", { DATA_DIR: dir });
	await first.waitFor(SERVE_READY);
	const port = new URL(serveFile(dir).api).port;
	const second = npmRun("serve", { DATA_DIR: dataDir(), PORT: port, SERVE_NATS: "off" });
	expect(await second.exited).not.toBe(0);
	expect(second.output()).toContain(
		`PORT=${port}: the port is already in use, so the API gateway cannot listen there. Stop the other process, or set PORT to a free port (0 picks any).`,
	);
	expect(second.output()).not.toMatch(/Unhandled 'error'/);
	expect(await first.interrupt()).toBe(true);
}, 120_000);
