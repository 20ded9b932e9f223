/**
 * The system as production runs it: five OS processes (keyring; records+batcher+metrics;
 * three signers) started with the moleculer-runner command line on the build, over a real
 * nats-server. Every scenario ends with the audit over the stores.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { sleep } from "../../src/clock";
import type { Cluster } from "../../src/cluster/launcher";
import type { BatchDoc } from "../../src/contract";
import type { KeyInfo } from "../../src/contract";
import {
	auditCluster,
	batches,
	clusterLogs,
	leases,
	scenario,
	signatures,
	startTestCluster,
	stopTestCluster,
	until,
	waitForSigned,
} from "../support/cluster";

let cluster: Cluster | undefined;
afterEach(async () => {
	await stopTestCluster(cluster);
	cluster = undefined;
});

test("a full run across five processes: 20,000 records, 20 keys, batch size 50, spread over all three signers", () =>
	scenario(
		() => cluster,
		async () => {
			cluster = await startTestCluster({ records: 20_000, keys: 20, batchSize: 50 });
			const run = await cluster.startRun(50);
			expect(run.batchSize).toBe(50);
			const outcome = await cluster.runEnded(run.runId);
			expect(outcome.status).toBe("completed");
			expect(outcome.report).toMatchObject({
				records: 20_000,
				signedThisRun: 20_000,
				batchSize: 50,
				batches: 400,
				failedBatches: 0,
				keysUsed: 20,
			});

			const broker = await cluster.connect();
			const stored = await batches(broker);
			const perSigner = new Map<string, number>();
			for (const batch of stored)
				perSigner.set(
					batch.signer ?? "(none)",
					(perSigner.get(batch.signer ?? "(none)") ?? 0) + 1,
				);
			// Spread: every batch went to one of the three, and each took a fair share of the 400.
			expect([...perSigner.keys()].sort()).toEqual(["signer-1", "signer-2", "signer-3"]);
			for (const [signer, count] of perSigner)
				expect({ signer, batches: count, atLeast20: count > 20 }).toEqual({
					signer,
					batches: count,
					atLeast20: true,
				});

			const verdict = await auditCluster(cluster);
			if (!verdict.ok) console.log(clusterLogs(cluster));
			expect(verdict.violations).toEqual([]);
			expect(verdict.ok).toBe(true);
			expect(verdict.checked).toMatchObject({
				records: 20_000,
				signatures: 20_000,
				batches: 400,
			});
		},
	));

/**
 * How soon after a nats-server restart a run must complete. A batch lost in the outage and waited
 * out costs the batcher's sign timeout, ACQUIRE_WAIT_MS + LEASE_TTL_MS + 10 s (src/settings.ts):
 * 75 s with the default 60 s acquire wait that scenario runs with.
 */
const COMPLETES_WITHIN_MS = 30_000;

/** The grace a stop gives each node before SIGKILL. */
const STOP_GRACE_MS = 15_000;

/** Records that went out again in a new batch: those of every batch after a first attempt. */
function reSent(stored: BatchDoc[]): { records: number; batches: number; failed: number } {
	const retries = stored.filter((b) => b.attempt > 1);
	return {
		records: retries.reduce((n, b) => n + b.recordIds.length, 0),
		batches: retries.length,
		failed: stored.filter((b) => b.status === "failed" || b.status === "partial").length,
	};
}

async function expectAuditPasses(records: number): Promise<void> {
	const verdict = await auditCluster(cluster!);
	if (!verdict.ok) console.log(clusterLogs(cluster!));
	expect(verdict.violations).toEqual([]);
	expect(verdict.ok).toBe(true);
	expect(verdict.checked).toMatchObject({ records, signatures: records });
}

