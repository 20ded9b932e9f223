/**
 * KEY_STORE=pkcs11 on a real SoftHSM token (docs/design.md §5.9), each test with a token of its
 * own in a temporary token directory (src/pkcs11/softhsm.ts): the keys are generated in the
 * token and never leave it, runs in one process and across processes sign in it and audit
 * clean, the token refuses to export a key, and a bad module, label or PIN stops the node with
 * a message naming the variable. Needs Debian's `softhsm2` (.ci/run installs it).
 */
import crypto from "node:crypto";
import { logVerifierKeys } from "../../src/cli/store";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { spawn } from "node:child_process";
import type { JWK } from "jose";
import { audit } from "../../src/audit/rules";
import { closeAfter, openStoreFiles } from "../../src/audit/audit-db";
import { createSoftHsmToken, findSoftHsm, type SoftHsmToken } from "../../src/pkcs11/softhsm";
import type { TokenKeyRef } from "../../src/pkcs11/token";
import { ServiceBroker, type Context, type Middleware } from "moleculer";
import { brokerOptions } from "../../src/broker/broker-options";
import { loadConfig } from "../../src/config";
import { Actions, Events, call, type RunCompletedEvent } from "../../src/contract";
import { storeFile } from "../../src/store/sqlite";
import { ALL_SERVICES, serviceSchema, settingsWith } from "../../src/system";
import { setRealEnv } from "../support/real-env";
import { NODE, ROOT, runCli, type Finished } from "../support/cli";
import type { ProbeAnswer } from "../support/token-probe";
import type { OpenerAnswer } from "../support/token-opener";

const softHsm = findSoftHsm();
if (!softHsm)
	test.skip("KEY_STORE=pkcs11: skipped, SoftHSM is not installed (apt-get install -y softhsm2)", () => {});
const withToken = softHsm ? describe : describe.skip;

/** A fresh token in a folder of its own, used by the processes the tests start. */
function freshToken(): { dir: string; token: SoftHsmToken } {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-pkcs11-"));
	return { dir, token: createSoftHsmToken(dir) };
}

/** A built script run with the project's Node, as a process of its own. */
function runScript(script: string, args: string[], env: Record<string, string>): Promise<Finished> {
	const child = spawn(NODE, [path.join(ROOT, script), ...args], {
		cwd: ROOT,
		env: { ...process.env, ...env },
		stdio: ["ignore", "pipe", "pipe"],
	});
	let stdout = "";
	let stderr = "";
	child.stdout.on("data", (chunk) => (stdout += chunk));
	child.stderr.on("data", (chunk) => (stderr += chunk));
	return new Promise((resolve) =>
		child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr })),
	);
}

/** Every stored signature checked with node:crypto against the JWKS: `<protected>.<payload>` under its key's `x`. */
function verifyAll(dataDir: string, jwks: JWK[]): number {
	const keys = new Map(
		jwks.map((jwk) => [
			jwk.kid,
			crypto.createPublicKey({ key: jwk as crypto.JsonWebKey, format: "jwk" }),
		]),
	);
	const db = new DatabaseSync(storeFile(dataDir, "records"), { readOnly: true });
	try {
		const rows = db
			.prepare(
				"SELECT s.recordId, s.keyId, s.jws, r.data FROM signatures s JOIN records r ON r.id = s.recordId",
			)
			.all() as Array<{ recordId: string; keyId: string; jws: string; data: string }>;
		let verified = 0;
		for (const row of rows) {
			const [header, , signature] = row.jws.split(".");
			const payload = Buffer.from(
				JSON.stringify({ id: row.recordId, data: row.data }),
			).toString("base64url");
			const ok = crypto.verify(
				null,
				Buffer.from(`${header}.${payload}`),
				keys.get(row.keyId)!,
				Buffer.from(signature, "base64url"),
			);
			if (ok) verified++;
		}
		return verified;
	} finally {
		db.close();
	}
}

/** The keys the keyring's store holds: what it keeps of each private key. */
function storedKeys(dataDir: string) {
	const db = new DatabaseSync(storeFile(dataDir, "keyring"), { readOnly: true });
	try {
		return db
			.prepare("SELECT keyId, sealedPrivateKey, tokenKey FROM keys ORDER BY keyId")
			.all() as Array<{
			keyId: string;
			sealedPrivateKey: string;
			tokenKey: string | null;
		}>;
	} finally {
		db.close();
	}
}

