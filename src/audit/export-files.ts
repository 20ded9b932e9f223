/**
 * The export of DESIGN.md section 9, which third-party verifiers read: JSON Lines files plus
 * `jwks.json` and `runs.json`, exactly the contract's fields, nothing secret.
 */
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { once } from "node:events";
import { UserError } from "../user-error";
import { EXPORT_FIELDS, pick, publicJwk, snapshotCounts, type AuditSnapshot } from "./snapshot";

export const EXPORT_FILES = {
	records: "records.jsonl",
	signatures: "signatures.jsonl",
	batches: "batches.jsonl",
	leases: "leases.jsonl",
	keys: "keys.jsonl",
	jwks: "jwks.json",
	runs: "runs.json"
} as const;

type LineCollection = "records" | "signatures" | "batches" | "leases" | "keys";
const LINE_COLLECTIONS: LineCollection[] = ["records", "signatures", "batches", "leases", "keys"];

/** An export folder that cannot be written or read: the message names the file (and line). */
export class ExportError extends UserError {}

export interface ExportCounts {
	dir: string;
	records: number;
	signatures: number;
	batches: number;
	leases: number;
	keys: number;
	runs: number;
}

/** Writes one JSON object per line, waiting on the stream so 100,000 lines never pile up in memory. */
async function writeLines(file: string, docs: Iterable<Record<string, unknown>>, fields: readonly string[]): Promise<void> {
	const out = fs.createWriteStream(file, { encoding: "utf8" });
	const failed = once(out, "error").then(([err]) => Promise.reject(err));
	failed.catch(() => undefined);
	for (const doc of docs) {
		if (!out.write(JSON.stringify(pick(doc, fields)) + "\n")) await Promise.race([once(out, "drain"), failed]);
	}
	out.end();
	await Promise.race([once(out, "finish"), failed]);
}

/** Writes the export into `dir` (created if needed); returns what it wrote. */
export async function writeExport(snapshot: AuditSnapshot, dir: string): Promise<ExportCounts> {
	const target = path.resolve(dir);
	await fs.promises.mkdir(target, { recursive: true });
	for (const collection of LINE_COLLECTIONS)
		await writeLines(path.join(target, EXPORT_FILES[collection]), snapshot[collection] as unknown as Record<string, unknown>[], EXPORT_FIELDS[collection]);
	// Only the public members of each JWK: an export must be safe to hand to anyone.
	const jwks = { keys: (snapshot.jwks?.keys ?? []).map(publicJwk) };
	await fs.promises.writeFile(path.join(target, EXPORT_FILES.jwks), JSON.stringify(jwks, null, 2) + "\n");
	const runs = snapshot.runs.map(run => pick(run as unknown as Record<string, unknown>, EXPORT_FIELDS.runs));
	await fs.promises.writeFile(path.join(target, EXPORT_FILES.runs), JSON.stringify(runs, null, 2) + "\n");
	return { dir: target, ...snapshotCounts(snapshot) };
}

async function readLines<T>(file: string): Promise<T[]> {
	const docs: T[] = [];
	const lines = readline.createInterface({ input: fs.createReadStream(file, { encoding: "utf8" }), crlfDelay: Infinity });
	let lineNo = 0;
	for await (const line of lines) {
		lineNo++;
		if (line.trim() === "") continue;
		try {
			docs.push(JSON.parse(line) as T);
		} catch (err) {
			throw new ExportError(`${file}:${lineNo} is not a JSON object: ${(err as Error).message}`);
		}
	}
	return docs;
}

async function readJson<T>(file: string): Promise<T> {
	try {
		return JSON.parse(await fs.promises.readFile(file, "utf8")) as T;
	} catch (err) {
		throw new ExportError(`${file} is not valid JSON: ${(err as Error).message}`);
	}
}

/** Reads an export back; throws an ExportError naming the first missing or unreadable file. */
export async function readExport(dir: string): Promise<AuditSnapshot> {
	const source = path.resolve(dir);
	if (!fs.existsSync(source) || !fs.statSync(source).isDirectory()) throw new ExportError(`${source} is not a directory; expected an export (see \`npm run export -- --out DIR\`)`);
	const missing = Object.values(EXPORT_FILES).filter(name => !fs.existsSync(path.join(source, name)));
	if (missing.length) throw new ExportError(`${source} is not an export: missing ${missing.join(", ")}`);
	const file = (name: string) => path.join(source, name);
	const jwks = await readJson<AuditSnapshot["jwks"]>(file(EXPORT_FILES.jwks));
	if (!jwks || !Array.isArray(jwks.keys)) throw new ExportError(`${file(EXPORT_FILES.jwks)} has no "keys" array`);
	const runs = await readJson<AuditSnapshot["runs"]>(file(EXPORT_FILES.runs));
	if (!Array.isArray(runs)) throw new ExportError(`${file(EXPORT_FILES.runs)} is not a JSON array`);
	return {
		records: await readLines(file(EXPORT_FILES.records)),
		signatures: await readLines(file(EXPORT_FILES.signatures)),
		batches: await readLines(file(EXPORT_FILES.batches)),
		leases: await readLines(file(EXPORT_FILES.leases)),
		keys: await readLines(file(EXPORT_FILES.keys)),
		jwks,
		runs
	};
}
