/**
 * One writing process per records and batcher store (src/store/writer-lock.ts): while a process
 * runs a follow run on a DATA_DIR, a second one on the same folder (a records and batcher node
 * by hand, or `npm start`) is refused before it writes anything, naming the first one's pid, and
 * the first one's run is left as it was. Killed with -9, the first one leaves no lock behind: the
 * next `npm start` takes the folder over and signs every record. Each is the build in its own
 * process; the 60 s bounds tell a refusal from a process that went on running.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { NODE, ROOT, runCli, type Finished } from "../support/cli";

const RECORDS = 400;

let dataDir: string;
let first: ChildProcess;
let runId: string;

/** The runs and batches in the batcher store, read as the audit reads it (read-only). */
function batcherState(): { runs: unknown[]; batches: number } {
	const db = new DatabaseSync(path.join(dataDir, "batcher.sqlite"), { readOnly: true });
	try {
		return {
			runs: db.prepare("SELECT runId, status, finishedAt FROM runs ORDER BY runId").all(),
			batches: Number(
				(db.prepare("SELECT count(*) AS n FROM batches").get() as { n: number }).n,
			),
		};
	} finally {
		db.close();
	}
}

/** Signatures stored so far, read-only. */
function signed(): number {
	const db = new DatabaseSync(path.join(dataDir, "records.sqlite"), { readOnly: true });
	try {
		return Number(
			(db.prepare("SELECT count(*) AS n FROM signatures").get() as { n: number }).n,
		);
	} finally {
		db.close();
	}
}

function finished(child: ChildProcess): Promise<Finished> {
	let stdout = "";
	let stderr = "";
	child.stdout!.on("data", (chunk) => (stdout += chunk));
	child.stderr!.on("data", (chunk) => (stderr += chunk));
	return new Promise((resolve) =>
		child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr })),
	);
}

beforeAll(async () => {
	dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "store-writer-"));
	// The first process: every service on the embedded store, a follow run going on.
	const script = `
		const { createSystem } = require(${JSON.stringify(path.join(ROOT, "dist/src/system.js"))});
		const { loadConfig } = require(${JSON.stringify(path.join(ROOT, "dist/src/config.js"))});
		const broker = createSystem(loadConfig({ RECORDS: "${RECORDS}", KEYS: "3", DATA_DIR: ${JSON.stringify(dataDir)} }), { logLevel: "warn" });
		broker.start()
			.then(() => broker.call("batcher.start", { batchSize: 50, follow: true }))
			.then((run) => process.stdout.write("READY " + run.runId + "\\n"));
		// The services' timers do not hold a process open: this one lives until it is killed.
		setInterval(() => {}, 1 << 30);`;
	first = spawn(NODE, ["--disable-warning=ExperimentalWarning", "-e", script], {
		cwd: ROOT,
		env: { ...process.env, TRANSPORTER: "", MONGO_URI: "" },
		stdio: ["ignore", "pipe", "inherit"],
	});
	runId = await new Promise<string>((resolve, reject) => {
		let out = "";
		first.stdout!.on("data", (chunk) => {
			out += chunk;
			const match = /READY (\S+)/.exec(out);
			if (match) resolve(match[1]);
		});
		first.on("exit", (code) => reject(new Error(`the first process exited (${code}): ${out}`)));
	});
	// Every record signed: the follow run waits for more, and its store stays as it is.
	while (signed() < RECORDS) await new Promise((resolve) => setTimeout(resolve, 200));
	let batches = -1;
	while (batches !== batcherState().batches) {
		batches = batcherState().batches;
		await new Promise((resolve) => setTimeout(resolve, 500));
	}
}, 60_000);

afterAll(() => {
	first?.kill("SIGKILL");
	fs.rmSync(dataDir, { recursive: true, force: true });
});

const inUseByFirst = () =>
	new RegExp(
		`is in use by another (process|keyring) \\(pid ${first.pid} on ${os.hostname().replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`,
	);

test("a records and batcher node by hand on the same DATA_DIR is refused, and the first run is left as it was", async () => {
	const before = batcherState();
	expect(before.runs).toEqual([{ runId, status: "running", finishedAt: null }]);
	const second = spawn(
		NODE,
		[
			"--disable-warning=DEP0174",
			"--disable-warning=ExperimentalWarning",
			path.join(ROOT, "node_modules/moleculer/bin/moleculer-runner.js"),
			"--config",
			"dist/moleculer.config.js",
		],
		{
			cwd: ROOT,
			env: {
				...process.env,
				SERVICES: "records,batcher",
				SERVICEDIR: "dist/services",
				TRANSPORTER: "",
				MONGO_URI: "",
				DATA_DIR: dataDir,
				PORT: "0",
				HEALTH_PORT: "0",
				METRICS_PORT: "0",
			},
			stdio: ["ignore", "pipe", "pipe"],
		},
	);
	const result = await finished(second);
	const output = result.stdout + result.stderr;
	expect(result.code).not.toBe(0);
	expect(output).toMatch(
		new RegExp(
			`The store ${dataDir}/(records|batcher)\\.sqlite is in use by another process \\(pid ${first.pid} `,
		),
	);
	expect(output).not.toContain("Resuming run");
	expect(batcherState()).toEqual(before);
}, 60_000);

test("npm start on the same DATA_DIR exits 2 naming the first process, and the first run is left as it was", async () => {
	const before = batcherState();
	const result = await runCli("start.js", [], { DATA_DIR: dataDir, RECORDS: String(RECORDS) });
	expect(result.code).toBe(2);
	expect(result.stderr).toMatch(inUseByFirst());
	expect(batcherState()).toEqual(before);
}, 60_000);

test("killed with -9, the first process leaves no lock: the next npm start takes the folder over and signs every record", async () => {
	first.kill("SIGKILL");
	await new Promise((resolve) => first.once("exit", resolve));
	const result = await runCli("start.js", [], { DATA_DIR: dataDir, RECORDS: String(RECORDS) });
	expect(result.stderr).not.toContain("in use");
	expect(result.stderr).toContain(`Found follow run ${runId} interrupted`);
	expect(result.code).toBe(0);
	expect(result.stdout).toContain("Audit PASSED");
	const { runs } = batcherState();
	// The follow run was ended by npm start (it never follows), then its own run completed.
	expect(runs).toHaveLength(2);
	expect(runs).toContainEqual(expect.objectContaining({ runId, status: "cancelled" }));
}, 120_000);
