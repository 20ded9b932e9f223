/**
 * `npm run bench -- --follow`: a follow run fed through the API by a load generator in a process
 * of its own (src/cli/bench-load.ts) on loopback, and how long each record takes from its
 * submission's 202 to its stored signature. Embedded (every service and the gateway in this
 * process) and over NATS (a cluster of processes, three signers; the gateway in this process
 * as the `api` user). Per mode: a steady inflow (20,000 records/s embedded, 10,000 over NATS, in
 * requests of 500 records by default), then one record a second.
 *
 * A record's signature counts as stored when its batch is counted signed (`batch.signed`, sent
 * once records holds a signature under it for every record: docs/design.md §6.6), an upper bound
 * on when it was stored. Times are epoch milliseconds in both processes (one machine, one clock).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { ServiceBroker, type Context } from "moleculer";
import { createApiService } from "../../services/api.service";
import { issueToken, loadAuthConfig } from "../api/auth";
import { apiOptions } from "../api/settings";
import { brokerOptions } from "../broker/broker-options";
import { Cluster } from "../cluster/launcher";
import { loadConfig, type AppConfig } from "../config";
import { Actions, call, Events, type BatchDoc, type BatchSignedEvent } from "../contract";
import { createSystem } from "../system";

export interface FollowLoad {
	/** Records a second. */
	rate: number;
	seconds: number;
	perRequest: number;
}

export interface FollowFigures {
	mode: string;
	rate: number;
	/** Records the generator sent, the ones answered 202, and the rate it reached. */
	sent: number;
	accepted: number;
	achievedRate: number;
	/** Milliseconds from a record's 202 to its stored signature. */
	p50Ms: number;
	p99Ms: number;
	maxMs: number;
	/** From the last 202 until every record was signed. */
	drainMs: number;
	/** Batches of the load: full, and smaller because they lingered. */
	fullBatches: number;
	lingeredBatches: number;
}

const epochNow = () => performance.timeOrigin + performance.now();
const percentile = (sorted: Float64Array, p: number) =>
	sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] : NaN;

/** A gateway and the follow run it feeds: what a load needs, whatever runs the services. */
interface Target {
	mode: string;
	broker: ServiceBroker;
	baseUrl: string;
	token: string;
	runId: string;
	/** When each batch was counted signed (epoch ms). */
	signedAt: Map<string, number>;
	stop(): Promise<void>;
}

/** A service recording when each batch is counted signed; over NATS its own group, so it sees every one. */
function watchBatches(broker: ServiceBroker, signedAt: Map<string, number>): void {
	broker.createService({
		name: `bench-follow-${process.pid}`,
		events: {
			[Events.batchSigned](ctx: Context<BatchSignedEvent>) {
				signedAt.set(ctx.params.batchId, epochNow());
			},
		},
	});
}

/** The gateway on loopback, on a free port, with a token that may submit records and start runs. */
async function gateway(broker: ServiceBroker, config: AppConfig) {
	broker.createService(
		createApiService({ ...apiOptions(config), port: 0, portSet: false, ip: "127.0.0.1" }),
	);
	return async () => {
		const service = broker.getLocalService("api") as unknown as {
			server: import("node:http").Server;
		};
		const { port } = service.server.address() as AddressInfo;
		const auth = await loadAuthConfig(config.authEnv, config.dataDir);
		const token = await issueToken(auth, {
			scope: "records:write runs:write",
			ttl: 3_600,
			subject: "bench-load",
		});
		return { baseUrl: `http://127.0.0.1:${port}`, token };
	};
}

/**
 * A target serving `broker`: it watches batches, mounts the gateway, starts the broker, waits
 * for `ready`, and starts the follow run.
 */
async function servedTarget(
	mode: string,
	broker: ServiceBroker,
	config: AppConfig,
	batchSize: number,
	stop: () => Promise<void>,
	ready: () => Promise<void> = async () => {},
): Promise<Target> {
	const signedAt = new Map<string, number>();
	watchBatches(broker, signedAt);
	const address = await gateway(broker, config);
	await broker.start();
	await ready();
	const { baseUrl, token } = await address();
	const run = await call(broker, Actions.batcher.start, { batchSize, follow: true });
	return { mode, broker, baseUrl, token, runId: run.runId, signedAt, stop };
}