describe("crashes lose nothing and break no rule", () => {
	test("kill -9 one signer in the middle of a run: the run completes; its leases expire and come back", () =>
		scenario(
			() => cluster,
			async () => {
				// Enough records that the run outlasts a few tries below: each freezes signer-2 for a
				// second, and 7,000 records were signed by the other two in less than that.
				cluster = await startTestCluster({ records: 30_000, keys: 20, batchSize: 50 });
				const broker = await cluster.connect();
				const run = await cluster.startRun(50);
				await waitForSigned(cluster, 3_000);
				// Killed while it holds a lease (frozen first, then checked): that lease can only end by expiry.
				// A release it sent just before the freeze may still be on its way (slow on a loaded
				// machine): it lands first, and only the leases still held after it count.
				const heldAtDeath = await until(
					"signer-2 to be frozen holding a lease",
					30_000,
					async () => {
						cluster!.pause("signer-2");
						await sleep(1_000);
						const held = (await broker.call<KeyInfo[]>("keyring.keys")).filter(
							(key) => key.holder === "signer-2",
						);
						if (held.length) return held;
						cluster!.resume("signer-2");
						return null;
					},
					20,
				);
				const killedAt = Date.now();
				const killed = await cluster.kill("signer-2");
				expect(killed.signal).toBe("SIGKILL");
				const outcome = await cluster.runEnded(run.runId);
				expect(outcome.status).toBe("completed");

				const stored = await batches(broker);
				const again = reSent(stored);
				// No reply came from it after the kill.
				expect(
					stored.filter(
						(b) =>
							b.signer === "signer-2" &&
							!b.error &&
							Date.parse(b.finishedAt!) > killedAt + 1_000,
					),
				).toEqual([]);
				// Only its own batches (its share of the 12-batch window) ended without a reply: settled from
				// their stored signatures (signed if it stored them before dying), the rest went out again.
				const unanswered = stored.filter((b) => b.error);
				expect(unanswered.length).toBeGreaterThan(0);
				expect(unanswered.length).toBeLessThanOrEqual(5);
				for (const batch of unanswered) expect(batch.error).toContain("signer-2");
				expect(again.records).toBeLessThanOrEqual(
					unanswered.reduce((n, b) => n + (b.unsigned ?? b.recordIds.length), 0),
				);

				// Its leases end by expiry (never while it might still sign), and the keys come back.
				await until(
					"every lease to end",
					30_000,
					async () =>
						(await broker.call<{ leased: number }>("keyring.status")).leased === 0,
				);
				const signer2 = (await leases(broker)).filter((l) => l.holder === "signer-2");
				expect(signer2.every((l) => l.end === "released" || l.end === "expired")).toBe(
					true,
				);
				// The ones it held when it died: nobody released them, they expired.
				for (const key of heldAtDeath)
					expect(signer2.find((l) => l.leaseId === key.leaseId)?.end).toBe("expired");
				await expectAuditPasses(30_000);
			},
		));

	test("kill -9 the keyring in the middle and start it again on the same store: leases recovered, the run completes within 40 s of the kill (the acquires left at the dead keyring fail when it is seen gone, not at their 70 s timeout)", () =>
		scenario(
			() => cluster,
			async () => {
				cluster = await startTestCluster({
					records: 10_000,
					keys: 20,
					batchSize: 50,
					// The default wait: an acquire left waiting at the dead keyring would hold its
					// signer for 70 s (ACQUIRE_WAIT_MS + 10 s).
					env: { ACQUIRE_WAIT_MS: "60000" },
				});
				const broker = await cluster.connect();
				const run = await cluster.startRun(50);
				await waitForSigned(cluster, 3_000);
				const before = await broker.call<{ lastSeq: number }>("keyring.status");
				const killedAt = Date.now();
				await cluster.kill("keyring");
				const restarted = await cluster.restart("keyring");
				await cluster.ready(60_000, ["keyring"]);
				expect(restarted.output()).toMatch(
					/Keyring ready: 20 keys \(20 active\), \d+ leased, \d+ free, last seq \d+/,
				);
				const replayed = Number(/last seq (\d+)/.exec(restarted.output())![1]);
				expect(replayed).toBeGreaterThanOrEqual(before.lastSeq);

				const outcome = await cluster.runEnded(run.runId);
				expect(outcome.status).toBe("completed");
				// The acquires left at the dead keyring are failed once it is seen gone (6 s of
				// missed heartbeats), not at their timeout: the rest of the run takes about 10 s
				// here, where those acquires held their signers for 70 s.
				expect(Date.now() - killedAt).toBeLessThan(40_000);
				// Until its missed heartbeats give it away, the killed node still looks available to the client.
				await cluster.gone("keyring");
				await until(
					"every lease to end",
					30_000,
					async () =>
						(await broker.call<{ leased: number }>("keyring.status")).leased === 0,
				);
				const all = await leases(broker);
				// Every lease, those granted before the kill included, ended: released, or reclaimed at its expiry.
				expect(all.filter((l) => l.end !== "released" && l.end !== "expired")).toEqual([]);
				await expectAuditPasses(10_000);
			},
		));

	test("kill -9 the batcher's node in the middle and start it again: the run resumes and completes", () =>
		scenario(
			() => cluster,
			async () => {
				cluster = await startTestCluster({ records: 10_000, keys: 20, batchSize: 50 });
				const broker = await cluster.connect();
				const run = await cluster.startRun(50);
				const atKill = await waitForSigned(cluster, 3_000);
				await cluster.kill("main");
				const restarted = await cluster.restart("main");
				await cluster.ready(60_000, ["main"]);
				expect(restarted.output()).toContain(`Resuming run ${run.runId}: batch size 50`);
				const outcome = await cluster.runEnded(run.runId);
				expect(outcome.status).toBe("completed");
				await cluster.gone("main");
				const runs =
					await broker.call<Array<{ runId: string; batchSize: number; status: string }>>(
						"batcher.runs",
					);
				expect(runs).toEqual([
					expect.objectContaining({
						runId: run.runId,
						batchSize: 50,
						status: "completed",
					}),
				]);
				const stored = await batches(broker);
				expect(Math.max(...stored.map((b) => b.recordIds.length))).toBe(50);
				// The batches it left pending were settled from their signatures on resume: none is left pending.
				const settled = stored.filter(
					(b) => b.error === "the batcher stopped before this batch's reply",
				);
				expect(
					stored.filter((b) => b.status === "pending" || b.status === "abandoned"),
				).toEqual([]);
				// It died with its window of batches in flight: each was settled on resume, from what records holds.
				expect(settled.length).toBeGreaterThan(0);
				for (const batch of settled)
					expect(["signed", "partial", "failed"]).toContain(batch.status);
				expect(atKill.signed).toBeLessThan(10_000);
				await expectAuditPasses(10_000);
			},
		));

	test("SIGTERM the batcher's node in the middle and start a new one: the run resumes at once and completes; batches that found no records service (the signers hear of the new node a second late) used no attempt", () =>
		scenario(
			() => cluster,
			async () => {
				cluster = await startTestCluster({ records: 10_000, keys: 20, batchSize: 50 });
				const broker = await cluster.connect();
				const run = await cluster.startRun(50);
				await waitForSigned(cluster, 3_000);
				// A graceful stop, as a rolling update makes: the node says goodbye, so the signers
				// forget its services and learn them again from the new process.
				await cluster.kill("main", "SIGTERM");
				// Batches in flight at the stop could not store (the node stopped taking requests
				// first): they fail, and go again after the restart. Those are not what this is about.
				const restartedAt = new Date().toISOString();
				const restarted = await cluster.restart("main");
				await cluster.ready(60_000, ["main"]);
				expect(restarted.output()).toContain(`Resuming run ${run.runId}: batch size 50`);
				const outcome = await cluster.runEnded(run.runId);
				expect(outcome.status).toBe("completed");
				const stored = await batches(broker);
				const sinceRestart = stored.filter((b) => b.startedAt > restartedAt);
				expect(sinceRestart.length).toBeGreaterThan(0);
				// Each such failure's records were signed by a later batch of the same attempt.
				for (const failed of sinceRestart.filter((b) =>
					/Service 'records\.\w+' is not available/.test(b.error ?? ""),
				)) {
					const signedBy = stored.find(
						(b) =>
							(b.status === "signed" || b.status === "partial") &&
							b.recordIds.includes(failed.recordIds[0]),
					);
					expect(signedBy?.attempt).toBe(failed.attempt);
				}
				await expectAuditPasses(10_000);
			},
		));

	test("stop and restart nats-server in the middle: every node reconnects and the run completes", () =>
		scenario(
			() => cluster,
			async () => {
				// Requests and replies lost in the outage are found out within seconds (src/broker/lost-requests.ts,
				// the batcher asking the signers), not waited out for the batcher's sign timeout.
				cluster = await startTestCluster({
					records: 10_000,
					keys: 20,
					batchSize: 50,
					env: { ACQUIRE_WAIT_MS: "60000" },
				});
				const run = await cluster.startRun(50);
				await waitForSigned(cluster, 3_000);
				const restartedAt = Date.now();
				await cluster.nats!.restart();
				const outcome = await cluster
					.runEnded(
						run.runId,
						Math.max(1_000, restartedAt + COMPLETES_WITHIN_MS - Date.now()),
					)
					.catch((err: Error) => {
						throw new Error(
							`the run did not complete within ${COMPLETES_WITHIN_MS / 1000} s of the nats-server restart: ${err.message}`,
						);
					});
				expect(Date.now() - restartedAt).toBeLessThan(COMPLETES_WITHIN_MS);
				expect(outcome.status).toBe("completed");
				// Every node reconnected: each role is seen again by the test's own client, itself reconnected.
				const client = await cluster.connect();
				await until(
					"every role's node to be seen again after the restart",
					15_000,
					() => {
						const seen = new Set(
							client.registry
								.getNodeList({ onlyAvailable: true, withServices: false })
								.map((node) => node.id),
						);
						return cluster!
							.list()
							.every((role) => role.running() && seen.has(role.nodeID));
					},
					100,
				);
				await expectAuditPasses(10_000);
				// Calls lost in the outage are settled, not left tracked: every node stops at once.
				const roles = cluster.list();
				const stopping = Date.now();
				await cluster.stop(STOP_GRACE_MS);
				expect(Date.now() - stopping).toBeLessThan(STOP_GRACE_MS);
				for (const role of roles)
					expect({
						role: role.name,
						timedOut: /GracefulStopTimeoutError/.test(role.output()),
					}).toEqual({ role: role.name, timedOut: false });
			},
		));
});

