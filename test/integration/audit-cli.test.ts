/** `npm run audit` and `npm run export` end to end: over NATS against a live node, and on the embedded store. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startNatsServer, type NatsServer } from "../../src/cluster/nats-server";
import { runCli } from "../support/cli";
import { stopBroker } from "../support/broker";
import { runToCompletion, startSystem, type TestSystem } from "../support/system";

/** node:sqlite's ExperimentalWarning is Node's to print: kept off stderr here as the npm scripts should. */
const QUIET = {
	NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --disable-warning=ExperimentalWarning`,
};

describe("audit and export over NATS on a default nats-server (1 MB messages)", () => {
	let nats: NatsServer;
	let system: TestSystem;
	const out = fs.mkdtempSync(path.join(os.tmpdir(), "signing-export-"));

	beforeAll(async () => {
		nats = await startNatsServer();
		// 12,000 signatures are about 4 MB: the CLIs must page them in messages that fit.
		system = await startSystem({
			records: 12_000,
			keys: 8,
			env: { TRANSPORTER: nats.url, NAMESPACE: "audit-cli" },
		});
		await runToCompletion(system, 400);
	});
	afterAll(async () => {
		await stopBroker(system?.broker);
		await nats?.stop();
		fs.rmSync(out, { recursive: true, force: true });
	});

	test("npm run audit joins the cluster, passes and exits 0", async () => {
		const result = await runCli("audit.js", [], {
			TRANSPORTER: nats.url,
			NAMESPACE: "audit-cli",
			...QUIET,
		});
		expect(result.stderr).toBe("");
		expect(result.code).toBe(0);
		expect(result.stdout).toMatch(/one-signature-per-record\s+PASS/);
	});

	test("npm run export writes every record and signature, and the export audits clean", async () => {
		const exported = await runCli("export.js", ["--out", out], {
			TRANSPORTER: nats.url,
			NAMESPACE: "audit-cli",
			...QUIET,
		});
		expect(exported.code).toBe(0);
		const lines = (file: string) =>
			fs.readFileSync(path.join(out, file), "utf8").split("\n").filter(Boolean).length;
		expect(lines("records.jsonl")).toBe(12_000);
		expect(lines("signatures.jsonl")).toBe(12_000);
		expect(lines("batches.jsonl")).toBe(30);
		const audited = await runCli("audit.js", ["--from", out], QUIET);
		expect(audited.code).toBe(0);
	});
});
