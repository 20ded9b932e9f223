/**
 * `npm run cluster`: the job of `npm start`, but as production runs it: a local nats-server,
 * one keyring process, one records+batcher+metrics process and N signer processes, each the
 * moleculer-runner command line with its own DATA_DIR under `DATA_DIR/cluster`. This process
 * joins as a client node: it starts (or follows the resumed) run, shows progress, prints the
 * report and the audit verdict, and exits 0 only when all is signed and the audit passes.
 * `--keep` leaves the cluster running until Ctrl-C.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { ConfigError, loadConfig, type AppConfig } from "../config";
import { JOB_FLAGS } from "./start";
import type { Progress, RunDoc } from "../contract";

const USAGE = `Usage: npm run cluster -- [--signers N] [--batch-size N] [--records N] [--keys N] [--data-dir DIR] [--window N] [--transporter URL] [--keep]
  --signers N        signer processes (default 3)
  --transporter URL  join this nats-server instead of starting one
  --keep             leave the cluster running after the run (Ctrl-C stops it)
Environment: BATCH_SIZE, RECORDS, KEYS, DATA_DIR, LEASE_TTL_MS, ... (see README). Stores go to DATA_DIR/cluster/<role>, logs to DATA_DIR/cluster/logs.`;

function parseFlags(argv: string[]) {
	const options = { ...JOB_FLAGS, signers: { type: "string" }, transporter: { type: "string" }, keep: { type: "boolean" } } as const;
	return parseArgs({ args: argv, options, strict: true }).values;
}

function parseSigners(raw: string | undefined): number {
	if (raw === undefined) return 3;
	const value = Number(raw);
	if (!Number.isInteger(value) || value < 1 || value > 64) throw new ConfigError(`--signers must be an integer from 1 to 64, got "${raw}"`);
	return value;
}

function bar(done: number, total: number, width = 30): string {
	const filled = total ? Math.round((done / total) * width) : width;
	return `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
}

async function runCluster(config: AppConfig, signers: number, keep: boolean, transporter: string | undefined): Promise<number> {
	// Loaded only now: they read the configuration, which must be valid first.
	const { Cluster, ROLE_SERVICES } = await import("../cluster/launcher");
	const { collectSnapshot, pageAll } = await import("../audit/collect");
	const { audit } = await import("../audit/rules");
	const root = path.join(config.dataDir, "cluster");
	const tty = process.stdout.isTTY;
	let progressShown = false;
	const say = (line: string) => {
		if (progressShown && tty) process.stdout.write("\n");
		progressShown = false;
		console.log(line);
	};

	say(`Cluster in ${root}: ${transporter ? `NATS at ${transporter}` : "a local nats-server"}, 1 keyring, 1 records+batcher+metrics node, ${signers} signer(s)`);
	const cluster = await Cluster.start({
		root,
		signers,
		transporter,
		namespace: config.namespace,
		logLevel: config.logLevel,
		env: {
			RECORDS: String(config.records),
			KEYS: String(config.keys),
			BATCH_SIZE: String(config.batchSize),
			WINDOW: String(config.window),
			LEASE_TTL_MS: String(config.leaseTtlMs),
			LEASE_MARGIN_MS: String(config.leaseMarginMs),
			LEASE_GRACE_MS: String(config.leaseGraceMs),
			ACQUIRE_WAIT_MS: String(config.acquireWaitMs)
		},
		// The nodes' own warnings and errors, as they happen; everything is in the log files.
		onLine: (role, line) => {
			if (/\b(WARN|ERROR|FATAL)\b/.test(line)) say(`  [${role.name}] ${line}`);
		}
	});

	let stopping: Promise<void> | null = null;
	const stop = () => (stopping ??= cluster.stop());
	// Set once the run has ended and been audited: a kept cluster stopped later exits with it.
	let verdictCode: number | null = null;
	const onSignal = (signal: NodeJS.Signals) => {
		say(verdictCode === null
			? `\n${signal}: stopping the cluster (batches in flight finish or come back; the run resumes on the next \`npm run cluster\`)...`
			: `\n${signal}: stopping the cluster...`);
		void stop().finally(() => process.exit(verdictCode ?? 130));
	};
	process.once("SIGINT", onSignal);
	process.once("SIGTERM", onSignal);

	try {
		say(`NATS: ${cluster.transporter} (namespace ${cluster.namespace})`);
		const shown = (file: string) => (path.relative(process.cwd(), file).startsWith("..") ? file : path.relative(process.cwd(), file));
		for (const role of cluster.list())
			say(`  ${role.name.padEnd(9)} pid ${String(role.pid).padEnd(7)} SERVICES=${ROLE_SERVICES[role.kind].join(",").padEnd(23)} ${role.kind === "signer" ? "(no store)" : `DATA_DIR=${shown(role.dataDir)}`}`);
		say(`  logs in ${shown(cluster.logDir)}`);
		say("Waiting for every node (the main node seeds the records, the keyring generates its keys)...");
		await cluster.ready(30 * 60_000);
		const broker = await cluster.connect();

		const status = await broker.call<{ active: boolean; run: RunDoc | null; progress: Progress }>("batcher.status");
		let run: RunDoc;
		if (status.active && status.run) {
			run = status.run;
			say(`Resuming interrupted run ${run.runId} with its batch size ${run.batchSize}${run.batchSize !== config.batchSize ? ` (not ${config.batchSize}: a run keeps its batch size)` : ""}`);
		} else {
			run = await cluster.startRun(config.batchSize);
			say(`Run ${run.runId}: batch size ${run.batchSize}, ${status.progress.records - status.progress.signed} of ${status.progress.records} records to sign over ${signers} signer process(es)`);
		}

		const timer = setInterval(async () => {
			const snapshot = await broker.call<{ signed: number; records: number; recordsPerSecond: number; elapsedSeconds: number }>("metrics.snapshot").catch(() => null);
			if (!snapshot?.records) return;
			const line = `${bar(snapshot.signed, snapshot.records)} ${((snapshot.signed / snapshot.records) * 100).toFixed(1)}% ${snapshot.signed.toLocaleString("en")}/${snapshot.records.toLocaleString("en")} · ${snapshot.recordsPerSecond.toLocaleString("en")} records/s · ${snapshot.elapsedSeconds.toFixed(1)} s`;
			if (tty) {
				process.stdout.write(`\r${line}`);
				progressShown = true;
			} else console.log(line);
		}, tty ? 250 : 2_000);
		const outcome = await cluster.runEnded(run.runId, 24 * 3600_000).finally(() => clearInterval(timer));

		const report = outcome.report;
		say(`\nRun ${run.runId} ${outcome.status}${outcome.error ? `: ${outcome.error}` : ""}`);
		if (report) {
			console.log(`  records        ${report.records} (signed in this run: ${report.signedThisRun})`);
			console.log(`  batches        ${report.batches} (failed and retried: ${report.failedBatches}), batch size ${report.batchSize}`);
			console.log(`  keys used      ${report.keysUsed}`);
			console.log(`  duplicates     ${report.duplicates} (kept the first signature)`);
			console.log(`  time           ${report.seconds.toFixed(2)} s, ${report.recordsPerSecond.toLocaleString("en")} records/s`);
		}
		const perSigner = new Map<string, number>();
		const pageSize = cluster.pageSize(run.batchSize);
		const batches = await pageAll(broker, "batcher", "batches", pageSize);
		for (const batch of batches) if (batch.runId === run.runId && batch.status === "signed") perSigner.set(String(batch.signer), (perSigner.get(String(batch.signer)) ?? 0) + 1);
		if (perSigner.size) console.log(`  per signer     ${[...perSigner].sort().map(([signer, n]) => `${signer} ${n}`).join(", ")} batches`);

		console.log("\nAuditing the stores (read through their nodes over NATS)...");
		const verdict = await audit(await collectSnapshot(broker, { pageSize }));
		for (const violation of verdict.violations) console.log(`  VIOLATION ${violation.rule}: ${violation.message}`);
		const progress = await broker.call<Progress>("records.progress");
		const allSigned = progress.signed === progress.records;
		console.log(`Audit ${verdict.ok ? "PASSED" : "FAILED"}: ${progress.signed}/${progress.records} records signed, ${verdict.violations.length} violations`);
		const code = outcome.status === "completed" && allSigned && verdict.ok ? 0 : 1;
		verdictCode = code;

		if (keep) {
			console.log(`\nThe cluster keeps running; Ctrl-C stops it. From another terminal:`);
			console.log(`  TRANSPORTER=${cluster.transporter} NAMESPACE=${cluster.namespace} npx moleculer-runner --repl --config dist/moleculer.config.js   # then: call batcher.status`);
			console.log(`  TRANSPORTER=${cluster.transporter} NAMESPACE=${cluster.namespace} npm run audit`);
			for (const role of cluster.list()) if (role.running()) console.log(`  ${role.name.padEnd(9)} metrics http://127.0.0.1:${role.metricsPort}/metrics`);
			await new Promise<never>(() => undefined);
		}
		console.log("Stopping the cluster...");
		await stop();
		return code;
	} catch (err) {
		say(`Stopping the cluster after an error: ${(err as Error).message}`);
		await stop();
		throw err;
	}
}

async function main(): Promise<void> {
	let config: AppConfig;
	let signers: number;
	let flags: ReturnType<typeof parseFlags>;
	try {
		flags = parseFlags(process.argv.slice(2));
		if (flags.help) {
			console.log(USAGE);
			return;
		}
		signers = parseSigners(flags.signers);
		const { signers: _signers, keep: _keep, transporter: _transporter, ...configFlags } = flags;
		config = loadConfig({ ...process.env, TRANSPORTER: "" }, configFlags);
		if (!config.dataDir) throw new ConfigError("npm run cluster keeps its stores on disk: DATA_DIR must name a folder");
		if (flags.transporter && !/^nats:\/\//.test(flags.transporter)) throw new ConfigError(`--transporter must be a nats:// URL, got "${flags.transporter}"`);
	} catch (err) {
		console.error(err instanceof ConfigError || (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS") ? `${(err as Error).message}\n${USAGE}` : err);
		process.exit(2);
	}
	try {
		process.exit(await runCluster(config, signers, !!flags.keep, flags.transporter));
	} catch (err) {
		console.error(`npm run cluster: ${(err as Error).message}`);
		process.exit(2);
	}
}

if (require.main === module) void main();
