/**
 * What `npm start` and `npm run cluster` share: their flags, starting or following a run,
 * the progress line, the run's report and the audit verdict, printed the same way.
 */
import type { ServiceBroker } from "moleculer";
import { closeAfter, openStoreFiles } from "../audit/audit-db";
import { auditServices } from "../audit/collect";
import { audit, type AuditReport } from "../audit/rules";
import type { AppConfig } from "../config";
import { logVerifierKeys } from "./store";
import {
	Actions,
	call,
	type Caller,
	type MetricsSnapshot,
	type Progress,
	type RunReport,
	type RunView,
} from "../contract";
import { watchNatsStatus } from "../broker/nats-status";
import { UserError } from "../user-error";

/** The flags of a signing job. */
export const JOB_FLAGS = {
	"batch-size": { type: "string" },
	records: { type: "string" },
	keys: { type: "string" },
	"data-dir": { type: "string" },
	window: { type: "string" },
} as const;

/** Lines to the terminal; `say` ends an open progress line first. */
export interface Terminal {
	say(line: string): void;
	/** Replaces the progress line on a terminal; a plain line otherwise. */
	progress(line: string): void;
}

export function terminal(stdout: NodeJS.WriteStream = process.stdout): Terminal {
	let open = false;
	return {
		say(line) {
			if (open) stdout.write("\n");
			open = false;
			stdout.write(`${line}\n`);
		},
		progress(line) {
			if (!stdout.isTTY) return void stdout.write(`${line}\n`);
			stdout.write(`\r${line}`);
			open = true;
		},
	};
}

function bar(done: number, total: number, width = 30): string {
	const filled = total ? Math.round((done / total) * width) : width;
	return `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
}

export function progressLine(
	snapshot: Pick<MetricsSnapshot, "signed" | "records" | "recordsPerSecond" | "elapsedSeconds">,
): string {
	const { signed, records } = snapshot;
	return `${bar(signed, records)} ${((signed / records) * 100).toFixed(1)}% ${signed.toLocaleString("en")}/${records.toLocaleString("en")} · ${snapshot.recordsPerSecond.toLocaleString("en")} records/s · ${snapshot.elapsedSeconds.toFixed(1)} s`;
}

/** The active run if one is interrupted (it keeps its own batch size), else a new run of `batchSize`. */
export async function startOrResume(
	broker: Caller,
	batchSize: number,
	out: Terminal,
	detail = "",
): Promise<RunView> {
	const status = await call(broker, Actions.batcher.status, {});
	if (status.active && status.run?.follow)
		throw new UserError(
			`Follow run ${status.run.runId} is active: it signs records as they arrive and never ends by itself, so this job cannot start a run beside it. Cancel it first (POST /api/runs/${status.run.runId}/cancel, or cancel in the REPL)`,
		);
	if (status.active && status.run) {
		const run = status.run;
		out.say(
			`Resuming interrupted run ${run.runId} with its batch size ${run.batchSize}${run.batchSize !== batchSize ? ` (not ${batchSize}: a run keeps its batch size)` : ""}`,
		);
		return run;
	}
	const run = await call(broker, Actions.batcher.start, { batchSize });
	out.say(
		`Run ${run.runId}: batch size ${run.batchSize}, ${status.progress.records - status.progress.signed} of ${status.progress.records} records to sign${detail}`,
	);
	return run;
}

/** A progress line every `everyMs` (a bar on a terminal, a line every 2 s in a log) until stopped. */
export function watchProgress(
	broker: ServiceBroker,
	out: Terminal,
	stdout: NodeJS.WriteStream = process.stdout,
): () => void {
	// Over NATS: while the connection is down the progress says so (the run goes on once it is back).
	let downSince: number | null = null;
	watchNatsStatus(broker, (type) => {
		if (type === "disconnect") downSince ??= Date.now();
		else if (type === "reconnect") {
			if (downSince !== null)
				out.say(
					`NATS is back after ${((Date.now() - downSince) / 1000).toFixed(1)} s; the run goes on`,
				);
			downSince = null;
		}
	});
	const timer = setInterval(
		async () => {
			if (downSince !== null) return out.progress(natsDownLine(Date.now() - downSince));
			const snapshot = await call(broker, Actions.metrics.snapshot, {}).catch(() => null);
			if (snapshot?.records && downSince === null) out.progress(progressLine(snapshot));
		},
		stdout.isTTY ? 250 : 2_000,
	);
	return () => clearInterval(timer);
}

export function natsDownLine(downMs: number): string {
	return `NATS is unreachable for ${(downMs / 1000).toFixed(0)} s: waiting for the server to come back (the nodes reconnect by themselves and the run goes on)`;
}

export function reportLines(report: RunReport): string[] {
	return [
		`  records        ${report.records} (signed in this run: ${report.signedThisRun})`,
		`  batches        ${report.batches} (failed and retried: ${report.failedBatches}), batch size ${report.batchSize}`,
		`  keys used      ${report.keysUsed}`,
		`  duplicates     ${report.duplicates} (kept the first signature)`,
		`  time           ${report.seconds.toFixed(2)} s, ${report.recordsPerSecond.toLocaleString("en")} records/s${report.resumedAt ? ` since it started; it resumed at ${report.resumedAt} after a stop, whose time counts` : ""}`,
	];
}

/** Each violation, then `Audit PASSED|FAILED: x/y records signed, N violations`. */
export function verdictLines(verdict: AuditReport, progress: Progress): string[] {
	return [
		...verdict.violations.map(
			(violation) => `  VIOLATION ${violation.rule}: ${violation.message}`,
		),
		`Audit ${verdict.ok ? "PASSED" : "FAILED"}: ${progress.signed}/${progress.records} records signed, ${verdict.violationCount} violations`,
	];
}

/** Exit code of a job: 0 only when the run completed, every record is signed and the audit passed. */
export function jobExitCode(status: string, progress: Progress, verdict: AuditReport): number {
	return status === "completed" && progress.signed === progress.records && verdict.ok ? 0 : 1;
}

/** Whether a job's audit reads its stores through the services (MongoDB, or a store in memory), not from files. */
export function auditsThroughServices(config: Pick<AppConfig, "dataDir" | "mongoUri">): boolean {
	return Boolean(config.mongoUri) || !config.dataDir;
}

/**
 * The audit of the stores a job used: the embedded store files read directly (as
 * `npm run audit` reads them), or through the owning services when the data is in MongoDB
 * or in memory.
 */
export async function auditJobStores(
	config: Pick<AppConfig, "dataDir" | "mongoUri" | "logKeys">,
	broker: Caller,
): Promise<AuditReport> {
	if (auditsThroughServices(config)) return auditServices(broker);
	return closeAfter(openStoreFiles(config.dataDir), (db) =>
		audit(db, { logKeys: logVerifierKeys(config) }),
	);
}
