/**
 * The system as production runs it: five OS processes (keyring; records+batcher+metrics;
 * three signers) started with the moleculer-runner command line on the build, over a real
 * nats-server. Every scenario ends with the audit over the stores.
 */
import type { Cluster } from "../src/cluster/launcher";
import { auditCluster, batches, clusterLogs, startTestCluster, stopTestCluster } from "./support/cluster";

let cluster: Cluster | undefined;
let failed = false;
afterEach(async () => {
	failed = failed || expect.getState().assertionCalls !== expect.getState().numPassingAsserts;
	await stopTestCluster(cluster, { keep: failed });
	cluster = undefined;
});

test("a full run across five processes: 20,000 records, 20 keys, batch size 50, spread over all three signers", async () => {
	cluster = await startTestCluster({ records: 20_000, keys: 20, batchSize: 50 });
	const started = Date.now();
	const run = await cluster.startRun(50);
	expect(run.batchSize).toBe(50);
	const outcome = await cluster.runEnded(run.runId);
	const seconds = (Date.now() - started) / 1000;
	expect(outcome.status).toBe("completed");
	expect(outcome.report).toMatchObject({ records: 20_000, signedThisRun: 20_000, batchSize: 50, batches: 400, failedBatches: 0, keysUsed: 20 });

	const broker = await cluster.connect();
	const stored = await batches(broker);
	const perSigner = new Map<string, number>();
	for (const batch of stored) perSigner.set(batch.signer ?? "(none)", (perSigner.get(batch.signer ?? "(none)") ?? 0) + 1);
	console.log(`full run over NATS: 20,000 records in ${seconds.toFixed(1)} s; batches per signer: ${JSON.stringify(Object.fromEntries(perSigner))}`);
	expect([...perSigner.keys()].sort()).toEqual(["signer-1", "signer-2", "signer-3"]);
	for (const count of perSigner.values()) expect(count).toBeGreaterThan(20);

	const verdict = await auditCluster(cluster);
	expect(verdict.violations).toEqual([]);
	expect(verdict.ok).toBe(true);
	expect(verdict.checked).toMatchObject({ records: 20_000, signatures: 20_000, batches: 400 });
	if (!verdict.ok) console.log(clusterLogs(cluster));
});
