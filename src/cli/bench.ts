/**
 * `npm run bench`: in one process, on a fresh embedded store of N records and K keys (seeding
 * not timed):
 *
 * - the floor: the run's own payloads, read from the store, signed as the same detached JWS
 *   with libsodium's Ed25519 on one worker thread per core (the signer's own signing thread,
 *   src/signer/sign.worker.ts, the key handed off per chunk as in a run), with no
 *   coordination and no storage: the hardware's limit for this work, with the fastest library;
 * - the node:crypto floor: the same with node:crypto (OpenSSL), as the signer signed before;
 * - the jose floor: the same with jose, as the benchmark's floor was before that;
 * - the run: `batcher.start` to `run.completed`, every record signed and stored;
 * - the audit of the stored run, and its floor: the same signatures verified with libsodium
 *   on every core, nothing else checked (and with node:crypto beside it);
 * - unless `--skip-checks-cost`, seven pairs of the same run on fresh stores of the same
 *   records, with the bus checks and without (src/identity/bus-checks.ts), in turn: what
 *   dispatch tickets, lease tokens, store proofs and counting batches from records cost
 *   (`checksCost`, the median of the pairs' ratios, a fraction of the run without them);
 * - unless `--skip-logs-cost`, seven pairs likewise with the transparency logs' work and without
 *   (src/tlog/log-switch.ts): what the signature and lease logs cost (`logsCost`);
 * - unless `--skip-nats`, the run across processes over a local nats-server (three signers),
 *   and again over a NATS cluster of three routed nats-servers with TLS for clients and routes;
 * - unless `--skip-pkcs11`, and when SoftHSM is installed, the run with KEY_STORE=pkcs11 on a
 *   throwaway SoftHSM token against its own floor: the same module signing the same payloads
 *   in the same signing thread (src/signer/token-sign.worker.ts), one per core, with one token
 *   key, no coordination and no storage.
 *
 * Every ratio is against its floor. The last line is one JSON object.
 */
import os from "node:os";
import fs from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { generateKeyPairSync } from "node:crypto";
import Piscina from "piscina";
import type { ServiceBroker } from "moleculer";
import { audit } from "../audit/rules";
import { closeAfter, openStoreFiles } from "../audit/audit-db";
import { verifyFloor } from "../audit/verify-floor";
import { releaseMemory } from "../release-memory";
import { loadConfig } from "../config";
import { logVerifierKeys } from "./store";
import { Actions, Events, call, type RunCompletedEvent } from "../contract";
import { LeaseSecret, wipeHandOff } from "../signer/lease-secret";
import { SIGNING_THREAD_LIMITS } from "../signer/sign-pool";
import type { SignTask } from "../signer/sign.worker";
import { busChecks } from "../identity/bus-checks";
import { transparencyLogs } from "../tlog/log-switch";
import type { BenchSwitch } from "../bench-switch";
import { generateTokenKeys } from "../keyring/token-keys";
import { createSoftHsmToken, findSoftHsm } from "../pkcs11/softhsm";
import { Token } from "../pkcs11/token";
import type { TokenSignTask, TokenThreadData } from "../signer/token-sign.worker";
import { leaseCyclesPerSecond } from "./bench-lease-cycles";
import { checkpointStoresNow, storeFile } from "../store/sqlite";
import { createSystem } from "../system";
import { UserError } from "../user-error";
import { runCommand } from "./cli";
import type { JoseTask } from "./bench-jose.worker";
import type { NodeCryptoTask } from "./bench-node-crypto.worker";

