/**
 * `npm run audit`: checks the five rules (DESIGN.md section 8) on the configured store, or on
 * an export with `--from DIR`. Exit 0 when every rule holds, 1 on violations, 2 on errors.
 */
import os from "node:os";
import { collectSnapshot, NATS_DEFAULT_MAX_PAYLOAD } from "../audit/collect";
import { readExport } from "../audit/export-files";
import { formatReport } from "../audit/format";
import { audit } from "../audit/rules";
import { UsageError, runCommand, write, type Flags } from "./cli";
import { STORE_OPTIONS, STORE_USAGE, describeStore, storeConfig, withStore } from "./store";

const USAGE = `Usage: npm run audit -- [--from DIR] [--json] [options]
  --from DIR                audit an export (npm run export) instead of the store
  --json                    print the report as JSON
  --clock-tolerance-ms N    clock slack when placing a signature in its lease (default 1000)
  --max-listed N            violations listed per rule; all are counted (default 50)
${STORE_USAGE}
Exit code: 0 every rule holds, 1 violations, 2 error.
`;

function nonNegativeInteger(raw: string | undefined, flag: string): number | undefined {
	if (raw === undefined) return undefined;
	const value = Number(raw);
	if (raw.trim() === "" || !Number.isInteger(value) || value < 0) throw new UsageError(`--${flag} must be a non-negative integer, got "${raw}"`);
	return value;
}

const OPTIONS = {
	...STORE_OPTIONS,
	from: { type: "string" },
	json: { type: "boolean" },
	"clock-tolerance-ms": { type: "string" },
	"max-listed": { type: "string" }
} as const;

async function main(values: Flags<typeof OPTIONS>): Promise<number> {
	const options = {
		clockToleranceMs: nonNegativeInteger(values["clock-tolerance-ms"], "clock-tolerance-ms"),
		maxListedPerRule: nonNegativeInteger(values["max-listed"], "max-listed")
	};
	let source: string;
	let snapshot;
	if (values.from !== undefined) {
		source = `export ${values.from}`;
		snapshot = await readExport(values.from);
	} else {
		const config = storeConfig(values);
		source = describeStore(config);
		snapshot = await withStore(config, broker => collectSnapshot(broker, config.transporter ? { maxPayloadBytes: NATS_DEFAULT_MAX_PAYLOAD } : {}));
	}
	const report = await audit(snapshot, Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)));
	await write(process.stdout, values.json ? JSON.stringify({ source, ...report }, null, 2) + "\n" : formatReport(report, source));
	return report.ok ? 0 : 1;
}

// WebCrypto verifies on libuv's pool (4 threads by default): give it every core before first use.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, os.availableParallelism()));
void runCommand({ name: "audit", usage: USAGE, options: OPTIONS }, main);
