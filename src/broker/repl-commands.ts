/**
 * Custom commands for the Moleculer REPL (`replOptions.customCommands` in the broker options):
 * `progress` prints the signing progress, live until the run ends (or once with --once);
 * `cancel` cancels the active run; `submit` adds a record, proven with the batcher's credential
 * (docs/design.md §6.10), as `POST /api/records` does.
 */
import type { ServiceBroker } from "moleculer";
import { sleep } from "../clock";
import { Actions, call, type MetricsSnapshot } from "../contract";
import type { SignerCredential } from "../identity/credential";
import { makeSubmitProof } from "../identity/submit-proof";

export function progressLine(
	s: Pick<
		MetricsSnapshot,
		"runId" | "status" | "records" | "signed" | "recordsPerSecond" | "elapsedSeconds"
	>,
): string {
	if (!s.runId) return "no run yet";
	const percent = s.records ? ((s.signed / s.records) * 100).toFixed(1) : "100.0";
	return `${s.runId} ${s.status}: ${percent}% ${s.signed}/${s.records} records, ${s.recordsPerSecond} records/s, ${s.elapsedSeconds.toFixed(1)} s`;
}

export interface ReplCommand {
	command: string;
	description: string;
	options?: Array<{ option: string; description: string }>;
	action(broker: ServiceBroker, args: { options: Record<string, unknown> }): Promise<void>;
}

/** Writes to the REPL's terminal: the REPL is an operator's console, not a service. */
export function replCommands(
	write: (line: string) => void = (line) => process.stdout.write(`${line}\n`),
	/** The batcher's credential, for `submit`: found as the batcher finds it (the REPL on the api node's DATA_DIR). */
	submitCredential: (() => SignerCredential) | null = null,
): ReplCommand[] {
	return [
		{
			command: "submit <id> <data>",
			description:
				"Submit one record to be signed (as POST /api/records does), proven with the batcher's credential",
			options: [
				{ option: "--as <name>", description: "the submitter it names (default repl)" },
			],
			async action(broker, args) {
				const { id, data } = args as unknown as { id: string; data: string };
				const records = [{ id: String(id), data: String(data) }];
				try {
					if (!submitCredential) throw new Error("this REPL has no batcher credential");
					const submitter = String(args.options.as ?? "repl");
					const result = await call(broker, Actions.records.submit, {
						records,
						...makeSubmitProof(submitCredential(), submitter, records),
					});
					write(
						`Record ${id} ${result.stored ? "stored" : "was already stored with this data"}; its signature: call records.get --id ${id}`,
					);
				} catch (err) {
					write(`submit: ${(err as Error).message}`);
				}
			},
		},
		{
			command: "cancel [runId]",
			description:
				"Cancel the active run (or the one named): no new batch goes out, the ones in flight finish",
			async action(broker, args) {
				const runId = (args as unknown as { runId?: string }).runId;
				try {
					const run = await call(broker, Actions.batcher.cancel, runId ? { runId } : {});
					write(
						`Run ${run.runId} cancelled: its batches in flight finish, then it is stored as cancelled (progress shows it)`,
					);
				} catch (err) {
					write(`cancel: ${(err as Error).message}`);
				}
			},
		},
		{
			command: "progress",
			description: "Signing progress from metrics.snapshot, live until the run ends",
			options: [
				{ option: "--once", description: "print one line and return" },
				{
					option: "--interval <ms>",
					description: "milliseconds between lines (default 500)",
				},
			],
			async action(broker, args) {
				const interval = Math.max(100, Number(args.options.interval ?? 500) || 500);
				for (;;) {
					const snapshot = await call(broker, Actions.metrics.snapshot, {});
					write(progressLine(snapshot));
					if (args.options.once || snapshot.status !== "running") return;
					await sleep(interval);
				}
			},
		},
	];
}
