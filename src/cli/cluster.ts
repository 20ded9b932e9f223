/**
 * `npm run cluster`: the job of `npm start`, but as production runs it: a local nats-server,
 * one keyring process, one records+batcher+metrics process and N signer processes, each the
 * moleculer-runner command line with its own DATA_DIR under `DATA_DIR/cluster`. This process
 * joins as a client node: it starts (or follows the resumed) run, shows progress, prints the
 * report and the audit verdict, and exits 0 only when all is signed and the audit passes.
 * `--keep` leaves the cluster running until Ctrl-C.
 */
import path from "node:path";
import { pageAll, pageSizeFor } from "../audit/collect";
import { assertNatsReachable } from "../broker/nats-reach";
import { Cluster, ROLE_SERVICES } from "../cluster/launcher";
import { ConfigError, loadConfig, type AppConfig } from "../config";
import { Actions, call, type BatchDoc } from "../contract";
import { natsEndpoints, redactUrl } from "../nats-tls";
import { runCommand } from "./cli";
import {
	JOB_FLAGS,
	auditJobStores,
	jobExitCode,
	reportLines,
	startOrResume,
	terminal,
	verdictLines,
	watchProgress,
} from "./job";

const USAGE = `Usage: npm run cluster -- [--signers N] [--batch-size N] [--records N] [--keys N] [--data-dir DIR] [--window N] [--nats N] [--tls] [--transporter URL] [--keep]
  --signers N        signer processes (default 3)
  --nats N           nats-servers to start, routed into one NATS cluster (default 1); every node gets all N URLs
  --tls              clients and routes over TLS: a CA and certificates made with openssl in DATA_DIR/cluster/tls
  --transporter URL  join this NATS (one URL or a comma-separated list) instead of starting one
  --keep             leave the cluster running after the run (Ctrl-C stops it)
Environment: BATCH_SIZE, RECORDS, KEYS, DATA_DIR, LEASE_TTL_MS, ... (see README). Each service keeps its store file in DATA_DIR (as npm start does); logs go to DATA_DIR/cluster/logs.`;

const CLUSTER_FLAGS = {
	...JOB_FLAGS,
	signers: { type: "string" },
	transporter: { type: "string" },
	nats: { type: "string" },
	tls: { type: "boolean" },
	keep: { type: "boolean" },
} as const;

/** How the cluster's NATS is started: `--nats N` servers, `--tls`. */
interface NatsChoice {
	size: number;
	tls: boolean;
}

function parseNatsServers(raw: string | undefined): number {
	if (raw === undefined) return 1;
	const value = Number(raw);
	if (!Number.isInteger(value) || value < 1 || value > 9)
		throw new ConfigError(
			`--nats must be an integer from 1 to 9 (nats-servers to start), got "${raw}"`,
		);
	return value;
}

/** A path relative to the working folder when it lies under it. */
function shownPath(file: string): string {
	const relative = path.relative(process.cwd(), file);
	return relative.startsWith("..") ? file : relative;
}

function parseSigners(raw: string | undefined): number {
	if (raw === undefined) return 3;
	const value = Number(raw);
	if (!Number.isInteger(value) || value < 1 || value > 64)
		throw new ConfigError(`--signers must be an integer from 1 to 64, got "${raw}"`);
	return value;
}

