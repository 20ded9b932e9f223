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
	}, 120_000);
});

let cluster: Cluster | undefined;
afterEach(async () => {
	await stopTestCluster(cluster);
	cluster = undefined;
});

test(
	"over NATS, as the ops user with the batcher credential, while a run goes on: keys added are used, a retired one is not granted again, and the store refuses a second keyring",
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
