/**
 * `npm run export -- --out DIR`: writes the configured store as the export of
 * docs/design.md §8.3 (public data only) for third-party verifiers and `npm run audit -- --from DIR`.
 */
import { closeAfter } from "../audit/audit-db";
import { checkExportDir, exportDb } from "../audit/export-files";
import { plural } from "../audit/format";
import { UsageError, runCommand, write, type Flags } from "./cli";
import * as store from "./store";

const USAGE = `Usage: npm run export -- --out DIR [options]
  --out DIR                 folder to write (created if needed; export files in it are replaced
                            only once every file is written)
${store.STORE_USAGE}
Exit code: 0 written, 2 error.
`;

const OPTIONS = { ...store.STORE_OPTIONS, out: { type: "string" } } as const;

async function main(values: Flags<typeof OPTIONS>): Promise<number> {
	if (!values.out)
		throw new UsageError(
			"--out DIR is required: the folder to write the export to (e.g. npm run export -- --out ./export)",
		);
	// Before any store is read: a wrong --out fails at once.
	const out = checkExportDir(values.out);
	const config = store.storeConfig(values);
	const written = await closeAfter(await store.openAuditDb(config), (db) =>
		exportDb(db, out, store.logVerifierKeys(config)),
	);
	await write(
		process.stdout,
		`Exported ${store.describeStore(config)} to ${written.dir}: ${plural(written.records, "record")}, ${plural(written.signatures, "signature")}, ` +
			`${plural(written.batches, "batch", "batches")}, ${plural(written.leases, "lease")}, ${plural(written.keys, "key")} (public JWKS), ${plural(written.runs, "run")}` +
			// A store from before the logs has none to speak of.
			(written.signatureLog + written.leaseLog + written.checkpoints
				? `; the signature log's ${plural(written.signatureLog, "leaf", "leaves")}, the lease log's ${plural(written.leaseLog, "leaf", "leaves")}, ${plural(written.checkpoints, "checkpoint")}`
				: "") +
			"\n",
	);
	return 0;
}

void runCommand({ name: "export", usage: USAGE, options: OPTIONS }, main);
