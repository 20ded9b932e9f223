/**
 * A command told to join a NATS where nothing listens (src/broker/nats-reach.ts): `npm start`,
 * the REPL, `npm run keys`, the audit and `npm run cluster -- --transporter` each exit 2 with one
 * line naming the URL and nats-server, instead of retrying every 5 s for ever, and touch no
 * store. Each is the build in its own process, as a user runs it. The 60 s bound tells the fix
 * from the hang it replaces (a command that never ends), not a speed.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { NODE, ROOT, runCli, type Finished } from "../support/cli";

/** A port nothing listens on: one the OS gave out a moment ago, closed again. */
async function deadPort(): Promise<number> {
	const server = net.createServer();
	await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
	const { port } = server.address() as net.AddressInfo;
	await new Promise((resolve) => server.close(resolve));
	return port;
}

let dir: string;
let url: string;
beforeAll(async () => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "nats-unreachable-"));
	url = `nats://127.0.0.1:${await deadPort()}`;
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function expectNamesNats(result: Finished): void {
	expect(result.code).toBe(2);
	expect(result.stderr).toContain(`Cannot reach NATS at ${url}: nothing took a connection`);
	expect(result.stderr).toContain("Is nats-server running?");
	expect(result.stderr).toContain("apt-get install -y nats-server");
	// One line for the user, not a stack trace.
	expect(result.stderr).not.toMatch(/^\s+at /m);
}

const BOUND = 60_000;

test(
	"npm start exits 2 naming nats-server, and creates no store",
	async () => {
		const dataDir = path.join(dir, "start");
		const result = await runCli("start.js", ["--records", "10", "--keys", "2"], {
			TRANSPORTER: url,
			DATA_DIR: dataDir,
		});
		expectNamesNats(result);
		expect(result.stderr).toContain("or leave TRANSPORTER out");
		expect(fs.existsSync(path.join(dataDir, "records.sqlite"))).toBe(false);
	},
	BOUND,
);

test(
	"npm run keys -- list exits 2 naming nats-server",
	async () => {
		const result = await runCli("keys.js", ["list"], {
			TRANSPORTER: url,
			DATA_DIR: path.join(dir, "keys"),
		});
		expectNamesNats(result);
		expect(result.stderr).toContain("open the keyring's store here");
		// Not a misuse of the command: no usage after the line, and no credential made.
		expect(result.stderr).not.toContain("Usage:");
		expect(fs.existsSync(path.join(dir, "keys"))).toBe(false);
	},
	BOUND,
);

test(
	"npm run audit exits 2 naming nats-server",
	async () => {
		const result = await runCli("audit.js", [], {
			TRANSPORTER: url,
			DATA_DIR: path.join(dir, "audit"),
		});
		expectNamesNats(result);
	},
	BOUND,
);

test(
	"npm run cluster -- --transporter exits 2 naming nats-server, before starting any node",
	async () => {
		const dataDir = path.join(dir, "cluster");
		const result = await runCli(
			"cluster.js",
			["--transporter", url, "--records", "10", "--keys", "2", "--data-dir", dataDir],
			{},
		);
		expectNamesNats(result);
		expect(result.stderr).toContain("npm run cluster then starts its own");
		expect(fs.existsSync(path.join(dataDir, "cluster"))).toBe(false);
	},
	BOUND,
);

test(
	"npm run repl with TRANSPORTER exits 2 naming nats-server",
	async () => {
		// As `npm run repl` runs it: moleculer-runner --repl on the built config.
		const child = spawn(
			NODE,
			[
				"--disable-warning=DEP0174",
				"--disable-warning=ExperimentalWarning",
				path.join(ROOT, "node_modules/moleculer/bin/moleculer-runner.js"),
				"--repl",
				"--config",
				"dist/moleculer.config.js",
			],
			{
				cwd: ROOT,
				env: {
					...process.env,
					SERVICEDIR: "dist/services",
					TRANSPORTER: url,
					MONGO_URI: "",
					DATA_DIR: path.join(dir, "repl"),
					HOME: dir,
				},
				stdio: ["pipe", "pipe", "pipe"],
			},
		);
		let stdout = "";
		let stderr = "";
		child.stdout.on("data", (chunk) => (stdout += chunk));
		child.stderr.on("data", (chunk) => (stderr += chunk));
		const result = await new Promise<Finished>((resolve) =>
			child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr })),
		);
		expectNamesNats(result);
		expect(result.stderr).toContain("join an npm run serve");
	},
	BOUND,
);
