/**
 * `npm run audit`: checks the five rules (docs/design.md §9) on the configured store, or on
 * an export with `--from DIR`. Exit 0 when every rule holds, 1 on violations, 2 on errors.
 */
import fs from "node:fs";
import { closeAfter, type AuditDb } from "../audit/audit-db";
import { importExport, readExportLogKeys, type LogKeys } from "../audit/export-files";
import { parseCheckpointText } from "../tlog/checkpoint";
import { parseVerifierKey } from "../tlog/note";
import { formatReport } from "../audit/format";
import { audit, auditExitCode, type AuditOptions } from "../audit/rules";
import { UsageError, runCommand, write, type Flags } from "./cli";
import {
	STORE_OPTIONS,
	STORE_USAGE,
	describeStore,
	logVerifierKeys,
	openAuditDb,
	storeConfig,
} from "./store";

const USAGE = `Usage: npm run audit -- [--from DIR] [--json] [options]
  --from DIR                audit an export (npm run export) instead of the store
  --checkpoint FILE         a signed checkpoint of either log kept elsewhere (GET
                            /api/logs/:log/checkpoint): its root is checked too
  --json                    print the report as JSON
  --clock-tolerance-ms N    clock slack when placing a signature in its lease (default 1000)
  --max-listed N            violations listed per rule; all are counted (default 50)
${STORE_USAGE}
The embedded store's files are read in place, read-only, whether or not its services run.
Exit code: 0 every rule holds and every record is signed, 1 violations, 2 error, 3 every rule
holds but records are unsigned because the last run has not completed (running, cancelled,
failed, or none yet).
`;

function nonNegativeInteger(raw: string | undefined, flag: string): number | undefined {
	if (raw === undefined) return undefined;
	const value = Number(raw);
	if (raw.trim() === "" || !Number.isInteger(value) || value < 0)
		throw new UsageError(`--${flag} must be a non-negative integer, got "${raw}"`);
	return value;
}

const OPTIONS = {
	...STORE_OPTIONS,
	from: { type: "string" },
	checkpoint: { type: "string" },
	json: { type: "boolean" },
	"clock-tolerance-ms": { type: "string" },
	"max-listed": { type: "string" },
} as const;

/** A checkpoint saved elsewhere, of one of the logs whose keys the audit knows. */
function readCheckpointFile(file: string, keys: LogKeys): string {
	let note: string;
	try {
		note = fs.readFileSync(file, "utf8");
	} catch (err) {
		throw new UsageError(`--checkpoint ${file}: ${(err as Error).message}`);
	}
	let origin: string;
	try {
		origin = parseCheckpointText(note.slice(0, note.lastIndexOf("\n\n") + 1)).origin;
	} catch (err) {
		throw new UsageError(
			`--checkpoint ${file} is not a signed checkpoint: ${(err as Error).message}`,
		);
	}
	const names = Object.values(keys).flatMap((key) => (key ? [parseVerifierKey(key).name] : []));
	if (!names.includes(origin))
		throw new UsageError(
			`--checkpoint ${file} is a checkpoint of "${origin}", which is not a log this audit has the key of (${names.join(", ") || "none"})`,
		);
	return note;
}

async function main(values: Flags<typeof OPTIONS>): Promise<number> {
	const options: AuditOptions = {};
	const clockToleranceMs = nonNegativeInteger(values["clock-tolerance-ms"], "clock-tolerance-ms");
	const maxListedPerRule = nonNegativeInteger(values["max-listed"], "max-listed");
	if (clockToleranceMs !== undefined) options.clockToleranceMs = clockToleranceMs;
	if (maxListedPerRule !== undefined) options.maxListedPerRule = maxListedPerRule;

	let source: string;
	let db: AuditDb;
	if (values.from !== undefined) {
		source = `export ${values.from}`;
		options.logKeys = await readExportLogKeys(values.from);
		db = await importExport(values.from);
	} else {
		const config = storeConfig(values);
		source = describeStore(config);
		options.logKeys = logVerifierKeys(config);
		db = await openAuditDb(config);
	}
	if (values.checkpoint !== undefined)
		options.checkpoints = [readCheckpointFile(values.checkpoint, options.logKeys)];
	const report = await closeAfter(db, (db) => audit(db, options));
	await write(
		process.stdout,
		values.json
			? JSON.stringify({ source, ...report }, null, 2) + "\n"
			: formatReport(report, source),
	);
	return auditExitCode(report);
}

void runCommand({ name: "audit", usage: USAGE, options: OPTIONS }, main);
