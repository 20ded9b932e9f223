/**
 * `npm run export -- --out DIR`: writes the configured store as the export of DESIGN.md
 * section 9 (public data only) for third-party verifiers and `npm run audit -- --from DIR`.
 */
import { collectSnapshot, NATS_DEFAULT_MAX_PAYLOAD } from "../audit/collect";
import { writeExport } from "../audit/export-files";
import { plural } from "../audit/format";
import { UsageError, runCommand, write, type Flags } from "./cli";
import { STORE_OPTIONS, STORE_USAGE, describeStore, storeConfig, withStore } from "./store";

const USAGE = `Usage: npm run export -- --out DIR [options]
  --out DIR                 folder to write (created if needed; export files in it are replaced)
${STORE_USAGE}
Exit code: 0 written, 2 error.
`;

const OPTIONS = { ...STORE_OPTIONS, out: { type: "string" } } as const;

async function main(values: Flags<typeof OPTIONS>): Promise<number> {
	if (!values.out) throw new UsageError("--out DIR is required: the folder to write the export to (e.g. npm run export -- --out ./export)");
	const config = storeConfig(values);
	const snapshot = await withStore(config, broker => collectSnapshot(broker, config.transporter ? { maxPayloadBytes: NATS_DEFAULT_MAX_PAYLOAD } : {}));
	const written = await writeExport(snapshot, values.out);
	await write(
		process.stdout,
		`Exported ${describeStore(config)} to ${written.dir}: ${plural(written.records, "record")}, ${plural(written.signatures, "signature")}, ` +
			`${plural(written.batches, "batch", "batches")}, ${plural(written.leases, "lease")}, ${plural(written.keys, "key")} (public JWKS), ${plural(written.runs, "run")}\n`
	);
	return 0;
}

void runCommand({ name: "export", usage: USAGE, options: OPTIONS }, main);
