/**
 * `npm run bench`: in one process and one go, the floor (the same N payloads signed as JWS
 * EdDSA with jose on all cores, no coordination, no storage) and the full embedded run
 * (N records, K keys, batch size B, seeding excluded), then the same run across processes over
 * NATS (three signers). Prints the times, their ratios to the floor, records/s and the peak
 * RSS, and as its last line one JSON object. `--skip-nats` leaves out the NATS run.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { generateKeyPair, exportJWK, importJWK, type CryptoKey, type JWK } from "jose";
import { ConfigError, loadConfig } from "../config";
import type { ServiceBroker } from "moleculer";
import { Actions, Events, call, type RecordDoc, type RunCompletedEvent } from "../contract";
import { signRecord, type RecordPayload } from "../signer/jws";
import { SIGNING_THREAD_LIMITS } from "../signer/sign-pool";

/** Enough signatures in flight to keep WebCrypto's thread pool (all cores) busy. */
const IN_FLIGHT = 512;

async function signAll(key: CryptoKey, payloads: RecordPayload[]): Promise<number> {
	let signed = 0;
	for (let i = 0; i < payloads.length; i += IN_FLIGHT) {
		const jwss = await Promise.all(payloads.slice(i, i + IN_FLIGHT).map(p => signRecord(key, "key-000", p)));
		signed += jwss.length;
	}
	return signed;
}

/** The floor read as one thread feeding WebCrypto's pool (which runs on every core). */
export async function floorPooled(payloads: RecordPayload[], key: CryptoKey): Promise<number> {
	const started = performance.now();
	await signAll(key, payloads);
	return (performance.now() - started) / 1000;
}

/** The floor read as one signing thread per core. */
export async function floorThreaded(payloads: RecordPayload[], jwk: JWK): Promise<number> {
	const cores = os.availableParallelism();
	const share = Math.ceil(payloads.length / cores);
	const started = performance.now();
	await Promise.all(Array.from({ length: cores }, (_, i) => new Promise<void>((resolve, reject) => {
		const worker = new Worker(__filename, { workerData: { jwk, payloads: payloads.slice(i * share, (i + 1) * share) }, resourceLimits: SIGNING_THREAD_LIMITS });
		worker.once("message", () => resolve());
		worker.once("error", reject);
	})));
	return (performance.now() - started) / 1000;
}

/** The faster of the two readings of "jose on all cores" is the floor. */
async function floorSeconds(payloads: RecordPayload[]): Promise<{ seconds: number; strategy: string }> {
	const { privateKey } = await generateKeyPair("EdDSA", { extractable: true });
	const pooled = await floorPooled(payloads, privateKey as CryptoKey);
	const threaded = await floorThreaded(payloads, await exportJWK(privateKey));
	return pooled <= threaded ? { seconds: pooled, strategy: "one thread, WebCrypto pool" } : { seconds: threaded, strategy: `${os.availableParallelism()} worker threads` };
}

/** Process CPU (every thread, user and system) of a `process.cpuUsage(start)` delta. */
const cpuSeconds = (usage: NodeJS.CpuUsage) => (usage.user + usage.system) / 1e6;

/** Every stored record: the floor signs exactly the payloads the run will sign. */
async function storedPayloads(broker: ServiceBroker): Promise<RecordPayload[]> {
	const { pageAll } = await import("../audit/collect");
	return (await pageAll<RecordDoc>(broker, "records", "records")).map(doc => ({ id: doc._id, data: doc.data }));
}

async function timedRun(broker: ServiceBroker, completion: Promise<RunCompletedEvent>, records: number, batchSize: number): Promise<{ seconds: number; signed: number }> {
	const started = performance.now();
	await call(broker, Actions.batcher.start, { batchSize });
	const { report } = await completion;
	const seconds = (performance.now() - started) / 1000;
	const progress = await call(broker, Actions.records.progress, {});
	if (progress.signed !== records) throw new Error(`the run signed ${progress.signed} of ${records} records`);
	return { seconds, signed: report.signedThisRun };
}