/** Every service and the gateway in this process, on a fresh embedded store. */
export async function embeddedTarget(
	keys: number,
	batchSize: number,
	lingerMs: number,
): Promise<Target> {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-bench-follow-"));
	const config = loadConfig({
		RECORDS: "1",
		KEYS: String(keys),
		BATCH_SIZE: String(batchSize),
		LINGER_MS: String(lingerMs),
		DATA_DIR: dataDir,
	});
	const broker = createSystem(config, { logLevel: "warn" });
	return servedTarget("embedded", broker, config, batchSize, async () => {
		await broker.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	});
}

/** A cluster of processes over a local nats-server (three signers); the gateway in this process as the `api` user. */
export async function natsTarget(
	keys: number,
	batchSize: number,
	lingerMs: number,
): Promise<Target> {
	const root = fs.mkdtempSync(path.join(os.tmpdir(), "signing-bench-follow-nats-"));
	const cluster = await Cluster.start({
		root,
		signers: 3,
		logLevel: "warn",
		clientLogLevel: "error",
		env: {
			RECORDS: "1",
			KEYS: String(keys),
			BATCH_SIZE: String(batchSize),
			LINGER_MS: String(lingerMs),
			MONGO_URI: "",
		},
	});
	try {
		await cluster.ready(600_000);
		const config = loadConfig({
			...cluster.natsEnv,
			TRANSPORTER: cluster.natsUrl("api"),
			NAMESPACE: cluster.namespace,
			DATA_DIR: cluster.dataDir,
			RECORDS: "1",
		});
		const broker = new ServiceBroker({
			...brokerOptions(config, { nodeID: `bench-api-${process.pid}`, logLevel: "warn" }),
			skipProcessEventRegistration: true,
		});
		return await servedTarget(
			"over NATS, 3 signers",
			broker,
			config,
			batchSize,
			async () => {
				await broker.stop();
				await cluster.stop();
				fs.rmSync(root, { recursive: true, force: true });
			},
			() => broker.waitForServices(["records", "batcher"], 30_000),
		);
	} catch (err) {
		await cluster.stop();
		fs.rmSync(root, { recursive: true, force: true });
		throw err;
	}
}

/** Runs the load generator to its end; each record's 202 time (epoch ms) by its number, NaN when refused. */
async function generate(
	target: Target,
	load: FollowLoad,
	prefix: string,
): Promise<{ answeredAt: Float64Array; sent: number; seconds: number; lastAnswer: number }> {
	const total = Math.round(load.rate * load.seconds);
	const answeredAt = new Float64Array(total).fill(NaN);
	let lastAnswer = 0;
	let done: { sent: number; seconds: number } | null = null;
	const script = path.join(__dirname, `bench-load${path.extname(__filename)}`);
	const child = spawn(
		process.execPath,
		[
			script,
			"--url",
			target.baseUrl,
			"--token",
			target.token,
			"--rate",
			String(load.rate),
			"--seconds",
			String(load.seconds),
			"--per-request",
			String(load.perRequest),
			"--prefix",
			prefix,
		],
		{ stdio: ["ignore", "pipe", "inherit"] },
	);
	let rest = "";
	child.stdout.setEncoding("utf8");
	child.stdout.on("data", (chunk: string) => {
		const lines = (rest + chunk).split("\n");
		rest = lines.pop() ?? "";
		for (const line of lines) {
			const [first, count, status, at] = line.split(" ");
			if (first === "done") {
				done = { sent: Number(status), seconds: Number(at) };
				continue;
			}
			if (status !== "202") continue;
			const time = Number(at);
			lastAnswer = Math.max(lastAnswer, time);
			for (let n = Number(first); n < Number(first) + Number(count); n++)
				answeredAt[n] = time;
		}
	});
	const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
	if (code !== 0 || !done) throw new Error(`the load generator exited with code ${code}`);
	const { sent, seconds } = done as { sent: number; seconds: number };
	return { answeredAt, sent, seconds, lastAnswer };
}

/** Every batch of the run, paged from the batcher's store. */
async function batchesOf(broker: ServiceBroker, runId: string): Promise<BatchDoc[]> {
	const batches: BatchDoc[] = [];
	let after: string | undefined;
	for (;;) {
		const page = await call(broker, Actions.batcher.page, {
			collection: "batches",
			limit: 1_000,
			...(after ? { after } : {}),
		});
		for (const doc of page.docs as unknown as BatchDoc[])
			if (doc.runId === runId) batches.push(doc);
		if (!page.next) return batches;
		after = page.next;
	}
}