const USAGE = `Usage: npm run bench -- [--records N] [--keys N] [--batch-size N] [--skip-nats] [--skip-checks-cost] [--skip-logs-cost] [--skip-pkcs11]
       npm run bench -- --follow [--follow-rate N[,N...]] [--nats-follow-rate N[,N...]] [--follow-seconds N]
                        [--follow-per-request N] [--linger-ms N] [--skip-nats]
  --records N         records to sign (default 100000)
  --keys N            keys in the keyring (default 100)
  --batch-size N      batch size of the run (default 300)
  --skip-nats         leave out the runs across processes over NATS (one server; three with TLS)
  --skip-checks-cost  leave out the runs without the bus checks
  --skip-logs-cost    leave out the runs without the transparency logs' work
  --skip-pkcs11       leave out the run with KEY_STORE=pkcs11 on a SoftHSM token (left out anyway without SoftHSM)
  --follow            instead: a follow run fed through POST /api/records by a load generator
                      process on loopback, embedded at --follow-rate records/s (default 20000)
                      and over NATS with 3 signers at --nats-follow-rate (default 10000); each
                      may be a list (10000,20000,30000), measured in turn: the highest kept up
                      with (95% of it sent, p99 under 1 s) is HighestKeptUpRate; each
                      for --follow-seconds (default 20), in requests of --follow-per-request
                      records (default 500), then one record a second for 10 s;
                      the time from each 202 to the stored signature (p50, p99, max)
The last line is one JSON object: floorSeconds (libsodium), nodeCryptoFloorSeconds, joseFloorSeconds,
runSeconds, ratio, recordsPerSecond, peakRssMB, auditSeconds, verifyFloorSeconds (libsodium),
nodeCryptoVerifyFloorSeconds, auditRatio, keyringCyclesPerSecond, checkedRunSeconds, uncheckedRunSeconds, checksCost and checksCpuCost unless --skip-checks-cost,
loggedRunSeconds, unloggedRunSeconds, logsCost and logsCpuCost unless --skip-logs-cost,
natsRunSeconds, natsRatio, natsClusterTlsRunSeconds, natsClusterTlsRatio unless --skip-nats,
and pkcs11FloorSeconds, pkcs11RunSeconds, pkcs11Ratio, pkcs11CpuRatio, pkcs11RecordsPerSecond unless --skip-pkcs11 or without SoftHSM.`;

const OPTIONS = {
	records: { type: "string" },
	keys: { type: "string" },
	"batch-size": { type: "string" },
	"skip-nats": { type: "boolean" },
	"skip-checks-cost": { type: "boolean" },
	"skip-logs-cost": { type: "boolean" },
	"skip-pkcs11": { type: "boolean" },
	follow: { type: "boolean" },
	"follow-rate": { type: "string" },
	"nats-follow-rate": { type: "string" },
	"follow-seconds": { type: "string" },
	"follow-per-request": { type: "string" },
	"linger-ms": { type: "string" },
} as const;

/** Payload rows per task: the signer's pool cuts batches into chunks of at most this many. */
const CHUNK = 512;

const cores = os.availableParallelism();
const seconds = (since: number) => (performance.now() - since) / 1000;
const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
const peakRssMB = () => Math.round(process.resourceUsage().maxRSS / 1024);
const workerFile = (name: string) => path.join(__dirname, `${name}${path.extname(__filename)}`);

/**
 * Streams the stored payloads, in id order and `CHUNK` at a time, as `task`s to `worker` on a
 * pool of one signing thread per core, keeping two tasks per thread in flight; returns the
 * seconds it took.
 */
async function overStoredPayloads<T>(
	dataDir: string,
	worker: string,
	task: (chunk: string) => T,
	workerData?: unknown,
): Promise<number> {
	const pool = new Piscina<T, unknown>({
		filename: workerFile(worker),
		minThreads: cores,
		maxThreads: cores,
		resourceLimits: SIGNING_THREAD_LIMITS,
		workerData,
	});
	try {
		const db = new DatabaseSync(storeFile(dataDir, "records"), { readOnly: true });
		const inFlight = new Set<Promise<unknown>>();
		const started = performance.now();
		let chunk: Array<[string, string]> = [];
		const send = async () => {
			const run: Promise<unknown> = pool
				.run(task(JSON.stringify(chunk)))
				.finally(() => inFlight.delete(run));
			inFlight.add(run);
			chunk = [];
			if (inFlight.size >= 2 * cores) await Promise.race(inFlight);
		};
		const rows = db.prepare("SELECT id, data FROM records ORDER BY id").iterate() as Iterable<{
			id: string;
			data: string;
		}>;
		for (const row of rows) {
			chunk.push([row.id, row.data]);
			if (chunk.length === CHUNK) await send();
		}
		if (chunk.length) await send();
		await Promise.all(inFlight);
		const took = seconds(started);
		db.close();
		return took;
	} finally {
		await pool.destroy();
	}
}

