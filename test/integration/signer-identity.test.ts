/**
 * Only an enrolled signer obtains a key (issue 10), on a real nats-server with per-role users
 * and every role in its own process (the cluster launcher). The attack of the issue is
 * replayed from a node of its own: with a stolen NATS password it is refused by the keyring,
 * which logs its node id; as the api/ops user it cannot even reach the lease actions. A revoked
 * credential is refused. A normal run, whose signers were enrolled by themselves, is unaffected.
 */
import fs from "node:fs";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { brokerOptions } from "../../src/broker/broker-options";
import type { Cluster } from "../../src/cluster/launcher";
import { loadConfig } from "../../src/config";
import type { KeyInfo, Lease } from "../../src/contract";
import { credentialFile, newCredential, parseCredential } from "../../src/identity/credential";
import { LeaseKeyOpener } from "../../src/keyring/key-transport";
import type { NatsRole } from "../../src/broker/nats-permissions";
import { runCli } from "../support/cli";
import {
	auditCluster,
	scenario,
	startTestCluster,
	stopTestCluster,
	until,
} from "../support/cluster";
import { stopBroker } from "../support/broker";
import { signerRequests } from "../support/signer-proofs";

let cluster: Cluster | undefined;
const strangers: ServiceBroker[] = [];

beforeAll(async () => {
	cluster = await startTestCluster({ records: 3_000, keys: 5, batchSize: 100, signers: 1 });
}, 120_000);

afterAll(async () => {
	for (const broker of strangers) await stopBroker(broker).catch(() => undefined);
	await stopTestCluster(cluster);
});

/** A node of the test's own on the cluster's NATS, as `role`'s user. */
async function stranger(role: NatsRole, nodeID: string): Promise<ServiceBroker> {
	const config = loadConfig({
		TRANSPORTER: cluster!.natsUrl(role),
		NAMESPACE: cluster!.namespace,
		DATA_DIR: "",
	});
	const broker = new ServiceBroker({
		...brokerOptions(config, { nodeID, logLevel: false }),
		skipProcessEventRegistration: true,
	});
	strangers.push(broker);
	await broker.start();
	await broker.waitForServices("keyring", 10_000);
	return broker;
}

const keyringLog = () => cluster!.role("keyring").output();

test("a normal run: the signers' credential was made and enrolled by the cluster itself; every record is signed and the audit passes", () =>
	scenario(
		() => cluster,
		async () => {
			const run = await cluster!.startRun(100);
			expect((await cluster!.runEnded(run.runId)).status).toBe("completed");
			const file = path.join(cluster!.root, "signer.key");
			expect(fs.statSync(file).mode & 0o777).toBe(0o600);
			const { name } = parseCredential(fs.readFileSync(file, "utf8"), file);
			expect(keyringLog()).toContain(`Enrolled the signer credential "${name}" of ${file}`);
			const verdict = await auditCluster(cluster!);
			expect(verdict.violations).toEqual([]);
		},
	));

test("the attack replayed with a stolen NATS password: no key, a 403 saying why, and the keyring logs the caller's node", () =>
	scenario(
		() => cluster,
		async () => {
			const evil = await stranger("signer", "evil-node");
			const session = new LeaseKeyOpener().session;
			// As in the report: a holder of its choosing, its own session key, no proof.
			const bare = await evil
				.call("keyring.acquire", { holder: "signer-node-7", sessionKey: session.publicJwk })
				.then(
					() => null,
					(err: { code: number; type: string; message: string }) => err,
				);
			expect(bare).toMatchObject({
				code: 403,
				type: "SIGNER_PROOF_MISSING",
				message: expect.stringMatching(
					/^Refused: keyring\.acquire carries no signer proof/,
				),
			});
			// A credential of its own making: not enrolled.
			const forged = signerRequests(newCredential("evil-signer")).acquire(
				"evil-node",
				session.publicJwk,
			);
			await expect(evil.call("keyring.acquire", forged)).rejects.toMatchObject({
				code: 403,
				type: "SIGNER_NOT_ENROLLED",
				message: expect.stringContaining('signer "evil-signer" is not enrolled'),
			});
			await until(
				"the keyring's log lines",
				5_000,
				() =>
					/Refused keyring\.acquire from node evil-node: Refused: keyring\.acquire carries no signer proof/.test(
						keyringLog(),
					) &&
					/Refused keyring\.acquire from node evil-node: Refused: signer "evil-signer" is not enrolled/.test(
						keyringLog(),
					),
			);
			// Nothing was granted to anyone it named, and no sealed private key is on the bus.
			const keys = await evil.call<KeyInfo[], object>("keyring.keys", {});
			expect(
				keys.filter((key) => key.holder === "signer-node-7" || key.holder === "evil-node"),
			).toEqual([]);
			const page = await evil.call<{ docs: object[] }, object>("keyring.page", {
				collection: "keys",
			});
			expect(JSON.stringify(page)).not.toMatch(/sealedPrivateKey|"d":/);
		},
	));