async function main(): Promise<void> {
	const { values } = parseArgs({ options: { records: { type: "string" }, keys: { type: "string" }, "batch-size": { type: "string" }, "skip-nats": { type: "boolean" } } });
	const { "skip-nats": _skip, ...sizes } = values;
	const config = loadConfig({ RECORDS: "100000", KEYS: "100", BATCH_SIZE: "300" }, sizes);
	const { records, keys, batchSize } = config;
	console.log(`Benchmark: ${records} records, ${keys} keys, batch size ${batchSize}, ${os.availableParallelism()} cores, Node ${process.version}`);

	const embedded = await embeddedBench(records, keys, batchSize);
	const { floor } = embedded;
	const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
	const summary: Record<string, number> = { records, floorSeconds: round(floor), runSeconds: round(embedded.run), ratio: round(embedded.run / floor), recordsPerSecond: Math.round(records / embedded.run), peakRssMB: embedded.peakRssMB };

	if (!values["skip-nats"]) {
		// Separate OS processes over a local nats-server, measured against the same floor.
		const { runOverNats } = await import("../cluster/run-over-nats");
		const nats = await runOverNats({ records, keys, batchSize, signers: 3 });
		console.log(`over NATS  ${nats.seconds.toFixed(2)} s  (${Math.round(records / nats.seconds)} records/s, ratio ${(nats.seconds / floor).toFixed(2)}; 3 signer processes)`);
		Object.assign(summary, { natsRunSeconds: round(nats.seconds), natsRatio: round(nats.seconds / floor), natsRecordsPerSecond: Math.round(records / nats.seconds) });
	}
	console.log(JSON.stringify(summary));
}

/** The floor and the embedded run, in this process, on a fresh file store as `npm start` uses. */
async function embeddedBench(records: number, keys: number, batchSize: number): Promise<{ floor: number; run: number; peakRssMB: number }> {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-bench-"));
	const { createSystem } = await import("../system");
	const broker = createSystem(loadConfig({ RECORDS: String(records), KEYS: String(keys), BATCH_SIZE: String(batchSize), DATA_DIR: dataDir }), { logLevel: "warn" });
	const completion = new Promise<RunCompletedEvent>(resolve => broker.createService({ name: "bench-watch", events: { [Events.runCompleted]: (ctx: { params: RunCompletedEvent }) => resolve(ctx.params) } }));
	try {
		await broker.start(); // seeds the records and generates the keys: not timed
		const payloads = await storedPayloads(broker);
		let cpu = process.cpuUsage();
		const floor = await floorSeconds(payloads);
		const floorCpu = cpuSeconds(process.cpuUsage(cpu));
		const floorRssMB = Math.round(process.resourceUsage().maxRSS / 1024);
		console.log(`floor      ${floor.seconds.toFixed(2)} s  (${Math.round(records / floor.seconds)} signatures/s, ${floor.strategy}; CPU ${floorCpu.toFixed(1)} s for both readings)`);
		cpu = process.cpuUsage();
		const run = await timedRun(broker, completion, records, batchSize);
		const runCpu = cpuSeconds(process.cpuUsage(cpu));
		console.log(`embedded   ${run.seconds.toFixed(2)} s  (${Math.round(records / run.seconds)} records/s, ratio ${(run.seconds / floor.seconds).toFixed(2)}; CPU ${runCpu.toFixed(1)} s)`);
		const peakRssMB = Math.round(process.resourceUsage().maxRSS / 1024);
		console.log(`peak RSS   ${peakRssMB} MB (${floorRssMB} MB after the floor)`);
		return { floor: floor.seconds, run: run.seconds, peakRssMB };
	} finally {
		await broker.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
}

if (!isMainThread) {
	const { jwk, payloads } = workerData as { jwk: JWK; payloads: RecordPayload[] };
	void importJWK(jwk, "EdDSA").then(key => signAll(key as CryptoKey, payloads)).then(n => parentPort!.postMessage(n));
} else if (require.main === module) {
	main().catch(err => {
		console.error(err instanceof ConfigError ? err.message : err);
		process.exit(1);
	});
}
