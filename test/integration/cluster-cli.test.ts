/** `npm run cluster`: the whole job across processes over a local nats-server, like `npm start`. */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { NODE, ROOT, runCli } from "../support/cli";
import { startCommand, stopAllCommands } from "../support/command";

test("npm run cluster signs every record across a keyring, a main node and two signers, audits, and exits 0; run again it signs nothing", async () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-cluster-cli-"));
	try {
		const env = { DATA_DIR: dataDir, RECORDS: "3000", KEYS: "5" };
		const first = await runCli("cluster.js", ["--signers", "2", "--batch-size", "100"], env);
		expect(first.stdout).toMatch(/signer-2 +pid \d+ +SERVICES=signer/);
		expect(first.stdout).toMatch(
			/Run run-\S+: batch size 100, 3000 of 3000 records to sign over 2 signer process\(es\)/,
		);
		expect(first.stdout).toMatch(/per signer +signer-1 \d+, signer-2 \d+ batches/);
		expect(first.stdout).toContain("Audit PASSED: 3000/3000 records signed, 0 violations");
		expect(first.code).toBe(0);
		// One DATA_DIR, a store file per owning service, as npm start keeps them.
		const files = fs
			.readdirSync(dataDir)
			.filter((file) => !file.endsWith("-wal") && !file.endsWith("-shm"));
		// signer.key and batcher.key: the signers' and the batcher's credentials, made and enrolled by the cluster itself
		// (mode 0600, like master.key); keyring.pub: the keyring's public key, which records checks lease tokens with;
		// signature-log.key and lease-log.key: the keys of records' and the keyring's transparency logs;
		// records.sqlite.lock and batcher.sqlite.lock: their one writer's locks (src/store/writer-lock.ts).
		expect(files.sort()).toEqual([
			"batcher.key",
			"batcher.sqlite",
			"batcher.sqlite.lock",
			"cluster",
			"keyring.pub",
			"keyring.sqlite",
			"lease-log.key",
			"master.key",
			"records.sqlite",
			"records.sqlite.lock",
			"signature-log.key",
			"signer.key",
		]);
		// The transparency logs' keys, made on first start (docs/design.md §8.4), 0600 like the rest.
		for (const file of [
			"signer.key",
			"batcher.key",
			"keyring.pub",
			"signature-log.key",
			"lease-log.key",
		])
			expect(fs.statSync(path.join(dataDir, file)).mode & 0o777).toBe(0o600);

		// With no cluster running, the same commands as after npm start read those stores.
		const audit = await runCli("audit.js", [], env);
		expect(audit.stdout).toContain("3000 records, 3000 signatures");
		expect(audit.stdout).toContain("Audit PASSED: every rule holds");
		expect(audit.code).toBe(0);
		const out = path.join(dataDir, "export");
		const exported = await runCli("export.js", ["--out", out], env);
		expect(exported.stdout).toMatch(/Exported .* 3000 records, 3000 signatures/);
		expect(exported.code).toBe(0);
		expect(
			fs.readFileSync(path.join(out, "signatures.jsonl"), "utf8").trim().split("\n"),
		).toHaveLength(3000);
		fs.rmSync(out, { recursive: true });

		const again = await runCli("cluster.js", ["--signers", "1"], env);
		expect(again.stdout).toMatch(/0 of 3000 records to sign/);
		expect(again.stdout).toContain("Audit PASSED: 3000/3000 records signed, 0 violations");
		expect(again.code).toBe(0);
	} finally {
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
});

test("npm run cluster refuses a bad flag with its usage, before starting anything", async () => {
	const result = await runCli("cluster.js", ["--signers", "0"], {
		DATA_DIR: "/nonexistent/cluster-should-not-be-created",
	});
	expect(result.code).toBe(2);
	expect(result.stderr).toMatch(/--signers must be an integer from 1 to 64, got "0"/);
	expect(result.stderr).toContain("Usage: npm run cluster");
	expect(fs.existsSync("/nonexistent/cluster-should-not-be-created")).toBe(false);
});

test("npm run cluster --keep leaves the cluster running for a REPL, and a Ctrl-C in its terminal stops every node before the nats-server: no node logs an error, no process is left", async () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-cluster-keep-"));
	try {
		// Its own process group, and Ctrl-C sent to the whole group: what a terminal does.
		const cluster = startCommand(
			NODE,
			[path.join(ROOT, "dist/src/cli/cluster.js"), "--signers", "2", "--keep"],
			{
				cwd: ROOT,
				env: {
					...process.env,
					DATA_DIR: dataDir,
					RECORDS: "900",
					KEYS: "3",
					TRANSPORTER: "",
					MONGO_URI: "",
				},
			},
		);
		await cluster.waitFor(/The cluster keeps running; Ctrl-C stops it/, 120_000);
		expect(cluster.output()).toContain("Audit PASSED: 900/900 records signed, 0 violations");
		const port = Number(
			(await cluster.waitFor(/@127\.0\.0\.1:(\d+) NAMESPACE=signing npm run repl/))[1],
		);
		await cluster.interrupt();
		expect(await cluster.exited).toBe(0);
		expect(cluster.output()).toContain("SIGINT: stopping the cluster...");
		// The nats-server lived until the nodes had left: none lost its connection.
		expect(cluster.output().match(/.*(ERROR|DISCONNECT).*/)?.[0] ?? null).toBeNull();
		// The nodes are gone, and the server with them.
		const pids = [...cluster.output().matchAll(/ pid (\d+) +SERVICES=/g)].map((m) =>
			Number(m[1]),
		);
		expect(pids).toHaveLength(4);
		for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
		await expect(
			new Promise((resolve, reject) =>
				net.connect(port, "127.0.0.1").once("connect", resolve).once("error", reject),
			),
		).rejects.toMatchObject({ code: "ECONNREFUSED" });
	} finally {
		await stopAllCommands();
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
}, 180_000);