/** One load against the target's follow run, measured from each 202 to the stored signature. */
export async function measureLoad(
	target: Target,
	load: FollowLoad,
	prefix: string,
): Promise<FollowFigures> {
	const before = await call(target.broker, Actions.records.progress, {});
	const { answeredAt, sent, seconds, lastAnswer } = await generate(target, load, prefix);
	const accepted = answeredAt.reduce((n, t) => n + (Number.isNaN(t) ? 0 : 1), 0);
	const deadline = Date.now() + 60_000;
	for (;;) {
		const progress = await call(target.broker, Actions.records.progress, {});
		if (progress.signed >= before.signed + accepted) break;
		if (Date.now() > deadline)
			throw new Error(
				`${before.signed + accepted - progress.signed} records of the load still unsigned a minute after it ended`,
			);
		await new Promise((resolve) => setTimeout(resolve, 5));
	}
	const drainMs = Math.max(0, epochNow() - lastAnswer);
	// Wait for the last batch.signed events to arrive before matching.
	await new Promise((resolve) => setTimeout(resolve, 200));
	const latencies: number[] = [];
	let fullBatches = 0;
	let lingeredBatches = 0;
	const pattern = new RegExp(`^${prefix}-(\\d+)$`);
	for (const batch of await batchesOf(target.broker, target.runId)) {
		const signedAt = target.signedAt.get(batch.batchId);
		let ofLoad = false;
		for (const id of batch.recordIds) {
			const match = pattern.exec(id);
			if (!match) continue;
			ofLoad = true;
			const answered = answeredAt[Number(match[1])];
			if (signedAt !== undefined && !Number.isNaN(answered))
				latencies.push(signedAt - answered);
		}
		if (ofLoad && batch.short === "lingered") lingeredBatches++;
		else if (ofLoad && batch.short == null) fullBatches++;
	}
	const sorted = Float64Array.from(latencies).sort();
	return {
		mode: target.mode,
		rate: load.rate,
		sent,
		accepted,
		achievedRate: Math.round(sent / seconds),
		p50Ms: Math.round(percentile(sorted, 0.5)),
		p99Ms: Math.round(percentile(sorted, 0.99)),
		maxMs: Math.round(sorted[sorted.length - 1] ?? NaN),
		drainMs: Math.round(drainMs),
		fullBatches,
		lingeredBatches,
	};
}

export function followLine(f: FollowFigures): string {
	return `follow     ${f.mode}, ${f.rate} records/s asked, ${f.achievedRate} sent (${f.accepted}/${f.sent} accepted): 202 -> stored signature p50 ${f.p50Ms} ms, p99 ${f.p99Ms} ms, max ${f.maxMs} ms; drained ${f.drainMs} ms after the last 202; batches ${f.fullBatches} full, ${f.lingeredBatches} lingered`;
}

/** Whether a load was kept up with: the generator reached 95% of the rate asked, and p99 stayed under a second. */
export function keptUp(f: FollowFigures): boolean {
	return f.achievedRate >= 0.95 * f.rate && f.p99Ms < 1_000;
}

/**
 * The follow benchmark of one target: each steady inflow in turn (each drained before the next),
 * then one record a second; the run cancelled after. Returns the steady loads' figures, then the trickle's.
 */
export async function followBench(
	open: () => Promise<Target>,
	steady: FollowLoad[],
	trickle: FollowLoad,
): Promise<FollowFigures[]> {
	const target = await open();
	try {
		const figures: FollowFigures[] = [];
		const loads = [
			...steady.map((load, i) => [load, `steady${i}`] as const),
			[trickle, "trickle"] as const,
		];
		for (const [load, prefix] of loads) {
			const measured = await measureLoad(target, load, prefix);
			console.log(
				`${followLine(measured)}${load === trickle ? "" : keptUp(measured) ? " (kept up)" : " (did not keep up)"}`,
			);
			figures.push(measured);
		}
		await call(target.broker, Actions.batcher.cancel, { runId: target.runId });
		return figures;
	} finally {
		await target.stop();
	}
}
