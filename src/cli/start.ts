/**
 * `npm start`: the whole job in one process on the configured store. Seeds when empty,
 * signs every unsigned record (resuming an interrupted run), shows progress, prints the
 * report and the audit verdict; exits 0 only when everything is signed and the audit passes.
 */
import { parseArgs } from "node:util";
import type { ServiceBroker } from "moleculer";
import { ConfigError, loadConfig, type AppConfig } from "../config";
import { Events, type Progress, type RunCompletedEvent, type RunDoc } from "../contract";

const USAGE = `Usage: npm start -- [--batch-size N] [--records N] [--keys N] [--data-dir DIR] [--window N]
Environment: BATCH_SIZE, RECORDS, KEYS, DATA_DIR, MONGO_URI, LEASE_TTL_MS (see README).`;

/** The flags of a signing job, shared by `npm start` and `npm run cluster`. */
export const JOB_FLAGS = {
	"batch-size": { type: "string" },
	records: { type: "string" },
	keys: { type: "string" },
	"data-dir": { type: "string" },
	window: { type: "string" },
	help: { type: "boolean", short: "h" }
} as const;

export function parseFlags(argv: string[]) {
	return parseArgs({ args: argv, options: JOB_FLAGS, strict: true }).values;
}

function bar(done: number, total: number, width = 30): string {
	const filled = total ? Math.round((done / total) * width) : width;
	return `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
}

/** A progress bar on a terminal, a line every few seconds otherwise (CI logs). */
function watchProgress(broker: ServiceBroker): () => void {
	const tty = process.stdout.isTTY;
	const timer = setInterval(async () => {
		const snapshot = await broker.call<{ signed: number; records: number; recordsPerSecond: number; elapsedSeconds: number }>("metrics.snapshot").catch(() => null);
		if (!snapshot || !snapshot.records) return;
		const line = `${bar(snapshot.signed, snapshot.records)} ${((snapshot.signed / snapshot.records) * 100).toFixed(1)}% ${snapshot.signed.toLocaleString("en")}/${snapshot.records.toLocaleString("en")} · ${snapshot.recordsPerSecond.toLocaleString("en")} records/s · ${snapshot.elapsedSeconds.toFixed(1)} s`;
		if (tty) process.stdout.write(`\r${line}`);
		else console.log(line);
	}, tty ? 200 : 2000);
	return () => {
		clearInterval(timer);
		if (tty) process.stdout.write("\n");
	};
}

export async function runJob(config: AppConfig): Promise<number> {
	// Loaded only now: service modules read the configuration, which must be valid first.
	const { createSystem } = await import("../system");
	const { collectSnapshot } = await import("../audit/collect");
	const { audit } = await import("../audit/rules");
	const broker = createSystem(config, { logLevel: "warn" });
	let completed!: (event: RunCompletedEvent & { status: string; error?: string }) => void;
	const completion = new Promise<RunCompletedEvent & { status: string; error?: string }>(resolve => (completed = resolve));
	broker.createService({ name: "start-cli", events: { [Events.runCompleted]: (ctx: { params: RunCompletedEvent & { status: string } }) => completed(ctx.params) } });

	const stopOnSignal = () => {
		console.log("\nStopping: in-flight batches finish, the run resumes on the next `npm start`.");
		broker.stop().finally(() => process.exit(130));
	};
	process.once("SIGINT", stopOnSignal);
	process.once("SIGTERM", stopOnSignal);

	console.log(`Store: ${config.mongoUri ? "MongoDB" : config.dataDir || "memory"} · keys ${config.keys} · records ${config.records} (seeded when empty)`);
	await broker.start();
	const status = await broker.call<{ active: boolean; run: RunDoc | null; progress: Progress }>("batcher.status");
	let run: RunDoc;
	if (status.active && status.run) {
		run = status.run;
		console.log(`Resuming interrupted run ${run.runId} with its batch size ${run.batchSize}${run.batchSize !== config.batchSize ? ` (not ${config.batchSize}: a run keeps its batch size)` : ""}`);
	} else {
		run = await broker.call<RunDoc, object>("batcher.start", { batchSize: config.batchSize });
		console.log(`Run ${run.runId}: batch size ${run.batchSize}, ${status.progress.records - status.progress.signed} of ${status.progress.records} records to sign`);
	}
	const stopWatching = watchProgress(broker);
	const outcome = await completion;
	stopWatching();

	const { report } = outcome;
	console.log(`\nRun ${report.runId} ${outcome.status}${outcome.error ? `: ${outcome.error}` : ""}`);
	console.log(`  records        ${report.records} (signed in this run: ${report.signedThisRun})`);
	console.log(`  batches        ${report.batches} (failed and retried: ${report.failedBatches}), batch size ${report.batchSize}`);
	console.log(`  keys used      ${report.keysUsed}`);
	console.log(`  duplicates     ${report.duplicates} (kept the first signature)`);
	console.log(`  time           ${report.seconds.toFixed(2)} s, ${report.recordsPerSecond.toLocaleString("en")} records/s`);

	console.log("\nAuditing the stores...");
	const verdict = await audit(await collectSnapshot(broker));
	for (const violation of verdict.violations) console.log(`  VIOLATION ${violation.rule}: ${violation.message}`);
	const progress = await broker.call<Progress>("records.progress");
	const allSigned = progress.signed === progress.records;
	console.log(`Audit ${verdict.ok ? "PASSED" : "FAILED"}: ${progress.signed}/${progress.records} records signed, ${verdict.violationCount} violations`);
	await broker.stop();
	return outcome.status === "completed" && allSigned && verdict.ok ? 0 : 1;
}

async function main(): Promise<void> {
	let config: AppConfig;
	try {
		const flags = parseFlags(process.argv.slice(2));
		if (flags.help) {
			console.log(USAGE);
			return;
		}
		config = loadConfig(process.env, flags);
	} catch (err) {
		console.error(err instanceof ConfigError || (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS") ? `${(err as Error).message}\n${USAGE}` : err);
		process.exit(2);
	}
	process.exit(await runJob(config));
}

if (require.main === module) void main();