/**
 * The hardware floor: libsodium Ed25519 in the production signing thread, nothing else. The
 * key lives in guarded memory and reaches the threads as in a run: one hand-off per chunk.
 */
async function sodiumFloor(dataDir: string): Promise<number> {
	const key = LeaseSecret.generate("key-000");
	const handOffs: SharedArrayBuffer[] = [];
	try {
		return await overStoredPayloads(dataDir, "../signer/sign.worker", (records): SignTask => {
			const secret = key.handOff();
			handOffs.push(secret);
			return { secret, keyId: key.keyId, records, deadline: Infinity };
		});
	} finally {
		for (const handOff of handOffs) wipeHandOff(handOff);
		key.dispose();
	}
}

/** The same signatures with node:crypto (OpenSSL), one thread per core. */
async function nodeCryptoFloor(dataDir: string): Promise<number> {
	const { privateKey } = generateKeyPairSync("ed25519");
	return overStoredPayloads(dataDir, "bench-node-crypto.worker", (records): NodeCryptoTask => ({
		key: privateKey,
		keyId: "key-000",
		records,
	}));
}

/** The same signatures with jose, one thread per core. */
async function joseFloor(dataDir: string): Promise<number> {
	const { privateKey } = generateKeyPairSync("ed25519");
	const jwk = privateKey.export({ format: "jwk" });
	return overStoredPayloads(dataDir, "bench-jose.worker", (records): JoseTask => ({
		jwk,
		keyId: "key-000",
		records,
	}));
}

/**
 * The PKCS#11 floor: the token's module signing the stored payloads in the signer's own token
 * signing thread, one per core, each on a session of its own, with one token key; nothing else.
 */
async function pkcs11Floor(dataDir: string, token: Token): Promise<number> {
	const [key] = generateTokenKeys(token, 1);
	const tokenKey = key.tokenKey!;
	const threads: TokenThreadData = { token: token.settings };
	return overStoredPayloads(
		dataDir,
		"../signer/token-sign.worker",
		(records): TokenSignTask => ({ tokenKey, keyId: "key-000", records, deadline: Infinity }),
		threads,
	);
}

/**
 * KEY_STORE=pkcs11 on a throwaway SoftHSM token: the embedded run of the same records (its
 * keyring generates its keys in the token, its signer signs there), against the PKCS#11 floor.
 * Null without SoftHSM.
 */