test("as the api or ops user, the lease actions are out of reach: NATS drops the request; reading the keyring still works", () =>
	scenario(
		() => cluster,
		async () => {
			const ops = await stranger("ops", "ops-probe");
			const session = new LeaseKeyOpener().session;
			const refused = await ops
				.call("keyring.acquire", { sessionKey: session.publicJwk }, { timeout: 2_000 })
				.then(
					() => null,
					(err: Error) => err,
				);
			expect(refused?.name).toBe("RequestTimeoutError");
			// Timed out, not refused: the keyring never saw it (it answers a request without a proof at once, with a 403).
			// An ops node runs as ops.<id> (src/broker/nats-permissions.ts nodeIdFor).
			expect(ops.nodeID).toBe("ops.ops-probe");
			expect(keyringLog()).not.toMatch(/Refused keyring\.\w+ from node ops\.ops-probe/);
			expect(
				(await ops.call<{ keys: object[] }, object>("keyring.jwks", {})).keys,
			).toHaveLength(5);
		},
	));

test("a credential enrolled by the operator command gets keys; revoked, it is refused within seconds", () =>
	scenario(
		() => cluster,
		async () => {
			const file = path.join(cluster!.root, "ops-signer.key");
			const created = await runCli(
				"signer.js",
				["create", "--name", "ops-signer", "--out", file, "--data-dir", cluster!.root],
				{},
			);
			expect(created.stderr).toBe("");
			expect(created.stdout).toMatch(
				/^Enrolled signer "ops-signer" \(key [\w-]{16}\) in .*keyring\.sqlite/,
			);
			const credential = parseCredential(fs.readFileSync(file, "utf8"), file);
			// Lease requests carry a dispatch ticket: made with the cluster's batcher credential, as its batcher does.
			const requests = signerRequests(
				credential,
				credentialFile(path.join(cluster!.root, "batcher.key"), false),
			);
			const node = await stranger("signer", "ops-signer-node");
			const session = new LeaseKeyOpener().session;
			const lease = await node.call<Lease, object>(
				"keyring.acquire",
				requests.acquire("ops-signer-node", session.publicJwk),
			);
			expect(lease.keyId).toMatch(/^key-/);
			// The lease's holder is the proven node; another node cannot release it, even with a valid credential.
			await expect(
				node.call("keyring.release", requests.release("someone-else", lease.leaseId)),
			).rejects.toMatchObject({ code: 403, type: "SIGNER_PROOF_INVALID" });
			await expect(
				node.call("keyring.release", requests.release("ops-signer-node", lease.leaseId)),
			).resolves.toMatchObject({ changed: true });

			const revoked = await runCli(
				"signer.js",
				["revoke", "--name", "ops-signer", "--data-dir", cluster!.root],
				{},
			);
			expect(revoked.stdout).toMatch(/Revoked signer "ops-signer"/);
			const refusal = await until(
				"the revocation to take effect",
				15_000,
				async () =>
					node
						.call(
							"keyring.acquire",
							requests.acquire("ops-signer-node", session.publicJwk, 0),
						)
						.then(
							async (granted: unknown) =>
								// Granted before the revocation reached the keyring, its release may come
								// after it and be refused: the lease then runs out; the next acquire tells.
								(
									await node
										.call(
											"keyring.release",
											requests.release(
												"ops-signer-node",
												(granted as Lease).leaseId,
											),
										)
										.catch((err: { type?: string }) => {
											if (err.type !== "SIGNER_REVOKED") throw err;
										}),
									null
								),
							(err: { type?: string }) =>
								err.type === "SIGNER_REVOKED" ? err : null,
						),
				500,
			);
			expect(refusal).toMatchObject({
				code: 403,
				message: expect.stringContaining('signer "ops-signer" was revoked at'),
			});
			expect(keyringLog()).toMatch(
				/Refused keyring\.acquire from node ops-signer-node: Refused: signer "ops-signer" was revoked/,
			);
			const listed = await runCli(
				"signer.js",
				["list", "--json", "--data-dir", cluster!.root],
				{},
			);
			expect(JSON.parse(listed.stdout)).toEqual(
				expect.arrayContaining([
					expect.objectContaining({ name: "ops-signer", revokedAt: expect.any(String) }),
					expect.objectContaining({
						name: expect.stringMatching(/^local-/),
						revokedAt: null,
					}),
				]),
			);
		},
	));
