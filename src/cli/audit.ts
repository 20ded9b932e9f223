/**
 * `npm run audit`: checks the five rules (docs/design.md §9) on the configured store, or on
 * an export with `--from DIR`. Exit 0 when every rule holds, 1 on violations, 2 on errors.
 */
import { closeAfter, type AuditDb } from "../audit/audit-db";
import { importExport } from "../audit/export-files";
import { formatReport } from "../audit/format";
import { audit, type AuditOptions } from "../audit/rules";
import { UsageError, runCommand, write, type Flags } from "./cli";
import { STORE_OPTIONS, STORE_USAGE, describeStore, openAuditDb, storeConfig } from "./store";

const USAGE = `Usage: npm run audit -- [--from DIR] [--json] [options]
  --from DIR                audit an export (npm run export) instead of the store
  --json                    print the report as JSON
  --clock-tolerance-ms N    clock slack when placing a signature in its lease (default 1000)
  --max-listed N            violations listed per rule; all are counted (default 50)
${STORE_USAGE}
The embedded store's files are read in place, read-only, whether or not its services run.
Exit code: 0 every rule holds, 1 violations, 2 error.
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
	json: { type: "boolean" },
	"clock-tolerance-ms": { type: "string" },
	"max-listed": { type: "string" },
} as const;

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
		db = await importExport(values.from);
	} else {
		const config = storeConfig(values);
		source = describeStore(config);
		db = await openAuditDb(config);
	}
	const report = await closeAfter(db, (db) => audit(db, options));
	await write(
		process.stdout,
		values.json
			? JSON.stringify({ source, ...report }, null, 2) + "\n"
			: formatReport(report, source),
	);
	return report.ok ? 0 : 1;
}

void runCommand({ name: "audit", usage: USAGE, options: OPTIONS }, main);