describe("lease safety, one keyring, graceful stop", () => {
	test("SIGSTOP a signer while it holds a lease, past the deadline, then SIGCONT: it never signs with the expired lease", () =>
		scenario(
			() => cluster,
			async () => {
				// Short leases and large batches: the signer is caught holding one, and it expires fast.
				cluster = await startTestCluster({
					records: 6_000,
					keys: 20,
					batchSize: 500,
					env: { LEASE_TTL_MS: "1500", LEASE_MARGIN_MS: "300", LEASE_GRACE_MS: "300" },
				});
				const broker = await cluster.connect();
				const held = async () =>
					(await broker.call<KeyInfo[]>("keyring.keys")).filter(
						(key) => key.holder === "signer-1" && key.leaseId,
					);
				const run = await cluster.startRun(500);
				const caught = await until(
					"signer-1 paused while it holds a lease",
					60_000,
					async () => {
						if (!(await held()).length) return null;
						cluster!.pause("signer-1");
						// It may have released its lease just before the stop landed: look again, now that it is frozen.
						const still = await held();
						if (still.length) return still;
						cluster!.resume("signer-1");
						return null;
					},
					10,
				);
				const leaseIds = caught.map((key) => key.leaseId!);
				// The keyring reclaims them only after expiresAt + grace; the signer is still frozen then.
				const expired = await until(
					"the frozen signer's leases to expire",
					30_000,
					async () => {
						const docs = (await leases(broker)).filter((lease) =>
							leaseIds.includes(lease.leaseId),
						);
						return docs.length === leaseIds.length &&
							docs.every((lease) => lease.end === "expired")
							? docs
							: null;
					},
					100,
				);
				const resumedAt = Date.now();
				cluster.resume("signer-1");

				const outcome = await cluster.runEnded(run.runId);
				expect(outcome.status).toBe("completed");
				const signedUnder = (await signatures(broker)).filter((signature) =>
					leaseIds.includes(signature.leaseId),
				);
				for (const signature of signedUnder) {
					const lease = expired.find((l) => l.leaseId === signature.leaseId)!;
					expect(Date.parse(signature.signedAt)).toBeLessThan(
						Date.parse(lease.expiresAt),
					);
				}
				const stored = await batches(broker);
				expect(
					stored.filter(
						(batch) =>
							batch.leaseId &&
							leaseIds.includes(batch.leaseId) &&
							batch.status === "signed",
					),
				).toEqual([]);
				expect(
					expired.every(
						(lease) =>
							lease.holder === "signer-1" &&
							Date.parse(lease.endedAt!) >= Date.parse(lease.expiresAt) + 300,
					),
				).toBe(true);
				// Woken up, it found its deadline passed and handed the batch back unsigned.
				await until("the batch to come back", 10_000, () =>
					/Lease deadline reached/.test(cluster!.role("main").output()),
				);
				// It was woken only past every deadline it held.
				for (const lease of expired)
					expect(resumedAt).toBeGreaterThan(Date.parse(lease.expiresAt));
				await expectAuditPasses(6_000);
			},
		));

	test("a second keyring started while the first serves never grants a lease: refused over NATS, and by the store from another namespace", () =>
		scenario(
			() => cluster,
			async () => {
				cluster = await startTestCluster({ records: 6_000, keys: 20, batchSize: 50 });
				const broker = await cluster.connect();
				const run = await cluster.startRun(50);
				await waitForSigned(cluster, 1_000);

				// Its own store, and a node id that sorts before the active one's: the active keyring still wins.
				const rival = await cluster.startRole("keyring", "early-keyring", {
					DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), "signing-rival-")),
				});
				expect((await rival.exited).code).not.toBe(0);
				expect(rival.output()).toMatch(
					/This keyring refuses to start: keyring node 'keyring' is already active on NATS namespace 'signing'/,
				);
				expect(fs.readdirSync(rival.dataDir)).toEqual([]);

				// Another cluster (namespace) on the same store: no election sees the active keyring, the store's role refuses it.
				const sameStore = await cluster.startRole("keyring", "keyring-same-store", {
					DATA_DIR: cluster.role("keyring").dataDir,
					NAMESPACE: "another-cluster",
				});
				expect((await sameStore.exited).code).not.toBe(0);
				expect(sameStore.output()).toMatch(
					/keyring store .* is in use by another keyring \(pid \d+ on .*, node keyring,/,
				);

				const outcome = await cluster.runEnded(run.runId);
				expect(outcome.status).toBe("completed");
				const all = await leases(broker);
				expect(new Set(all.map((lease) => lease.holder))).toEqual(
					new Set(["signer-1", "signer-2", "signer-3"]),
				);
				// One keyring's log: every seq once, from 1 up.
				const seqs = all
					.flatMap((lease) => [lease.grantSeq, lease.endSeq!])
					.sort((a, b) => a - b);
				expect(seqs).toEqual(seqs.map((_, i) => i + 1));
				expect(
					broker.registry
						.getServiceList({ onlyAvailable: true })
						.filter((s) => s.name === "keyring")
						.map((s) => s.nodeID),
				).toEqual(["keyring"]);
				await expectAuditPasses(6_000);
			},
		));

	test("SIGTERM a signer mid-run: its batches finish or come back, no lease is left held, it exits 0, the run completes", () =>
		scenario(
			() => cluster,
			async () => {
				cluster = await startTestCluster({ records: 6_000, keys: 20, batchSize: 50 });
				const broker = await cluster.connect();
				const run = await cluster.startRun(50);
				await waitForSigned(cluster, 1_500);
				const asked = Date.now();
				const exit = await cluster.kill("signer-3", "SIGTERM");
				const stopSeconds = (Date.now() - asked) / 1000;
				expect(exit).toEqual({ code: 0, signal: null });
				expect(stopSeconds).toBeLessThan(20);
				const ofSigner3 = (await leases(broker)).filter(
					(lease) => lease.holder === "signer-3",
				);
				expect(ofSigner3.length).toBeGreaterThan(0);
				expect(ofSigner3.filter((lease) => lease.end !== "released")).toEqual([]);

				const outcome = await cluster.runEnded(run.runId);
				expect(outcome.status).toBe("completed");
				await expectAuditPasses(6_000);
			},
		));
});