async function runCluster(
	config: AppConfig,
	signers: number,
	keep: boolean,
	transporter: string | undefined,
	natsChoice: NatsChoice,
): Promise<number> {
	// The stores in DATA_DIR itself (audit and export read them there); logs and the nats-server config beside them.
	const root = path.join(config.dataDir, "cluster");
	const out = terminal();
	const say = (line: string) => out.say(line);

	const localNats =
		natsChoice.size === 1
			? `a local nats-server${natsChoice.tls ? " over TLS" : ""}`
			: `a local NATS cluster of ${natsChoice.size} routed nats-servers${natsChoice.tls ? " over TLS (clients and routes)" : ""}`;
	say(
		`Cluster on the stores in ${config.dataDir}: ${transporter ? `NATS at ${redactUrl(transporter)}` : localNats}, 1 keyring, 1 records+batcher+metrics node, ${signers} signer(s)`,
	);
	const cluster = await Cluster.start({
		root,
		dataDir: config.dataDir,
		signers,
		transporter,
		nats: natsChoice,
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
			ACQUIRE_WAIT_MS: String(config.acquireWaitMs),
		},
		// The nodes' own warnings and errors, as they happen; everything is in the log files.
		onLine: (role, line) => {
			if (/\b(WARN|ERROR|FATAL)\b/.test(line)) say(`  [${role.name}] ${line}`);
		},
	});

	let stopping: Promise<void> | null = null;
	const stop = () => (stopping ??= cluster.stop());
	// Set once the run has ended and been audited: a kept cluster stopped later exits with it.
	let verdictCode: number | null = null;
	const onSignal = (signal: NodeJS.Signals) => {
		say(
			verdictCode === null
				? `\n${signal}: stopping the cluster (batches in flight finish or come back; the run resumes on the next \`npm run cluster\`)...`
				: `\n${signal}: stopping the cluster...`,
		);
		void stop().finally(() => process.exit(verdictCode ?? 130));
	};
	process.once("SIGINT", onSignal);
	process.once("SIGTERM", onSignal);
	// The terminal closed: its nats-server is in a process group of its own, which the hang-up
	// does not reach, so it is stopped here like the rest.
	process.once("SIGHUP", onSignal);

	try {
		say(
			`NATS: ${redactUrl(cluster.transporter)} (namespace ${cluster.namespace}${cluster.nats ? "; one user per role: keyring, signer, api, ops" : ""})`,
		);
		if (cluster.local?.certs)
			say(
				`  TLS: CA ${shownPath(cluster.local.certs.caFile)}; every node shows the client certificate ${shownPath(cluster.local.certs.clientCert)}`,
			);
		for (const role of cluster.list())
			say(
				`  ${role.name.padEnd(9)} pid ${String(role.pid).padEnd(7)} SERVICES=${ROLE_SERVICES[role.kind].join(",").padEnd(23)} ${role.kind === "signer" ? "(no store)" : `stores in ${shownPath(role.dataDir)}`}`,
			);
		say(`  logs in ${shownPath(cluster.logDir)}`);
		say(
			"Waiting for every node (the main node seeds the records, the keyring generates its keys)...",
		);
		await cluster.ready(30 * 60_000);
		const broker = await cluster.connect();

		const run = await startOrResume(
			broker,
			config.batchSize,
			out,
			` over ${signers} signer process(es)`,
		);
		const stopWatching = watchProgress(broker, out);
		const outcome = await cluster.runEnded(run.runId, 24 * 3600_000).finally(stopWatching);

		say(`\nRun ${run.runId} ${outcome.status}${outcome.error ? `: ${outcome.error}` : ""}`);
		if (outcome.report) for (const line of reportLines(outcome.report)) say(line);
		const perSigner = new Map<string, number>();
		const fits = { maxPayloadBytes: cluster.maxPayload };
		for (const batch of await pageAll<BatchDoc>(
			broker,
			"batcher",
			"batches",
			pageSizeFor("batches", fits, { batch: run.batchSize }),
		))
			if (batch.runId === run.runId && batch.status === "signed")
				perSigner.set(String(batch.signer), (perSigner.get(String(batch.signer)) ?? 0) + 1);
		if (perSigner.size)
			say(
				`  per signer     ${[...perSigner]
					.sort()
					.map(([signer, n]) => `${signer} ${n}`)
					.join(", ")} batches`,
			);

		say(`\nAuditing the stores in ${config.dataDir}...`);
		const verdict = await auditJobStores(config, broker);
		const progress = await call(broker, Actions.records.progress, {});
		for (const line of verdictLines(verdict, progress)) say(line);
		const code = jobExitCode(outcome.status, progress, verdict);
		verdictCode = code;

		if (keep) {
			say(`\nThe cluster keeps running; Ctrl-C stops it. From another terminal:`);
			// The ops user: it can start runs, read and audit, and cannot reach the keyring's lease actions.
			const ops = [
				`TRANSPORTER=${cluster.natsUrl("ops")}`,
				...Object.entries(cluster.natsEnv).map(([name, value]) => `${name}=${value}`),
				`NAMESPACE=${cluster.namespace}`,
			].join(" ");
			say(
				`  ${ops} npm run repl   # joins with no services of its own; then: call batcher.start --batchSize 300`,
			);
			say(`  ${ops} npm run audit`);
			for (const role of cluster.list())
				if (role.running() && role.metricsPort)
					say(
						`  ${role.name.padEnd(9)} metrics http://127.0.0.1:${role.metricsPort}/metrics`,
					);
			await new Promise<never>(() => undefined);
		}
		say("Stopping the cluster...");
		await stop();
		return code;
	} catch (err) {
		say(`Stopping the cluster after an error: ${(err as Error).message}`);
		await stop();
		throw err;
	}
}

if (require.main === module) {
	void runCommand(
		{ name: "npm run cluster", usage: USAGE, options: CLUSTER_FLAGS },
		async (flags) => {
			const signers = parseSigners(flags.signers);
			const { signers: _signers, keep, transporter, nats, tls, ...configFlags } = flags;
			const natsChoice = { size: parseNatsServers(nats), tls: !!tls };
			const config = loadConfig({ ...process.env, TRANSPORTER: "" }, configFlags);
			if (!config.dataDir)
				throw new ConfigError(
					"npm run cluster keeps its stores on disk: DATA_DIR must name a folder",
				);
			if (transporter) {
				try {
					natsEndpoints(transporter, "--transporter");
				} catch (err) {
					throw new ConfigError((err as Error).message);
				}
				if (nats !== undefined || tls)
					throw new ConfigError(
						"--transporter joins a running NATS: --nats and --tls choose the one to start instead; give one or the other",
					);
				await assertNatsReachable(
					transporter,
					"or leave --transporter out: npm run cluster then starts its own",
				);
			}
			return runCluster(config, signers, !!keep, transporter, natsChoice);
		},
	);
}
