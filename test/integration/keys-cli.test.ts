/**
 * `npm run keys` (the build, as its own process): on a store no keyring runs on, and over NATS
 * against the keyring of a running cluster while a run goes on (docs/design.md §5.8).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Cluster } from "../../src/cluster/launcher";
import type { KeyInfo } from "../../src/contract";
import { runCli } from "../support/cli";
import {
	auditCluster,
	leases,
	scenario,
	startTestCluster,
	stopTestCluster,
	waitForSigned,
} from "../support/cluster";

describe("npm run keys on a store no keyring runs on", () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "keys-cli-"));
	const env = { DATA_DIR: dataDir };
	afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

	test("lists, adds, retires and revokes keys; bad input names the flag; the audit names the ended keys", async () => {
		const started = await runCli("start.js", [], { ...env, RECORDS: "300", KEYS: "3" });
		expect(started.code).toBe(0);
		// Seeded as the first line says: nothing more to say about the store.
		expect(started.stdout).toContain("Store: ");
		expect(started.stdout).not.toContain("The store holds");
		expect((await runCli("keys.js", ["list"], env)).stdout).toMatch(
			/key-000 {2}active {3}\d+ use\(s\)\nkey-001 .*\nkey-002 .*\n3 key\(s\), 3 active/,
		);
		const added = await runCli("keys.js", ["add", "--count", "2"], env);
		expect(added).toMatchObject({ code: 0 });
		expect(added.stdout).toMatch(/Added 2 key\(s\), granted next: key-003, key-004/);
		expect(
			(await runCli("keys.js", ["retire", "--key", "key-000", "--reason", "rotation"], env))
				.stdout,
		).toMatch(/^key-000 {2}retired since \S+Z/);
		expect(
			(await runCli("keys.js", ["revoke", "--key", "key-001", "--reason", "leaked"], env))
				.stdout,
		).toMatch(/^key-001 {2}revoked since/);

		const noReason = await runCli("keys.js", ["revoke", "--key", "key-002"], env);
		expect(noReason.code).toBe(2);
		expect(noReason.stderr).toMatch(/--reason is required/);
		const longReason = await runCli(
			"keys.js",
			["retire", "--key", "key-002", "--reason", "x".repeat(501)],
			env,
		);
		expect(longReason.code).toBe(2);
		expect(longReason.stderr).toMatch(/--reason must be at most 500 characters, got 501/);
		const badCount = await runCli("keys.js", ["add", "--count", "0"], env);
		expect(badCount.code).toBe(2);
		expect(badCount.stderr).toMatch(/--count must be an integer from 1 to 1000, got "0"/);
		const unknown = await runCli("keys.js", ["retire", "--key", "key-404"], env);
		expect(unknown.code).toBe(2);
		expect(unknown.stderr).toMatch(/No key key-404 in this keyring/);

		const listed = JSON.parse(
			(await runCli("keys.js", ["list", "--json"], env)).stdout,
		) as KeyInfo[];
		expect(listed.map((k) => [k.keyId, k.state])).toEqual([
			["key-000", "retired"],
			["key-001", "revoked"],
			["key-002", "active"],
			["key-003", "active"],
			["key-004", "active"],
		]);
		const audited = await runCli("audit.js", [], env);
		expect(audited.code).toBe(0);
		expect(audited.stdout).toMatch(/Key key-000 retired at \S+ \(seq \d+, rotation\)/);
		expect(audited.stdout).toMatch(
			/Key key-001 revoked at \S+ \(seq \d+\): leaked; refuse its signatures made after that/,
		);

		// npm start again: the store is not the KEYS it was seeded with any more, and says so.
		const again = await runCli("start.js", [], { ...env, RECORDS: "300", KEYS: "3" });
		expect(again.code).toBe(0);
		expect(again.stdout).toContain(
			"The store holds 300 records and 5 keys (3 active): RECORDS and KEYS only seed an empty store",
		);
	}, 120_000);
});

describe("rotations on a store no keyring runs on", () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "rotate-cli-"));
	const env = { DATA_DIR: dataDir };
	const file = (name: string) => path.join(dataDir, name);
	afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

	test("keys rotate-master makes master.key.next (0600) and seals every key under it, which becomes master.key; the keyring's public key stays; a next key of the wrong length is named; signer rotate writes and enrols a new credential", async () => {
		expect((await runCli("start.js", [], { ...env, RECORDS: "200", KEYS: "3" })).code).toBe(0);
		const authority = async () =>
			(await runCli("signer.js", ["authority", "--json"], env)).stdout.trim();
		const pub = await authority();
		expect(JSON.parse(pub)).toMatchObject({ kty: "OKP", crv: "Ed25519" });
		const oldMaster = fs.readFileSync(file("master.key"), "utf8");

		fs.writeFileSync(file("master.key.next"), Buffer.alloc(31, 1).toString("base64") + "\n");
		const short = await runCli("keys.js", ["rotate-master"], env);
		expect(short.code).toBe(2);
		expect(short.stderr).toContain(
			`${file("master.key.next")} must hold the base64 encoding of exactly 32 bytes`,
		);
		expect(fs.readFileSync(file("master.key"), "utf8")).toBe(oldMaster);
		fs.rmSync(file("master.key.next"));

		const rotated = await runCli("keys.js", ["rotate-master"], env);
		expect(rotated).toMatchObject({ code: 0 });
		expect(rotated.stdout).toContain(`Made the next master key ${file("master.key.next")}`);
		expect(rotated.stdout).toMatch(
			/3 sealed key\(s\) and the keyring's authority key are sealed under .*master\.key/,
		);
		expect(fs.existsSync(file("master.key.next"))).toBe(false);
		expect(fs.statSync(file("master.key")).mode & 0o777).toBe(0o600);
		expect(fs.readFileSync(file("master.key"), "utf8")).not.toBe(oldMaster);
		expect(await authority()).toBe(pub);

		const before = fs.readFileSync(file("signer.key"), "utf8");
		const oldName = (JSON.parse(before) as { kid: string }).kid;
		const rotatedSigner = await runCli("signer.js", ["rotate", "--name", "signer-2"], env);
		expect(rotatedSigner).toMatchObject({ code: 0 });
		expect(rotatedSigner.stdout).toContain(`npm run signer -- revoke --name ${oldName}`);
		expect(JSON.parse(fs.readFileSync(file("signer.key"), "utf8"))).toMatchObject({
			kid: "signer-2",
		});
		expect(fs.statSync(file("signer.key")).mode & 0o777).toBe(0o600);
		expect((await runCli("signer.js", ["list"], env)).stdout).toMatch(/signer-2 /);
		expect((await runCli("signer.js", ["rotate", "--name", "signer-2"], env)).stderr).toMatch(
			/already holds the signer credential "signer-2"/,
		);

		// The job runs again on the rotated master key and the new credential; the audit passes.
		const again = await runCli("start.js", [], { ...env, RECORDS: "200", KEYS: "3" });
		expect(again.code).toBe(0);
		expect((await runCli("audit.js", [], env)).code).toBe(0);
	}, 120_000);
});

let cluster: Cluster | undefined;
afterEach(async () => {
	await stopTestCluster(cluster);
	cluster = undefined;
});

test(
	"over NATS, as the ops user with the batcher credential, while a run goes on: keys added are used, a retired one is not granted again, the master key and the signer and batcher credentials are rotated (the old credentials revoked) and the run completes and audits clean, and the store refuses a second keyring",
	() =>
		scenario(
			() => cluster,
			async () => {
				cluster = await startTestCluster({ records: 100_000, keys: 3, signers: 2 });
				await cluster.ready(90_000);
				const env = {
					DATA_DIR: cluster.dataDir,
					TRANSPORTER: cluster.natsUrl("ops"),
					NAMESPACE: cluster.namespace,
					...cluster.natsEnv,
				};
				// Without TRANSPORTER the command would open the store as a second keyring: refused.
				const alone = await runCli("keys.js", ["list"], { DATA_DIR: cluster.dataDir });
				expect(alone.code).toBe(2);
				expect(alone.stderr).toMatch(/is in use by another keyring/);

				const run = await cluster.startRun(50);
				await waitForSigned(cluster, 500);
				const added = await runCli("keys.js", ["add", "--count", "2"], env);
				expect(added.stderr).toBe("");
				expect(added.stdout).toMatch(/granted next: key-003, key-004/);
				const retired = await runCli("keys.js", ["retire", "--key", "key-000"], env);
				expect(retired.stdout).toMatch(/^key-000 {2}retired since (\S+Z)/);
				const since = Date.parse(/since (\S+Z)/.exec(retired.stdout)![1]);

				// Rotations while the run goes on: the master key over NATS, then the signers' and the
				// batcher's credentials in their shared files, the old ones revoked once the nodes switched.
				const local = { DATA_DIR: cluster.dataDir };
				const pub = (await runCli("signer.js", ["authority", "--json"], local)).stdout;
				const master = await runCli("keys.js", ["rotate-master"], env);
				expect(master.stderr).toBe("");
				expect(master.stdout).toMatch(
					/sealed key\(s\) and the keyring's authority key are sealed under/,
				);
				const kid = (role: string) =>
					(
						JSON.parse(
							fs.readFileSync(path.join(cluster!.dataDir, `${role}.key`), "utf8"),
						) as { kid: string }
					).kid;
				const oldSigner = kid("signer");
				const oldBatcher = kid("batcher");
				expect(
					(await runCli("signer.js", ["rotate", "--name", "signer-2"], local)).code,
				).toBe(0);
				expect(
					(
						await runCli(
							"signer.js",
							["rotate", "--role", "batcher", "--name", "batcher-2"],
							local,
						)
					).code,
				).toBe(0);
				await new Promise((r) => setTimeout(r, 3_000));
				for (const [name, role] of [
					[oldSigner, "signer"],
					[oldBatcher, "batcher"],
				])
					expect(
						(
							await runCli(
								"signer.js",
								["revoke", "--role", role, "--name", name],
								local,
							)
						).code,
					).toBe(0);
				const outcome = await cluster.runEnded(run.runId);
				expect(outcome.status).toBe("completed");

				const all = await leases(await cluster.connect());
				expect(new Set(all.map((l) => l.keyId))).toEqual(
					new Set(["key-000", "key-001", "key-002", "key-003", "key-004"]),
				);
				for (const lease of all.filter((l) => l.keyId === "key-000"))
					expect(Date.parse(lease.grantedAt)).toBeLessThanOrEqual(since);
				const verdict = await auditCluster(cluster);
				expect(verdict.violations).toEqual([]);
				expect(verdict.ok).toBe(true);
				expect(verdict.endedKeys).toEqual([
					expect.objectContaining({
						keyId: "key-000",
						event: "retired",
						reason: "operator",
					}),
				]);
				expect((await runCli("signer.js", ["authority", "--json"], local)).stdout).toBe(
					pub,
				);
				const listed = await runCli("keys.js", ["list", "--json"], env);
				expect(
					(JSON.parse(listed.stdout) as KeyInfo[]).map((k) => [k.keyId, k.state]),
				).toEqual([
					["key-000", "retired"],
					["key-001", "active"],
					["key-002", "active"],
					["key-003", "active"],
					["key-004", "active"],
				]);
			},
		),
	240_000,
);