async function pkcs11Figures(
	records: number,
	keys: number,
	batchSize: number,
): Promise<{
	floorSeconds: number;
	runSeconds: number;
	floorCpuSeconds: number;
	runCpuSeconds: number;
} | null> {
	if (!findSoftHsm()) {
		console.log("pkcs11     left out: SoftHSM is not installed (apt-get install -y softhsm2)");
		return null;
	}
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-bench-token-"));
	const softHsm = createSoftHsmToken(dir);
	// SoftHSM reads its configuration from this process's environment when Cryptoki starts.
	process.env.SOFTHSM2_CONF = softHsm.env.SOFTHSM2_CONF;
	// Held for the whole figure: Cryptoki stays initialised by this thread, whichever threads sign.
	const token = await Token.open(softHsm.settings);
	const system = await seededSystem(records, keys, batchSize, softHsm.env);
	try {
		// CPU time beside wall time: other jobs on a shared machine move the second far more.
		const cpuSeconds = (since: NodeJS.CpuUsage) => {
			const used = process.cpuUsage(since);
			return (used.user + used.system) / 1e6;
		};
		let cpu = process.cpuUsage();
		const floorSeconds = await pkcs11Floor(system.dataDir, token);
		const floorCpuSeconds = cpuSeconds(cpu);
		console.log(
			`pkcs11 floor ${floorSeconds.toFixed(2)} s  (${Math.round(records / floorSeconds)} signatures/s: SoftHSM's CKM_EDDSA, ${cores} threads with a session each, no coordination, no storage; CPU ${floorCpuSeconds.toFixed(2)} s)`,
		);
		cpu = process.cpuUsage();
		const runSeconds = await timedRun(system.broker, system.completion, records, batchSize);
		const runCpuSeconds = cpuSeconds(cpu);
		console.log(
			`pkcs11     ${runSeconds.toFixed(2)} s  (${Math.round(records / runSeconds)} records/s, ratio ${(runSeconds / floorSeconds).toFixed(2)} to the PKCS#11 floor, CPU ${runCpuSeconds.toFixed(2)} s, ${(runCpuSeconds / floorCpuSeconds).toFixed(2)} of the floor's; keys in the token)`,
		);
		await system.broker.stop();
		const verdict = await auditStoreFolder(system.dataDir);
		if (!verdict.ok)
			throw new Error(
				`the audit of the PKCS#11 run failed: ${verdict.violations[0]?.message ?? ""}`,
			);
		return { floorSeconds, runSeconds, floorCpuSeconds, runCpuSeconds };
	} finally {
		await system.remove();
		token.close();
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

async function timedRun(
	broker: ServiceBroker,
	completion: Promise<RunCompletedEvent>,
	records: number,
	batchSize: number,
): Promise<number> {
	const started = performance.now();
	await call(broker, Actions.batcher.start, { batchSize });
	const outcome = await completion;
	const took = seconds(started);
	const progress = await call(broker, Actions.records.progress, {});
	if (outcome.status !== "completed" || progress.signed !== records)
		throw new Error(
			`the run ended ${outcome.status} with ${progress.signed} of ${records} records signed: ${outcome.error ?? ""}`,
		);
	return took;
}

interface EmbeddedFigures {
	/** libsodium's floor: the fastest. */
	floorSeconds: number;
	nodeCryptoFloorSeconds: number;
	joseFloorSeconds: number;
	runSeconds: number;
	auditSeconds: number;
	/** libsodium's verify floor, and node:crypto's. */
	verifyFloorSeconds: number;
	nodeCryptoVerifyFloorSeconds: number;
	peakRssMB: number;
	/** The same run with the bus checks off, unless skipped. */
	checks: SwitchCost | null;
	/** The same run with the transparency logs' work stopped, unless skipped. */
	logs: SwitchCost | null;
}

/** Medians of the pairs of runs with a part of the work and without it (`switchCost`). */
interface SwitchCost {
	withSeconds: number;
	withoutSeconds: number;
	/** The pairs' median ratio of wall time, minus one; `cpuCost` the same of CPU time. */
	cost: number;
	cpuCost: number;
}

/** The audit of a bench run's store folder; the logs' checkpoints open with the keys the run made there. */
function auditStoreFolder(dataDir: string) {
	return closeAfter(openStoreFiles(dataDir), (db) =>
		audit(db, { logKeys: logVerifierKeys(loadConfig({ DATA_DIR: dataDir })) }),
	);
}

/** A started embedded system on a fresh store of `records` records, and its next run's completion. */
async function seededSystem(
	records: number,
	keys: number,
	batchSize: number,
	env: Record<string, string> = {},
) {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-bench-"));
	const broker = createSystem(
		loadConfig({
			...env,
			RECORDS: String(records),
			KEYS: String(keys),
			BATCH_SIZE: String(batchSize),
			DATA_DIR: dataDir,
		}),
		{ logLevel: "warn" },
	);
	const completion = new Promise<RunCompletedEvent>((resolve) =>
		broker.createService({
			name: "bench-watch",
			events: {
				[Events.runCompleted]: (ctx: { params: RunCompletedEvent }) => resolve(ctx.params),
			},
		}),
	);
	const started = performance.now();
	await broker.start();
	console.log(
		`seeded     ${records} records and ${keys} keys in ${seconds(started).toFixed(1)} s (not timed)`,
	);
	const remove = async () => {
		if (broker.started) await broker.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	};
	return { dataDir, broker, completion, remove };
}

/**
 * The run on a fresh store of the same records, with `off` (a bench switch) off in this process
 * or not: its wall time, and the CPU time of every thread of the process meanwhile (which other
 * jobs on a shared machine disturb far less than the wall time).
 */
async function freshRun(
	records: number,
	keys: number,
	batchSize: number,
	off: BenchSwitch | null,
): Promise<{ seconds: number; cpuSeconds: number }> {
	const system = await seededSystem(records, keys, batchSize);
	try {
		checkpointStoresNow(system.dataDir);
		const run = () => timedRun(system.broker, system.completion, records, batchSize);
		const cpuBefore = process.cpuUsage();
		const took = await (off ? off.without(run) : run());
		const cpu = process.cpuUsage(cpuBefore);
		return { seconds: took, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
	} finally {
		await system.remove();
	}
}

/**
 * Pairs of runs measured in turn, with a part of the work and without: the median of the pairs'
 * ratios is what it costs. Seven, not three: single runs on a shared machine move by more than
 * the bus checks cost (pairs of one bench ranged over 10 points), and the median of three pairs
 * moved from 1.5% to 15.5% between benches of the same code.
 */
const COST_PAIRS = 7;

/** What the work behind a bench switch costs: `label` names it in the lines printed, `what` says what it is. */
async function switchCost(
	records: number,
	keys: number,
	batchSize: number,
	{ label, off, what }: { label: string; off: BenchSwitch; what: string },
): Promise<SwitchCost> {
	type Took = Awaited<ReturnType<typeof freshRun>>;
	const pairs: Array<{ with: Took; without: Took }> = [];
	const name = label.padEnd(10);
	for (let i = 0; i < COST_PAIRS; i++) {
		// Alternating which goes first, so a machine speeding up or slowing down favours neither.
		const order = i % 2 === 0 ? [true, false] : [false, true];
		const took: Record<string, Took> = {};
		for (const on of order)
			took[String(on)] = await freshRun(records, keys, batchSize, on ? null : off);
		const pair = { with: took.true, without: took.false };
		pairs.push(pair);
		const percent = (of: (t: Took) => number) =>
			(100 * (of(pair.with) / of(pair.without) - 1)).toFixed(1);
		console.log(
			`${name} pair ${i + 1}: ${pair.with.seconds.toFixed(2)} s with the ${label}, ${pair.without.seconds.toFixed(2)} s without (${percent((t) => t.seconds)}%; CPU time ${percent((t) => t.cpuSeconds)}%)`,
		);
	}
	const median = (values: number[]) =>
		[...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
	const wall = pairs.map((pair) => pair.with.seconds / pair.without.seconds - 1);
	const cpu = pairs.map((pair) => pair.with.cpuSeconds / pair.without.cpuSeconds - 1);
	const range = (ratios: number[]) =>
		`${(100 * Math.min(...ratios)).toFixed(1)}% to ${(100 * Math.max(...ratios)).toFixed(1)}%`;
	console.log(
		`${name} cost ${(100 * median(wall)).toFixed(1)}% of the run, ${(100 * median(cpu)).toFixed(1)}% of its CPU time (medians of ${COST_PAIRS} pairs, which ranged ${range(wall)} and ${range(cpu)}: ${what})`,
	);
	return {
		withSeconds: median(pairs.map((pair) => pair.with.seconds)),
		withoutSeconds: median(pairs.map((pair) => pair.without.seconds)),
		cost: median(wall),
		cpuCost: median(cpu),
	};
}

async function embedded(
	records: number,
	keys: number,
	batchSize: number,
	costs: { checks: boolean; logs: boolean },
): Promise<EmbeddedFigures> {
	const { dataDir, broker, completion, remove } = await seededSystem(records, keys, batchSize);
	try {
		const floorSeconds = await sodiumFloor(dataDir);
		console.log(
			`floor      ${floorSeconds.toFixed(2)} s  (${Math.round(records / floorSeconds)} signatures/s: libsodium Ed25519, ${cores} threads, no coordination, no storage)`,
		);
		const nodeCryptoFloorSeconds = await nodeCryptoFloor(dataDir);
		console.log(
			`node:crypto floor ${nodeCryptoFloorSeconds.toFixed(2)} s  (${Math.round(records / nodeCryptoFloorSeconds)} signatures/s: the same with node:crypto; libsodium ${(nodeCryptoFloorSeconds / floorSeconds).toFixed(2)}x as fast)`,
		);
		const joseFloorSeconds = await joseFloor(dataDir);
		console.log(
			`jose floor ${joseFloorSeconds.toFixed(2)} s  (${Math.round(records / joseFloorSeconds)} signatures/s: the same with jose)`,
		);

		const runSeconds = await timedRun(broker, completion, records, batchSize);
		console.log(
			`embedded   ${runSeconds.toFixed(2)} s  (${Math.round(records / runSeconds)} records/s, ratio ${(runSeconds / floorSeconds).toFixed(2)})`,
		);
		await broker.stop();
		// As npm start does: the audit's memory does not come on top of what the run's heap grew to.
		releaseMemory();

		const started = performance.now();
		const verdict = await auditStoreFolder(dataDir);
		const auditSeconds = seconds(started);
		if (!verdict.ok)
			throw new Error(
				`the audit of the benchmark's run failed: ${verdict.violations
					.slice(0, 3)
					.map((v) => v.message)
					.join("; ")}`,
			);
		const verifyFloorSeconds = (await verifyFloor(dataDir)).seconds;
		const nodeCryptoVerifyFloorSeconds = (
			await verifyFloor(dataDir, { library: "node:crypto" })
		).seconds;
		console.log(
			`audit      ${auditSeconds.toFixed(2)} s  (verify floor ${verifyFloorSeconds.toFixed(2)} s: libsodium on ${cores} threads; ratio ${(auditSeconds / verifyFloorSeconds).toFixed(2)}; ` +
				`node:crypto's verify floor ${nodeCryptoVerifyFloorSeconds.toFixed(2)} s, libsodium ${(nodeCryptoVerifyFloorSeconds / verifyFloorSeconds).toFixed(2)}x as fast)`,
		);
		const rss = peakRssMB();
		const checks = costs.checks
			? await switchCost(records, keys, batchSize, {
					label: "checks",
					off: busChecks,
					what: "tickets, lease tokens, proofs and counting batches from records",
				})
			: null;
		const logs = costs.logs
			? await switchCost(records, keys, batchSize, {
					label: "logs",
					off: transparencyLogs,
					what: "the signing threads' leaf hashes, the signature and lease logs' trees and tiles, and their checkpoints",
				})
			: null;
		return {
			floorSeconds,
			nodeCryptoFloorSeconds,
			joseFloorSeconds,
			runSeconds,
			auditSeconds,
			verifyFloorSeconds,
			nodeCryptoVerifyFloorSeconds,
			peakRssMB: rss,
			checks,
			logs,
		};
	} finally {
		await remove();
	}
}

type BenchFlags = {
	records?: string;
	keys?: string;
	"batch-size"?: string;
	"skip-nats"?: boolean;
	"skip-checks-cost"?: boolean;
	"skip-logs-cost"?: boolean;
	"skip-pkcs11"?: boolean;
	follow?: boolean;
	"follow-rate"?: string;
	"nats-follow-rate"?: string;
	"follow-seconds"?: string;
	"follow-per-request"?: string;
	"linger-ms"?: string;
};

/** A comma-separated list of positive rates, or the default. */
function ratesFlag(value: string | undefined, fallback: number, name: string): number[] {
	return value === undefined
		? [fallback]
		: value.split(",").map((rate) => rateFlag(rate.trim(), fallback, name));
}

/** A positive number flag, or its default. */
function rateFlag(value: string | undefined, fallback: number, name: string): number {
	if (value === undefined) return fallback;
	const n = Number(value);
	if (!Number.isFinite(n) || n <= 0) throw new UserError(`--${name} must be a positive number`);
	return n;
}

/** `--follow`: the follow benchmark (src/cli/bench-follow.ts); its last line is one JSON object too. */
async function followMain(flags: BenchFlags): Promise<number> {
	const { keys, batchSize, lingerMs } = loadConfig(
		{ KEYS: "100", BATCH_SIZE: "300" },
		{ keys: flags.keys, "batch-size": flags["batch-size"], "linger-ms": flags["linger-ms"] },
	);
	const seconds = rateFlag(flags["follow-seconds"], 20, "follow-seconds");
	const perRequest = Math.min(
		1_000,
		Math.round(rateFlag(flags["follow-per-request"], 500, "follow-per-request")),
	);
	const trickle = { rate: 1, seconds: 10, perRequest: 1 };
	console.log(
		`Follow benchmark: batch size ${batchSize}, LINGER_MS ${lingerMs}, ${keys} keys, ${cores} cores, Node ${process.version}; the load generator is a process of its own on loopback`,
	);
	const { embeddedTarget, followBench, keptUp, natsTarget } = await import("./bench-follow");
	const summary: Record<string, unknown> = {};
	const modes = [
		{
			field: "followEmbedded",
			open: () => embeddedTarget(keys, batchSize, lingerMs),
			rates: ratesFlag(flags["follow-rate"], 20_000, "follow-rate"),
		},
		...(flags["skip-nats"]
			? []
			: [
					{
						field: "followNats",
						open: () => natsTarget(keys, batchSize, lingerMs),
						rates: ratesFlag(flags["nats-follow-rate"], 10_000, "nats-follow-rate"),
					},
				]),
	];
	for (const { field, open, rates } of modes) {
		const figures = await followBench(
			open,
			rates.map((rate) => ({ rate, seconds, perRequest })),
			trickle,
		);
		const slow = figures.pop()!;
		const [steady] = figures;
		const kept = figures.filter(keptUp).map((f) => f.rate);
		Object.assign(summary, {
			[`${field}Rate`]: steady.rate,
			[`${field}SentPerSecond`]: steady.achievedRate,
			[`${field}P50Ms`]: steady.p50Ms,
			[`${field}P99Ms`]: steady.p99Ms,
			[`${field}MaxMs`]: steady.maxMs,
			[`${field}DrainMs`]: steady.drainMs,
			[`${field}OnePerSecondP99Ms`]: slow.p99Ms,
			[`${field}OnePerSecondMaxMs`]: slow.maxMs,
			[`${field}HighestKeptUpRate`]: kept.length ? Math.max(...kept) : 0,
			...(figures.length > 1
				? {
						[`${field}Loads`]: figures.map((f) => ({
							rate: f.rate,
							sentPerSecond: f.achievedRate,
							p50Ms: f.p50Ms,
							p99Ms: f.p99Ms,
							maxMs: f.maxMs,
							keptUp: keptUp(f),
						})),
					}
				: {}),
		});
	}
	console.log(JSON.stringify(summary));
	return 0;
}

async function main(flags: BenchFlags): Promise<number> {
	if (flags.follow) return followMain(flags);
	const {
		"skip-nats": skipNats,
		"skip-checks-cost": skipChecksCost,
		"skip-logs-cost": skipLogsCost,
		"skip-pkcs11": skipPkcs11,
		follow: _follow,
		"follow-rate": _followRate,
		"nats-follow-rate": _natsFollowRate,
		"follow-seconds": _followSeconds,
		"follow-per-request": _followPerRequest,
		"linger-ms": _lingerMs,
		...sizes
	} = flags;
	const { records, keys, batchSize } = loadConfig(
		{ RECORDS: "100000", KEYS: "100", BATCH_SIZE: "300" },
		sizes,
	);
	console.log(
		`Benchmark: ${records} records, ${keys} keys, batch size ${batchSize}, ${cores} cores, Node ${process.version}`,
	);
	const figures = await embedded(records, keys, batchSize, {
		checks: !skipChecksCost,
		logs: !skipLogsCost,
	});
	console.log(`peak RSS   ${figures.peakRssMB} MB`);
	const summary: Record<string, number> = {
		records,
		floorSeconds: round(figures.floorSeconds),
		nodeCryptoFloorSeconds: round(figures.nodeCryptoFloorSeconds),
		joseFloorSeconds: round(figures.joseFloorSeconds),
		runSeconds: round(figures.runSeconds),
		ratio: round(figures.runSeconds / figures.floorSeconds),
		recordsPerSecond: Math.round(records / figures.runSeconds),
		peakRssMB: figures.peakRssMB,
		auditSeconds: round(figures.auditSeconds),
		verifyFloorSeconds: round(figures.verifyFloorSeconds),
		nodeCryptoVerifyFloorSeconds: round(figures.nodeCryptoVerifyFloorSeconds),
		auditRatio: round(figures.auditSeconds / figures.verifyFloorSeconds),
	};
	// The keyring alone: lease cycles a second, with proofs, in this process.
	const cycles = await leaseCyclesPerSecond(keys);
	console.log(
		`keyring    ${Math.round(cycles)} lease cycles/s (acquire and release with proofs and a ticket, in process)`,
	);
	summary.keyringCyclesPerSecond = Math.round(cycles);
	if (figures.checks)
		Object.assign(summary, {
			checkedRunSeconds: round(figures.checks.withSeconds),
			uncheckedRunSeconds: round(figures.checks.withoutSeconds),
			checksCost: round(figures.checks.cost),
			checksCpuCost: round(figures.checks.cpuCost),
		});
	if (figures.logs)
		Object.assign(summary, {
			loggedRunSeconds: round(figures.logs.withSeconds),
			unloggedRunSeconds: round(figures.logs.withoutSeconds),
			logsCost: round(figures.logs.cost),
			logsCpuCost: round(figures.logs.cpuCost),
		});
	if (!skipNats) {
		// Separate OS processes over a local nats-server, then over the production shape (three
		// routed nats-servers, TLS for clients and routes), each measured against the same floor.
		const { runOverNats } = await import("../cluster/run-over-nats");
		const shapes = [
			{ field: "nats", label: "over NATS ", nats: undefined },
			{ field: "natsClusterTls", label: "NATS x3 TLS", nats: { size: 3, tls: true } },
		];
		for (const { field, label, nats } of shapes) {
			const run = await runOverNats({ records, keys, batchSize, signers: 3, nats });
			console.log(
				`${label} ${run.seconds.toFixed(2)} s  (${Math.round(records / run.seconds)} records/s, ratio ${(run.seconds / figures.floorSeconds).toFixed(2)}; 3 signer processes)`,
			);
			Object.assign(summary, {
				[`${field}RunSeconds`]: round(run.seconds),
				[`${field}Ratio`]: round(run.seconds / figures.floorSeconds),
				[`${field}RecordsPerSecond`]: Math.round(records / run.seconds),
			});
		}
	}
	const pkcs11 = skipPkcs11 ? null : await pkcs11Figures(records, keys, batchSize);
	if (pkcs11)
		Object.assign(summary, {
			pkcs11FloorSeconds: round(pkcs11.floorSeconds),
			pkcs11RunSeconds: round(pkcs11.runSeconds),
			pkcs11Ratio: round(pkcs11.runSeconds / pkcs11.floorSeconds),
			pkcs11CpuRatio: round(pkcs11.runCpuSeconds / pkcs11.floorCpuSeconds),
			pkcs11RecordsPerSecond: Math.round(records / pkcs11.runSeconds),
		});
	console.log(JSON.stringify(summary));
	return 0;
}

if (require.main === module)
	void runCommand({ name: "npm run bench", usage: USAGE, options: OPTIONS }, main);
