/**
 * `npm start`: the whole job in one process on the configured store. Seeds when empty,
 * signs every unsigned record (resuming an interrupted run), shows progress, prints the
 * report and the audit verdict; exits 0 only when everything is signed and the audit passes.
 */
import { assertNatsReachable } from "../broker/nats-reach";
import { loadConfig, type AppConfig } from "../config";
import { Actions, Events, call, type RunCompletedEvent } from "../contract";
import { createSystem } from "../system";
import { runCommand } from "./cli";
import {
	JOB_FLAGS,
	auditJobStores,
	auditsThroughServices,
	jobExitCode,
	reportLines,
	startOrResume,
	terminal,
	verdictLines,
	watchProgress,
} from "./job";
import { releaseMemory } from "../release-memory";

const USAGE = `Usage: npm start -- [--batch-size N] [--records N] [--keys N] [--data-dir DIR] [--window N]
Environment: BATCH_SIZE, RECORDS, KEYS, DATA_DIR, MONGO_URI, LEASE_TTL_MS (see README).`;

export async function runJob(config: AppConfig): Promise<number> {
	const out = terminal();
	if (config.transporter)
		await assertNatsReachable(
			config.transporter,
			"or leave TRANSPORTER out: npm start runs every service in this process",
		);
	// A one-shot job never follows: an interrupted follow run is ended when the batcher starts (docs/design.md §7.7).
	const broker = createSystem(config, {
		logLevel: "warn",
		settings: { batcher: { interruptedFollow: "end" } },
	});
	const completions = new Map<string, RunCompletedEvent>();
	const waiters = new Map<string, (event: RunCompletedEvent) => void>();
	broker.createService({
		name: "start-cli",
		events: {
			[Events.runCompleted]: (ctx: { params: RunCompletedEvent }) => {
				const { runId } = ctx.params.report;
				completions.set(runId, ctx.params);
				waiters.get(runId)?.(ctx.params);
			},
		},
	});
	const completionOf = (runId: string) =>
		completions.get(runId) ??
		new Promise<RunCompletedEvent>((resolve) => waiters.set(runId, resolve));

	const stopOnSignal = () => {
		out.say("\nStopping: in-flight batches finish, the run resumes on the next `npm start`.");
		broker.stop().finally(() => process.exit(130));
	};
	process.once("SIGINT", stopOnSignal);
	process.once("SIGTERM", stopOnSignal);

	out.say(
		`Store: ${config.mongoUri ? "MongoDB" : config.dataDir || "memory"} · keys ${config.keys} · records ${config.records} (seeded when empty)`,
	);
	await broker.start();
	// A store that was not empty keeps what it holds: say so when that is not what the line above said.
	const [keyring, held] = await Promise.all([
		call(broker, Actions.keyring.status, {}),
		call(broker, Actions.records.progress, {}),
	]);
	if (keyring.keys !== config.keys || held.records !== config.records)
		out.say(
			`The store holds ${held.records} records and ${keyring.keys} keys${keyring.active !== keyring.keys ? ` (${keyring.active} active)` : ""}: RECORDS and KEYS only seed an empty store`,
		);
	for (const ended of completions.values())
		out.say(
			`Follow run ${ended.report.runId} was interrupted: npm start never follows, so it ended it (${ended.status}); the records it left waiting are signed by this job's run`,
		);
	const run = await startOrResume(broker, config.batchSize, out);
	const stopWatching = watchProgress(broker, out);
	const outcome = await completionOf(run.runId);
	stopWatching();

	out.say(
		`\nRun ${outcome.report.runId} ${outcome.status}${outcome.error ? `: ${outcome.error}` : ""}`,
	);
	for (const line of reportLines(outcome.report)) out.say(line);
	out.say("\nAuditing the stores...");
	const progress = await call(broker, Actions.records.progress, {});
	// Store files are audited with the services stopped: the signing threads' memory is given
	// back before the audit's threads start (at 10 million records, peak RSS 539 MB otherwise),
	// and the pages of the heap the run grew to (src/release-memory.ts).
	const throughServices = auditsThroughServices(config);
	if (!throughServices) {
		await broker.stop();
		releaseMemory();
	}
	const verdict = await auditJobStores(config, broker);
	if (throughServices) await broker.stop();
	for (const line of verdictLines(verdict, progress)) out.say(line);
	return jobExitCode(outcome.status, progress, verdict);
}

if (require.main === module)
	void runCommand({ name: "npm start", usage: USAGE, options: JOB_FLAGS }, (flags) =>
		runJob(loadConfig(process.env, flags)),
	);
