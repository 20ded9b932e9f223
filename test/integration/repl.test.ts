/**
 * The real Moleculer REPL in a child process (it reads process.stdin): `call batcher.start
 * --batchSize 300` as the card writes it (docs/design.md §1.2, §11.2), the custom `progress` command,
 * and a follow run (`--follow`) signing a record the REPL's `submit` adds.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startCommand, stopAllCommands } from "../support/command";

const ROOT = path.join(__dirname, "../..");

/** Loads the TypeScript sources through the compiler's transpiler (no build needed), starts a small system and its REPL. */
const CHILD = `
const fs = require("fs");
const ts = require("typescript");
require.extensions[".ts"] = (module, filename) => {
	const { outputText } = ts.transpileModule(fs.readFileSync(filename, "utf8"), { fileName: filename, compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } });
	module._compile(outputText, filename);
};
const { credentialSettings, loadConfig } = require("./src/config.ts");
const { createSystem } = require("./src/system.ts");
const { replCommands } = require("./src/broker/repl-commands.ts");
const { loadCredential } = require("./src/identity/credential.ts");
const config = loadConfig({ RECORDS: "900", KEYS: "3", DATA_DIR: "" });
const broker = createSystem(config, { logLevel: false });
// What src/broker/broker-options.ts would carry: replOptions.customCommands, \`submit\` with the batcher's credential.
broker.options.replOptions = { customCommands: replCommands(undefined, () => loadCredential(credentialSettings(config, "batcher"))) };
broker.start().then(() => { process.stdout.write("READY\\n"); broker.repl(); });
`;

describe("REPL", () => {
	let child: ChildProcessWithoutNullStreams;
	let output = "";
	let home: string;

	const waitForOutput = (pattern: RegExp, timeoutMs = 20_000) =>
		new Promise<RegExpMatchArray>((resolve, reject) => {
			const deadline = setTimeout(
				() => reject(new Error(`no ${pattern} in REPL output:\n${output}`)),
				timeoutMs,
			);
			const check = () => {
				const match = output.match(pattern);
				if (!match) return;
				clearTimeout(deadline);
				child.stdout.off("data", check);
				resolve(match);
			};
			child.stdout.on("data", check);
			check();
		});

	beforeAll(async () => {
		home = fs.mkdtempSync(path.join(os.tmpdir(), "repl-home-"));
		// HOME: the REPL keeps its history there.
		child = spawn(process.execPath, ["-e", CHILD], {
			cwd: ROOT,
			env: { ...process.env, HOME: home, NO_COLOR: "1", FORCE_COLOR: "0" },
		});
		child.stdout.setEncoding("utf8");
		// util.inspect colours the replies whatever NO_COLOR says: strip the escapes.
		const collect = (chunk: Buffer | string) =>
			// eslint-disable-next-line no-control-regex -- ESC starts the colour escapes this strips
			(output += String(chunk).replace(/\x1b\[[0-9;]*m/g, ""));
		child.stdout.on("data", collect);
		child.stderr.on("data", collect);
		await waitForOutput(/READY/);
	});
	afterAll(async () => {
		if (child && child.exitCode === null) {
			const exited = new Promise((resolve) => child.once("exit", resolve));
			child.kill("SIGTERM");
			await exited;
		}
		fs.rmSync(home, { recursive: true, force: true });
	});

	test("call batcher.start --batchSize 300 starts a run with batch size 300; progress follows it to the end; with --follow a follow run signs the record `submit` adds, and cancel ends it", async () => {
		child.stdin.write("call batcher.start --batchSize 300\n");
		const [, runId] = await waitForOutput(/runId: '(run-[^']+)'/);
		expect(output).toContain("Call 'batcher.start' with params: { batchSize: 300 }");
		expect(output).toMatch(/batchSize: 300,\s+status: 'running'/);

		child.stdin.write("progress --interval 100\n");
		await waitForOutput(new RegExp(`${runId} completed: 100\\.0% 900/900 records`));

		child.stdin.write(`call batcher.get --runId ${runId}\n`);
		await waitForOutput(/status: 'completed'/);

		// `cancel` with nothing running says so.
		child.stdin.write("cancel\n");
		await waitForOutput(
			new RegExp(
				`cancel: Run ${runId} is not running \\(it is completed\\): nothing to cancel`,
			),
		);

		// A follow run, as the issue writes it; a record submitted from the REPL is signed as it arrives.
		child.stdin.write("call batcher.start --batchSize 300 --follow\n");
		await waitForOutput(/batchSize: 300,\s+status: 'running',[\s\S]*follow: true/);
		child.stdin.write("submit order-1 hello --as alice\n");
		await waitForOutput(/Record order-1 stored; its signature: call records.get --id order-1/);
		await new Promise((resolve) => setTimeout(resolve, 1_000));
		child.stdin.write("call records.get --id order-1\n");
		await waitForOutput(/submittedBy: 'alice'[\s\S]*keyId: 'key-/);
		child.stdin.write("cancel\n");
		await waitForOutput(/Run run-\S+ cancelled: its batches in flight finish/);

		// Ctrl+D: the REPL stops the broker and exits cleanly.
		const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
		child.stdin.end();
		expect(await exited).toBe(0);
	});
});

describe("npm run repl on its own store (every service in the REPL's process)", () => {
	const dirs: string[] = [];
	afterAll(async () => {
		await stopAllCommands();
		for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
	});

	test("a refusal prints its message without a stack; `exit` typed and the input closed stops the broker once: no error, exit code 0", async () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "repl-own-"));
		dirs.push(dir);
		// --ignore-scripts: not the build before it (npm test has built).
		const repl = startCommand("npm", ["run", "--ignore-scripts", "--silent", "repl"], {
			cwd: ROOT,
			env: {
				...process.env,
				HOME: dir,
				DATA_DIR: path.join(dir, "data"),
				TRANSPORTER: "",
				MONGO_URI: "",
				SERVICES: "",
				PORT: "0",
				HEALTH_PORT: "0",
				METRICS_PORT: "0",
				RECORDS: "900",
				KEYS: "3",
				LOG_LEVEL: "info",
			},
			stdin: true,
		});
		await repl.waitFor(/ServiceBroker with \d+ service\(s\) started successfully/, 90_000);
		// A refusal reads as one: its message and data, no stack trace.
		repl.send("call batcher.start --batchSize 0");
		await repl.waitFor(/Data: .*batchSize/);
		expect(repl.output()).toContain(
			"InvalidBatchSizeError: batchSize must be an integer from 1 to 100000, got 0",
		);
		expect(repl.output()).not.toMatch(/\n\s+at /);
		repl.send("call batcher.start --batchSize 300");
		const runId = (await repl.waitFor(/runId: \S*'(run-[\w-]+)'/))[1];
		await repl.waitFor(new RegExp(`Run ${runId} completed`), 60_000);
		// What a user does, or a script piping commands in: `exit`, then the input ends. The REPL
		// stops the broker for each.
		repl.send("exit");
		repl.child.stdin!.end();
		expect(await repl.exited).toBe(0);
		expect(repl.output()).toMatch(/ServiceBroker is stopped\. Good bye\./);
		expect(
			repl.output().match(/.*(Unable to stop|\] ERROR |finalized).*/)?.[0] ?? null,
		).toBeNull();
	}, 180_000);
});
