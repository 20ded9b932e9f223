/**
 * LOG_FORMAT in a running system: a small system in its own process (the build in dist/),
 * whose console is the log, read line by line: one JSON object per line with time, level,
 * node, service, message and the ids a message names, and no secret in either format.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const ROOT = path.join(__dirname, "../..");
const SECRETS = [
	"hunter2-nats-password",
	"s3cret-mongo",
	"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJlLWJ5dGVz",
	"rsk_abcdefghijkl_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
	"PRIVATE-D-MEMBER",
	"bWFzdGVyLWtleS1ieXRlcw==",
];

/** A small system in a child process (its console is the log), signing 600 records, logging lines with secrets in them. */
function runSystem(format: "json" | "text"): Promise<string> {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "log-format-"));
	const script = `
		const { loadConfig } = require("./dist/src/config");
		const { createSystem } = require("./dist/src/system");
		const { until } = require("./dist/src/cluster/launcher");
		const config = loadConfig({ RECORDS: "600", KEYS: "3", DATA_DIR: ${JSON.stringify(dataDir)}, LOG_FORMAT: ${JSON.stringify(format)}, LOG_LEVEL: "info" });
		const broker = createSystem(config, {});
		(async () => {
			await broker.start();
			const run = await broker.call("batcher.start", { batchSize: 100 });
			await until("run " + run.runId + " of 600 records to end", 30000, async () => (await broker.call("batcher.get", { runId: run.runId })).status !== "running", 50);
			const log = broker.getLogger("secrets-test");
			log.info("connecting to nats://api:${SECRETS[0]}@nats:4222 and mongodb://admin:${SECRETS[1]}@mongo:27017/signing");
			log.warn("a token ${SECRETS[2]} and an API key ${SECRETS[3]}");
			log.error("a private JWK", { kty: "OKP", crv: "Ed25519", x: "public-x", d: "${SECRETS[4]}" }, "KEYRING_MASTER_KEY=${SECRETS[5]}");
			log.warn("Batch " + run.runId + "-b000001 (attempt 1) ended without a reply; lease 0e8414ae-1b2c-4d5e-8f90-a1b2c3d4e5f6 was released");
			log.error(new Error("failed at nats://ops:${SECRETS[0]}@nats:4222"));
			await broker.stop();
		})().catch(err => { console.error(err); process.exit(1); });
	`;
	return new Promise((resolve, reject) => {
		const child = spawn(process.execPath, ["-e", script], {
			cwd: ROOT,
			env: {
				...process.env,
				NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --disable-warning=ExperimentalWarning`,
			},
		});
		let out = "";
		child.stdout.on("data", (chunk) => (out += chunk));
		child.stderr.on("data", (chunk) => (out += chunk));
		child.on("exit", (code) => {
			fs.rmSync(dataDir, { recursive: true, force: true });
			if (code === 0) resolve(out);
			else reject(new Error(`exit ${code}:\n${out}`));
		});
	});
}

test("LOG_FORMAT=json: every line is one JSON object with time, level, node, service and message, ids where they apply, and no secret", async () => {
	const out = await runSystem("json");
	const lines = out.split("\n").filter(Boolean);
	expect(lines.length).toBeGreaterThan(10);
	const entries = lines.map((line) => {
		try {
			return JSON.parse(line) as Record<string, unknown>;
		} catch {
			throw new Error(`not JSON: ${line}`);
		}
	});
	for (const entry of entries)
		expect(entry).toEqual(
			expect.objectContaining({
				time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
				level: expect.stringMatching(/^(trace|debug|info|warn|error|fatal)$/),
				node: expect.any(String),
				service: expect.any(String),
				message: expect.any(String),
			}),
		);
	expect(entries.find((e) => /^Starting run /.test(String(e.message)))).toMatchObject({
		service: "batcher",
		runId: expect.stringMatching(/^run-/),
	});
	expect(entries.find((e) => /ended without a reply/.test(String(e.message)))).toMatchObject({
		batchId: expect.stringMatching(/-b000001$/),
		runId: expect.stringMatching(/^run-/),
		leaseId: "0e8414ae-1b2c-4d5e-8f90-a1b2c3d4e5f6",
	});
	expect(entries.find((e) => e.error)).toMatchObject({
		level: "error",
		error: { name: "Error", message: "failed at nats://ops:***@nats:4222" },
	});
	for (const secret of SECRETS)
		expect({ secret, found: out.includes(secret) }).toEqual({ secret, found: false });
}, 60_000);

test("the text format masks the same secrets", async () => {
	const out = await runSystem("text");
	expect(out).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}Z\] INFO {2}BATCHER: Starting run run-/m);
	for (const secret of SECRETS)
		expect({ secret, found: out.includes(secret) }).toEqual({ secret, found: false });
}, 60_000);
