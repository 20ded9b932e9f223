/**
 * `npm run verify`: checks one record offline (docs/design.md §9.3): that its signature is in the
 * signature log under a checkpoint signed by the log's key, from a saved proof (GET
 * /api/records/:id/proof) or from an export. Exit 0 when it is, 1 when it is not, 2 on errors.
 */
import fs from "node:fs";
import { importExport, readExportLogKeys } from "../audit/export-files";
import { proofFromExport, verifyProof } from "../audit/verify-record";
import type { InclusionProofView } from "../contract";
import { UsageError, runCommand, write, type Flags } from "./cli";

const USAGE = `Usage: npm run verify -- --proof FILE --log-key KEY
       npm run verify -- --from DIR --record ID [--checkpoint FILE] [--log-key KEY]
  --proof FILE        a saved answer of GET /api/records/:id/proof
  --from DIR          an export (npm run export)
  --record ID         the record to check in it
  --checkpoint FILE   check against this signed checkpoint (kept elsewhere), not the export's latest
  --log-key KEY       the signature log's verifier key (GET /api/logs); with --from, the export's
                      log-keys.json by default
Exit code: 0 the record's signature is in the log under a checkpoint that verifies, 1 it is not,
2 error.
`;

const OPTIONS = {
	proof: { type: "string" },
	from: { type: "string" },
	record: { type: "string" },
	checkpoint: { type: "string" },
	"log-key": { type: "string" },
} as const;

function readText(file: string, flag: string): string {
	try {
		return fs.readFileSync(file, "utf8");
	} catch (err) {
		throw new UsageError(`--${flag} ${file}: ${(err as Error).message}`);
	}
}

async function main(values: Flags<typeof OPTIONS>): Promise<number> {
	let proof: InclusionProofView;
	let key = values["log-key"];
	if (values.proof !== undefined) {
		if (!key) throw new UsageError("--log-key KEY is required with --proof");
		try {
			proof = JSON.parse(readText(values.proof, "proof"));
		} catch (err) {
			if (err instanceof UsageError) throw err;
			throw new UsageError(`--proof ${values.proof} is not JSON`);
		}
	} else if (values.from !== undefined && values.record !== undefined) {
		key ??= (await readExportLogKeys(values.from)).signatures ?? undefined;
		if (!key)
			throw new UsageError(`${values.from} carries no signature log key: pass --log-key KEY`);
		const checkpoint =
			values.checkpoint === undefined ? undefined : readText(values.checkpoint, "checkpoint");
		const db = await importExport(values.from);
		try {
			proof = await proofFromExport(db, values.record, key, checkpoint);
		} finally {
			db.close();
		}
	} else throw new UsageError("Give --proof FILE, or --from DIR with --record ID");
	const verdict = verifyProof(proof, key);
	await write(process.stdout, `${verdict.ok ? "OK" : "FAILED"} ${verdict.message}\n`);
	return verdict.ok ? 0 : 1;
}

void runCommand({ name: "verify", usage: USAGE, options: OPTIONS }, main);