withToken("KEY_STORE=pkcs11 with a SoftHSM token", () => {
	let dir: string;
	let token: SoftHsmToken;

	beforeEach(() => ({ dir, token } = freshToken()));
	afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

	/** `npm start` on a fresh store, signing in the token, and the JWKS of its export. */
	async function startRun(records: number, keys: number) {
		const dataDir = path.join(dir, "data");
		const run = await runCli("start.js", ["--batch-size", "97"], {
			...token.env,
			DATA_DIR: dataDir,
			RECORDS: String(records),
			KEYS: String(keys),
			SIGNING_THREADS: "2",
		});
		const out = path.join(dir, "export");
		const exported = await runCli("export.js", ["--out", out], { DATA_DIR: dataDir });
		expect(exported.code).toBe(0);
		const jwks = (
			JSON.parse(fs.readFileSync(path.join(out, "jwks.json"), "utf8")) as { keys: JWK[] }
		).keys;
		return { dataDir, run, jwks };
	}

	test("npm start signs every record in the token: the audit passes, every signature verifies under the exported JWKS, and the store holds no private key", async () => {
		const { dataDir, run, jwks } = await startRun(2_000, 4);
		expect(run.stdout).toContain("Audit PASSED: 2000/2000 records signed, 0 violations");
		expect(run.code).toBe(0);

		// The logs' checkpoints open with the keys the run made in its DATA_DIR.
		const verdict = await closeAfter(openStoreFiles(dataDir), (db) =>
			audit(db, { logKeys: logVerifierKeys(loadConfig({ DATA_DIR: dataDir })) }),
		);
		expect(verdict.violations).toEqual([]);
		expect(verdict.ok).toBe(true);
		expect(jwks.map((jwk) => jwk.kid)).toEqual(["key-000", "key-001", "key-002", "key-003"]);
		expect(verifyAll(dataDir, jwks)).toBe(2_000);

		// The store keeps each key's reference in the token, and nothing sealed.
		const keys = storedKeys(dataDir);
		expect(keys.map((k) => k.sealedPrivateKey)).toEqual(["", "", "", ""]);
		for (const key of keys)
			expect(JSON.parse(key.tokenKey!)).toEqual({
				label: key.keyId,
				id: expect.stringMatching(/^[0-9a-f]{32}$/),
			});
		// No file of the store holds a private JWK member.
		for (const file of fs.readdirSync(dataDir).filter((f) => f.endsWith(".sqlite")))
			expect(fs.readFileSync(path.join(dataDir, file)).includes('"d":')).toBe(false);
	});

	test("npm run keys on a token keyring makes added keys in the token: the store keeps only their reference, a restarted keyring finds them there, and retiring one works as with software keys", async () => {
		const { dataDir, run } = await startRun(300, 2);
		expect(run.code).toBe(0);
		const env = { ...token.env, DATA_DIR: dataDir };
		const added = await runCli("keys.js", ["add", "--count", "1"], env);
		expect(added.stdout).toMatch(/granted next: key-002/);
		expect((await runCli("keys.js", ["retire", "--key", "key-000"], env)).code).toBe(0);
		const key = storedKeys(dataDir).find((k) => k.keyId === "key-002")!;
		expect(key.sealedPrivateKey).toBe("");
		expect(JSON.parse(key.tokenKey!)).toEqual({
			label: "key-002",
			id: expect.stringMatching(/^[0-9a-f]{32}$/),
		});
		// Opening the keyring again checks every key against the token: key-002 is there, and its public half matches.
		const listed = await runCli("keys.js", ["list"], env);
		expect(listed.code).toBe(0);
		expect(listed.stdout).toMatch(
			/key-000 {2}retired since .*\nkey-001 {2}active .*\nkey-002 {2}active {3}0 use/,
		);
	});

	test("npm run keys -- rotate-master on a token keyring seals again only its authority key (it has no sealed key): the public key stays and the keyring signs on under the new master key", async () => {
		const { dataDir, run } = await startRun(300, 2);
		expect(run.code).toBe(0);
		const env = { ...token.env, DATA_DIR: dataDir };
		const authority = async () =>
			(await runCli("signer.js", ["authority", "--json"], env)).stdout;
		const pub = await authority();
		const oldMaster = fs.readFileSync(path.join(dataDir, "master.key"), "utf8");
		const rotated = await runCli("keys.js", ["rotate-master"], env);
		expect(rotated.code).toBe(0);
		expect(rotated.stdout).toMatch(
			/: 0 sealed key\(s\) and the keyring's authority key are sealed/,
		);
		expect(fs.readFileSync(path.join(dataDir, "master.key"), "utf8")).not.toBe(oldMaster);
		expect(await authority()).toBe(pub);
		const again = await runCli("start.js", [], { ...env, RECORDS: "300", KEYS: "2" });
		expect(again.code).toBe(0);
		expect(storedKeys(dataDir).map((k) => k.sealedPrivateKey)).toEqual(["", ""]);
	});

	test("on the bus a lease names a token key and nothing else (every keyring.acquire answer carries its label and CKA_ID, no sealed key, no transport key)", async () => {
		// In this process: SoftHSM reads SOFTHSM2_CONF from the real environment.
		await setRealEnv("SOFTHSM2_CONF", token.env.SOFTHSM2_CONF);
		const config = loadConfig({
			...token.env,
			RECORDS: "600",
			KEYS: "3",
			BATCH_SIZE: "50",
			DATA_DIR: path.join(dir, "data"),
			SIGNING_THREADS: "2",
		});
		const grants: unknown[] = [];
		// What the keyring answers is what crosses the bus to the signer.
		const answers: Middleware = {
			name: "acquire-answers",
			localAction(next: (ctx: Context) => Promise<unknown>, action: { name?: string }) {
				if (action.name !== Actions.keyring.acquire) return next;
				return async (ctx: Context) => {
					const answer = await next(ctx);
					grants.push(JSON.parse(JSON.stringify(answer)));
					return answer;
				};
			},
		};
		const options = brokerOptions(config, { logLevel: "warn" });
		const broker = new ServiceBroker({
			...options,
			middlewares: [...(options.middlewares ?? []), answers],
		});
		const settings = settingsWith(config);
		for (const name of ALL_SERVICES) broker.createService(serviceSchema(name, settings));
		const completed = new Promise<RunCompletedEvent>((resolve) =>
			broker.createService({
				name: "watch",
				events: {
					[Events.runCompleted]: (ctx: Context<RunCompletedEvent>) => resolve(ctx.params),
				},
			}),
		);
		await broker.start();
		try {
			await call(broker, Actions.batcher.start, { batchSize: 50 });
			expect((await completed).status).toBe("completed");
		} finally {
			await broker.stop();
		}
		expect(grants.length).toBeGreaterThanOrEqual(12);
		for (const grant of grants as Array<Record<string, unknown>>) {
			expect(Object.keys(grant).sort()).toEqual([
				"expiresAt",
				"keyId",
				"leaseId",
				"token",
				"tokenKey",
			]);
			expect(grant.tokenKey).toEqual({
				label: grant.keyId,
				id: expect.stringMatching(/^[0-9a-f]{32}$/),
			});
		}
		const verdict = await closeAfter(openStoreFiles(path.join(dir, "data")), (db) =>
			audit(db, {
				logKeys: logVerifierKeys(loadConfig({ DATA_DIR: path.join(dir, "data") })),
			}),
		);
		expect(verdict.ok).toBe(true);
	});

	test("the token holds every key as sensitive and never extractable, and refuses to export one, read or wrapped", async () => {
		const { dataDir } = await startRun(200, 2);
		const ids = storedKeys(dataDir).map((k) => (JSON.parse(k.tokenKey!) as TokenKeyRef).id);
		// Another PKCS#11 client, in a process of its own, logged in with the PIN, asks for the keys.
		const probe = await runScript("dist/test/support/token-probe.js", ids, token.env);
		expect(probe.code).toBe(0);
		const answers = JSON.parse(probe.stdout) as ProbeAnswer[];
		expect(answers).toEqual(
			ids.map((id) => ({
				id,
				found: true,
				// CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE
				flags: [1, 0, 1, 1],
				read: "CKR_ATTRIBUTE_SENSITIVE",
				wrap: "CKR_KEY_UNEXTRACTABLE",
			})),
		);
	});

	test("a keyring store of software keys does not start with KEY_STORE=pkcs11, nor token keys with software, and each says so", async () => {
		const dataDir = path.join(dir, "data");
		const software = await runCli("start.js", ["--records", "50", "--keys", "2"], {
			DATA_DIR: dataDir,
		});
		expect(software.code).toBe(0);
		const asToken = await runCli("start.js", [], { ...token.env, DATA_DIR: dataDir });
		expect(asToken.code).not.toBe(0);
		expect(asToken.stderr).toMatch(
			/KEY_STORE=pkcs11, but the keyring's store holds 2 software keys/,
		);

		const tokenDir = path.join(dir, "token-data");
		const inToken = await runCli("start.js", ["--records", "50", "--keys", "2"], {
			...token.env,
			DATA_DIR: tokenDir,
		});
		expect(inToken.stdout).toContain("Audit PASSED: 50/50 records signed, 0 violations");
		expect(inToken.code).toBe(0);
		const asSoftware = await runCli("start.js", [], {
			SOFTHSM2_CONF: token.env.SOFTHSM2_CONF,
			DATA_DIR: tokenDir,
		});
		expect(asSoftware.code).not.toBe(0);
		expect(asSoftware.stderr).toMatch(/holds 2 keys in a PKCS#11 token: set KEY_STORE=pkcs11/);
	});

	test("a bad module path, token label or PIN stops the node with a message naming the variable", async () => {
		const dataDir = path.join(dir, "data");
		const start = (env: Record<string, string>) =>
			runCli("start.js", ["--records", "10", "--keys", "1"], {
				...token.env,
				DATA_DIR: dataDir,
				...env,
			});
		const cases: Array<[Record<string, string>, RegExp]> = [
			[
				{ PKCS11_MODULE: path.join(dir, "missing.so") },
				/PKCS11_MODULE \S+missing\.so does not exist/,
			],
			[
				{ PKCS11_MODULE: token.env.SOFTHSM2_CONF },
				/PKCS11_MODULE \S+softhsm2\.conf cannot be loaded as a PKCS#11 module/,
			],
			[
				{ PKCS11_TOKEN_LABEL: "no-such-token" },
				/PKCS11_TOKEN_LABEL "no-such-token" names no token of \S+ \(its tokens: "record-signer"/,
			],
			[
				{ PKCS11_PIN: "not-the-pin" },
				/PKCS11_PIN is not the user PIN of token "record-signer"/,
			],
			[
				{ PKCS11_PIN: "" },
				/KEY_STORE=pkcs11 needs the token's user PIN in PKCS11_PIN or in a file named by PKCS11_PIN_FILE/,
			],
		];
		const pinFile = path.join(dir, "pin");
		fs.writeFileSync(pinFile, "wrong-pin\n", { mode: 0o600 });
		cases.push([
			{ PKCS11_PIN: "", PKCS11_PIN_FILE: pinFile },
			/PKCS11_PIN_FILE \S+pin is not the user PIN of token "record-signer"/,
		]);
		for (const [env, message] of cases) {
			const result = await start(env);
			expect({ env, code: result.code }).toEqual({ env, code: 2 });
			expect(result.stderr).toMatch(message);
		}
		// A signer node as the image runs it (moleculer-runner) stops at start, naming the variable too.
		const signerNode = await runScript(
			"node_modules/moleculer/bin/moleculer-runner.js",
			["--config", "dist/moleculer.config.js"],
			{
				...token.env,
				PKCS11_PIN: "not-the-pin",
				SERVICEDIR: "dist/services",
				SERVICES: "signer",
				TRANSPORTER: "",
				DATA_DIR: dataDir,
				HEALTH_PORT: "0",
				METRICS_PORT: "0",
			},
		);
		expect(signerNode.code).not.toBe(0);
		expect(signerNode.stdout + signerNode.stderr).toMatch(
			/PKCS11_PIN is not the user PIN of token "record-signer"/,
		);
		// The PIN from a file that holds it works.
		fs.writeFileSync(pinFile, `${token.settings.pin}\n`);
		const good = await start({ PKCS11_PIN: "", PKCS11_PIN_FILE: pinFile });
		expect(good.stdout).toContain("Audit PASSED: 10/10 records signed, 0 violations");
		expect(good.code).toBe(0);
	});

	test("processes that open one token at once, one of them making keys in it, each open it every time: SoftHSM's file race is retried", async () => {
		// SoftHSM rewrites the token's file at each login; a process reading it meanwhile sees no
		// token or a general error (the cluster's signer-3 once stopped at start on it).
		const { token } = freshToken();
		const answers = await Promise.all(
			["generate", "", "", ""].map((mode) =>
				runScript("dist/test/support/token-opener.js", ["40", mode], token.env),
			),
		);
		const results = answers.map((answer) => JSON.parse(answer.stdout) as OpenerAnswer);
		expect(results).toEqual(results.map(() => ({ opened: 40, errors: [] })));
	});

	test("npm run cluster shares the token between the keyring and three signer processes through its token directory; every signer signs in it and the audit passes", async () => {
		const dataDir = path.join(dir, "data");
		const result = await runCli("cluster.js", ["--signers", "3", "--batch-size", "100"], {
			...token.env,
			DATA_DIR: dataDir,
			RECORDS: "3000",
			KEYS: "6",
		});
		expect(result.stdout).toMatch(
			/per signer +signer-1 [1-9]\d*, signer-2 [1-9]\d*, signer-3 [1-9]\d* batches/,
		);
		expect(result.stdout).toContain("Audit PASSED: 3000/3000 records signed, 0 violations");
		expect(result.code).toBe(0);
		const keys = storedKeys(dataDir);
		expect(keys).toHaveLength(6);
		expect(keys.every((k) => k.sealedPrivateKey === "" && k.tokenKey)).toBe(true);
		const logs = path.join(dataDir, "cluster", "logs");
		for (const signer of ["signer-1", "signer-2", "signer-3"])
			expect(fs.readFileSync(path.join(logs, `${signer}.log`), "utf8")).toContain(
				'Signing in token "record-signer"',
			);
	});
});
