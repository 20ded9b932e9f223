/**
 * `npm run bench`: in one process and one go, the floor (the same N payloads signed as JWS
 * EdDSA with jose on all cores, no coordination, no storage) and the full embedded run
 * (N records, K keys, batch size B, seeding excluded). Prints both, their ratio, records/s
 * and the peak RSS, and as its last line one JSON object.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { generateKeyPair, exportJWK, importJWK, type CryptoKey, type JWK } from "jose";
import { ConfigError, loadConfig } from "../config";
import { Events, type Progress, type RunCompletedEvent } from "../contract";
import { makeRecords } from "../records/records";
import { signRecord, type RecordPayload } from "../signer/jws";

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

/** The floor's two readings of "all cores": one thread feeding the pool, or a thread per core. */
async function floorSeconds(payloads: RecordPayload[]): Promise<{ seconds: number; strategy: string }> {
	const { privateKey } = await generateKeyPair("EdDSA", { extractable: true });
	const jwk = await exportJWK(privateKey);

	let started = performance.now();
	await signAll(privateKey as CryptoKey, payloads);
	const pooled = (performance.now() - started) / 1000;

	const cores = os.availableParallelism();
	const share = Math.ceil(payloads.length / cores);
	started = performance.now();
	await Promise.all(Array.from({ length: cores }, (_, i) => new Promise<void>((resolve, reject) => {
		const worker = new Worker(__filename, { workerData: { jwk, payloads: payloads.slice(i * share, (i + 1) * share) } });
		worker.once("message", () => resolve());
		worker.once("error", reject);
	})));
	const threaded = (performance.now() - started) / 1000;
	return pooled <= threaded ? { seconds: pooled, strategy: "one thread, WebCrypto pool" } : { seconds: threaded, strategy: `${cores} worker threads` };
}

async function embeddedRunSeconds(records: number, keys: number, batchSize: number): Promise<{ seconds: number; signed: number }> {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-bench-"));
	const config = loadConfig({ ...process.env, RECORDS: String(records), KEYS: String(keys), BATCH_SIZE: String(batchSize), DATA_DIR: dataDir, TRANSPORTER: "", MONGO_URI: "" });
	const { createSystem } = await import("../system");
	const broker = createSystem(config, { logLevel: "warn" });
	const completion = new Promise<RunCompletedEvent>(resolve => broker.createService({ name: "bench-watch", events: { [Events.runCompleted]: (ctx: { params: RunCompletedEvent }) => resolve(ctx.params) } }));
	try {
		await broker.start(); // seeds the records and generates the keys: not timed
		const started = performance.now();
		await broker.call("batcher.start", { batchSize });
		const { report } = await completion;
		const seconds = (performance.now() - started) / 1000;
		const progress = await broker.call<Progress>("records.progress");
		if (progress.signed !== records) throw new Error(`the run signed ${progress.signed} of ${records} records`);
		return { seconds, signed: report.signedThisRun };
	} finally {
		await broker.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
}

async function main(): Promise<void> {
	const { values } = parseArgs({ options: { records: { type: "string" }, keys: { type: "string" }, "batch-size": { type: "string" } } });
	const config = loadConfig({ RECORDS: "100000", KEYS: "100", BATCH_SIZE: "300" }, values);
	const records = config.records;
	const payloads = [...makeRecords(records)].flat().map(r => ({ id: r._id, data: r.data }));

	console.log(`Benchmark: ${records} records, ${config.keys} keys, batch size ${config.batchSize}, ${os.availableParallelism()} cores, Node ${process.version}`);
	const floor = await floorSeconds(payloads);
	console.log(`floor      ${floor.seconds.toFixed(2)} s  (${Math.round(records / floor.seconds)} signatures/s, ${floor.strategy})`);
	const run = await embeddedRunSeconds(records, config.keys, config.batchSize);
	const ratio = run.seconds / floor.seconds;
	console.log(`embedded   ${run.seconds.toFixed(2)} s  (${Math.round(records / run.seconds)} records/s, ratio ${ratio.toFixed(2)})`);
	const peakRssMB = Math.round(process.resourceUsage().maxRSS / 1024);
	console.log(`peak RSS   ${peakRssMB} MB`);
	const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
	console.log(JSON.stringify({ records, floorSeconds: round(floor.seconds), runSeconds: round(run.seconds), ratio: round(ratio), recordsPerSecond: Math.round(records / run.seconds), peakRssMB }));
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
