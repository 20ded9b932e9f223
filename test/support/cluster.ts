/**
 * Cluster tests: the launcher of src/cluster with a real nats-server and real OS processes,
 * plus what every scenario checks at its end (the audit over the stores, through the nodes).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ServiceBroker } from "moleculer";
import { auditServices, pageAll } from "../../src/audit/collect";
import { Cluster, tail, until, type ClusterOptions } from "../../src/cluster/launcher";
import type { BatchDoc, LeaseDoc, Progress, SignatureDoc } from "../../src/contract";

export { until };

export interface TestClusterOptions extends Partial<ClusterOptions> {
	records: number;
	keys: number;
	batchSize?: number;
}

/** Starts a cluster in a fresh temporary folder and waits until every node serves. */
export async function startTestCluster(options: TestClusterOptions): Promise<Cluster> {
	const root = options.root ?? fs.mkdtempSync(path.join(os.tmpdir(), "signing-cluster-"));
	const cluster = await Cluster.start({
		signers: 3,
		logLevel: "info",
		clientLogLevel: "error",
		...options,
		root,
		env: {
			RECORDS: String(options.records),
			KEYS: String(options.keys),
			BATCH_SIZE: String(options.batchSize ?? 50),
			// A dead node's batch comes back in seconds, not after a 70 s sign timeout.
			ACQUIRE_WAIT_MS: "10000",
			LEASE_TTL_MS: "5000",
			LEASE_MARGIN_MS: "1000",
			LEASE_GRACE_MS: "1000",
			MONGO_URI: "",
			...options.env,
		},
	});
	try {
		await cluster.ready();
	} catch (err) {
		failedRoots.add(cluster.root);
		console.log(`${clusterLogs(cluster, 40)}`);
		await stopTestCluster(cluster);
		throw err;
	}
	return cluster;
}

/** Clusters whose test failed: their folders (logs, stores) are kept for a look. */
const failedRoots = new Set<string>();

/**
 * Runs a scenario against a cluster; on failure prints the end of every role's log and keeps
 * the cluster's folder (set CLUSTER_KEEP=1 to keep it always).
 */
export async function scenario<T>(
	cluster: () => Cluster | undefined,
	body: () => Promise<T>,
): Promise<T> {
	try {
		return await body();
	} catch (err) {
		const current = cluster();
		if (current) {
			failedRoots.add(current.root);
			console.log(`${clusterLogs(current, 40)}\ncluster folder kept: ${current.root}`);
		}
		throw err;
	}
}

/** Stops the cluster and removes its folder, unless its scenario failed or CLUSTER_KEEP is set. */
export async function stopTestCluster(cluster: Cluster | undefined): Promise<void> {
	if (!cluster) return;
	await cluster.stop(15_000);
	if (failedRoots.has(cluster.root) || process.env.CLUSTER_KEEP)
		console.log(`cluster folder kept: ${cluster.root}`);
	else fs.rmSync(cluster.root, { recursive: true, force: true });
}

export async function progress(broker: ServiceBroker): Promise<Progress | null> {
	return broker
		.call<Progress, object>("records.progress", {}, { timeout: 5_000 })
		.catch(() => null);
}

/** Waits until at least `signed` records carry a signature. */
export async function waitForSigned(
	cluster: Cluster,
	signed: number,
	timeoutMs = 120_000,
): Promise<Progress> {
	const broker = await cluster.connect();
	return until(
		`${signed} signed records`,
		timeoutMs,
		async () => {
			const now = await progress(broker);
			return now && now.signed >= signed ? now : null;
		},
		50,
	);
}

/** Page size through the test clusters' nats-server for batches of up to 500 records. */
const PAGE = 500;

export async function batches(broker: ServiceBroker): Promise<BatchDoc[]> {
	return (await pageAll(broker, "batcher", "batches", PAGE)) as unknown as BatchDoc[];
}

export async function leases(broker: ServiceBroker): Promise<LeaseDoc[]> {
	return (await pageAll(broker, "keyring", "leases", PAGE)) as unknown as LeaseDoc[];
}

export async function signatures(broker: ServiceBroker): Promise<SignatureDoc[]> {
	return (await pageAll(broker, "records", "signatures", PAGE)) as unknown as SignatureDoc[];
}

/** The audit of docs/design.md §9 over the stores, read through their owning nodes. */
export async function auditCluster(cluster: Cluster) {
	const broker = await cluster.connect();
	return auditServices(broker, { pageSize: PAGE });
}

/** The end of every role's output, for a failed assertion's message. */
export function clusterLogs(cluster: Cluster, lines = 15): string {
	return cluster
		.list()
		.map((role) => `--- ${role.name} (${role.nodeID})\n${tail(role.output(), lines)}`)
		.join("\n");
}
