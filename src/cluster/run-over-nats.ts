/**
 * One timed run of the whole system across processes over NATS, for the benchmark: a fresh
 * cluster in a temporary folder (keyring, records+batcher+metrics, `signers` signers), seeded
 * and keyed before the clock starts, timed from `batcher.start` to `run.completed`. Its NATS is
 * one local nats-server, or as `nats` says (three routed servers with TLS: the production shape).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Actions, call } from "../contract";
import { checkpointStoresNow } from "../store/sqlite";
import { Cluster, type ClusterOptions } from "./launcher";

export interface OverNatsOptions {
	records: number;
	keys: number;
	batchSize: number;
	/** Signer processes; 3 by default. */
	signers?: number;
	/** Extra environment for every node (WINDOW, LEASE_TTL_MS, ...). */
	env?: Record<string, string>;
	/** The NATS to start: one nats-server by default; `{ size: 3, tls: true }` a TLS cluster of three. */
	nats?: ClusterOptions["nats"];
}

export interface OverNatsResult {
	/** From `batcher.start` to `run.completed`; starting the processes and seeding excluded. */
	seconds: number;
	/** Signatures the run stored (= records on a fresh store). */
	signed: number;
}

export async function runOverNats(options: OverNatsOptions): Promise<OverNatsResult> {
	const root = fs.mkdtempSync(path.join(os.tmpdir(), "signing-over-nats-"));
	const cluster = await Cluster.start({
		root,
		signers: options.signers ?? 3,
		nats: options.nats,
		logLevel: "warn",
		clientLogLevel: "error",
		env: {
			...options.env,
			RECORDS: String(options.records),
			KEYS: String(options.keys),
			BATCH_SIZE: String(options.batchSize),
			MONGO_URI: "",
		},
	});
	try {
		await cluster.ready(600_000); // seeds the records and generates the keys: not timed
		checkpointStoresNow(cluster.dataDir); // nor copying the seeded store into its file
		const started = performance.now();
		const run = await cluster.startRun(options.batchSize);
		const outcome = await cluster.runEnded(run.runId);
		const seconds = (performance.now() - started) / 1000;
		if (outcome.status !== "completed")
			throw new Error(
				`the run over NATS ended ${outcome.status}: ${outcome.error ?? "no error given"}`,
			);
		const progress = await call(await cluster.connect(), Actions.records.progress, {});
		if (progress.signed !== options.records)
			throw new Error(
				`the run over NATS signed ${progress.signed} of ${options.records} records`,
			);
		return { seconds, signed: outcome.report?.signedThisRun ?? progress.signed };
	} finally {
		await cluster.stop();
		fs.rmSync(root, { recursive: true, force: true });
	}
}
