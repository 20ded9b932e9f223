/**
 * The export of docs/design.md §8.3, which third-party verifiers read: JSON Lines files plus
 * `jwks.json` and `runs.json`, exactly the contract's fields, nothing secret. Written from an
 * audit database and read back into one line by line, so neither side holds a collection.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { LOG_NAMES, type LogName } from "../contract";
import { UserError } from "../user-error";
import { closeAfter, withReadSnapshot, type AuditDb } from "./audit-db";
import { documents, readSnapshot } from "./documents";
import {
	createImport,
	importSnapshot,
	ImportProblem,
	type CollectionCounts,
	type ImportCollection,
	type ImportDocs,
	type ImportOptions,
	type ImportWriter,
} from "./import";
import { holdsLog, leafHashes, storedCheckpoints } from "./log-tables";
import { publicJwk, type AuditSnapshot } from "./snapshot";

export const EXPORT_FILES = {
	records: "records.jsonl",
	signatures: "signatures.jsonl",
	batches: "batches.jsonl",
	leases: "leases.jsonl",
	keys: "keys.jsonl",
	jwks: "jwks.json",
	runs: "runs.json",
} as const;

/**
 * The transparency logs (docs/design.md §8.4): each log's leaf hashes in log order (the lease
 * log's with their entry names), every checkpoint, and the logs' verifier keys. Optional on
 * reading: an export written before the logs has none of them.
 */
export const LOG_FILES = {
	signatures: "signature-log.jsonl",
	leases: "lease-log.jsonl",
	checkpoints: "checkpoints.jsonl",
	keys: "log-keys.json",
} as const;

/** Each log's note verifier key, where known. */
export type LogKeys = Partial<Record<LogName, string | null>>;

type LineCollection = Exclude<ImportCollection, "runs">;
const LINE_COLLECTIONS: LineCollection[] = ["records", "signatures", "batches", "leases", "keys"];

/** An export folder that cannot be written or read: the message names the file (and line). */
export class ExportError extends UserError {}

export interface ExportCounts extends CollectionCounts {
	dir: string;
	/** Leaves of each log, and checkpoints of both. */
	signatureLog: number;
	leaseLog: number;
	checkpoints: number;
}

// ---------------------------------------------------------------- writing

/** Throws unless `file` is absent or a regular file: a planted symbolic link is never written through. */
function refuseLink(file: string): void {
	let stat: fs.Stats;
	try {
		stat = fs.lstatSync(file);
	} catch (err) {
		if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
		throw new ExportError(`Cannot write ${file}: ${(err as Error).message}`);
	}
	if (stat.isSymbolicLink())
		throw new ExportError(
			`${file} is a symbolic link: refusing to write the export through it (remove it, or choose another --out)`,
		);
	if (!stat.isFile())
		throw new ExportError(`${file} exists and is not a regular file: refusing to replace it`);
}

/**
 * The folder an export goes to, checked before anything is read: an existing file, or an
 * export file name taken by a link or a folder, fails at once.
 */
export function checkExportDir(dir: string): string {
	const target = path.resolve(dir);
	let stat: fs.Stats | null = null;
	try {
		stat = fs.statSync(target);
	} catch (err) {
		if ((err as NodeJS.ErrnoException).code !== "ENOENT")
			throw new ExportError(`Cannot use ${target} for the export: ${(err as Error).message}`);
	}
	if (stat && !stat.isDirectory())
		throw new ExportError(
			`${target} is a file, not a folder: name a folder to write the export into (it is created if needed)`,
		);
	if (stat)
		for (const name of [...Object.values(EXPORT_FILES), ...Object.values(LOG_FILES)])
			refuseLink(path.join(target, name));
	return target;
}

/**
 * One export file, written under a hidden temporary name (created exclusively, never through a
 * link) and renamed into place only when every file is complete: a failed export leaves no
 * half file that looks whole.
 */
class PendingFile {
	readonly final: string;
	readonly temp: string;
	#fd: number;
	#chunks: string[] = [];
	#size = 0;

	constructor(dir: string, name: string) {
		this.final = path.join(dir, name);
		this.temp = path.join(dir, `.${name}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
		const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
		this.#fd = fs.openSync(this.temp, O_WRONLY | O_CREAT | O_EXCL | (O_NOFOLLOW ?? 0), 0o644);
	}

	write(text: string): void {
		this.#chunks.push(text);
		this.#size += text.length;
		// About a megabyte at a time: few system calls, bounded memory.
		if (this.#size >= 1 << 20) this.flush();
	}

	flush(): void {
		const buffer = Buffer.from(this.#chunks.join(""), "utf8");
		this.#chunks = [];
		this.#size = 0;
		for (let at = 0; at < buffer.length;) at += fs.writeSync(this.#fd, buffer, at);
	}

	close(): void {
		this.flush();
		fs.fsyncSync(this.#fd);
		fs.closeSync(this.#fd);
		this.#fd = -1;
	}

	commit(): void {
		refuseLink(this.final);
		fs.renameSync(this.temp, this.final);
	}

	discard(): void {
		if (this.#fd >= 0) fs.closeSync(this.#fd);
		fs.rmSync(this.temp, { force: true });
	}
}

/** The log files: a log the source does not hold has an empty file. */
function writeLogs(
	db: AuditDb,
	target: string,
	logKeys: LogKeys,
	counts: ExportCounts,
): PendingFile[] {
	const written: PendingFile[] = [];
	const open = (name: string) => {
		const file = new PendingFile(target, name);
		written.push(file);
		return file;
	};
	const checkpoints = open(LOG_FILES.checkpoints);
	for (const log of LOG_NAMES) {
		const file = open(LOG_FILES[log]);
		if (holdsLog(db.sql, log)) {
			const entries =
				log === "leases"
					? db.sql
							.prepare("SELECT entry FROM kr.lease_log_entries ORDER BY idx")
							.iterate()
					: null;
			let index = 0;
			for (const hash of leafHashes(db.sql, log)) {
				const entry = entries?.next().value?.entry;
				const line = entries
					? { index, entry: entry ?? null, hash: hash.toString("base64") }
					: { index, hash: hash.toString("base64") };
				file.write(JSON.stringify(line) + "\n");
				index++;
			}
			counts[log === "signatures" ? "signatureLog" : "leaseLog"] = index;
			for (const checkpoint of storedCheckpoints(db.sql, log)) {
				checkpoints.write(JSON.stringify({ log, ...checkpoint }) + "\n");
				counts.checkpoints++;
			}
		}
		file.close();
	}
	checkpoints.close();
	const keys = open(LOG_FILES.keys);
	keys.write(
		JSON.stringify(
			{ signatures: logKeys.signatures ?? null, leases: logKeys.leases ?? null },
			null,
			2,
		) + "\n",
	);
	keys.close();
	return written;
}

/** Writes the export of `db` into `dir` (created if needed), with the logs' verifier keys; returns what it wrote. */
export async function exportDb(
	db: AuditDb,
	dir: string,
	logKeys: LogKeys = {},
): Promise<ExportCounts> {
	const target = checkExportDir(dir);
	await fs.promises.mkdir(target, { recursive: true });
	const counts: ExportCounts = {
		dir: target,
		records: 0,
		signatures: 0,
		batches: 0,
		leases: 0,
		keys: 0,
		runs: 0,
		signatureLog: 0,
		leaseLog: 0,
		checkpoints: 0,
	};
	const pending: PendingFile[] = [];
	try {
		await withReadSnapshot(db, async () => {
			for (const collection of LINE_COLLECTIONS) {
				const file = new PendingFile(target, EXPORT_FILES[collection]);
				pending.push(file);
				for (const doc of documents(db, collection)) {
					file.write(JSON.stringify(doc) + "\n");
					counts[collection]++;
				}
				file.close();
			}
			const runs = [...documents(db, "runs")];
			counts.runs = runs.length;
			// Only the public members of each JWK: an export must be safe to hand to anyone.
			const jsonFiles: Array<[string, unknown]> = [
				[EXPORT_FILES.jwks, { keys: db.jwks.keys.map(publicJwk) }],
				[EXPORT_FILES.runs, runs],
			];
			for (const [name, content] of jsonFiles) {
				const file = new PendingFile(target, name);
				pending.push(file);
				file.write(JSON.stringify(content, null, 2) + "\n");
				file.close();
			}
			pending.push(...writeLogs(db, target, logKeys, counts));
		});
		for (; pending.length; pending.shift()) pending[0].commit();
		return counts;
	} catch (err) {
		for (const file of pending) file.discard();
		throw err;
	}
}

/** Writes an in-memory snapshot as an export (tests, small tools). */
export async function writeExport(snapshot: AuditSnapshot, dir: string): Promise<ExportCounts> {
	const target = checkExportDir(dir);
	return closeAfter(importSnapshot(snapshot), (db) => exportDb(db, target));
}

// ---------------------------------------------------------------- reading

/** Calls `onLine` with every line of `file` and its number, reading a megabyte at a time. */
async function eachLine(
	file: string,
	onLine: (text: string, lineNo: number) => void,
): Promise<void> {
	let rest = "";
	let lineNo = 0;
	for await (const chunk of fs.createReadStream(file, {
		encoding: "utf8",
		highWaterMark: 1 << 20,
	})) {
		const text = rest + (chunk as string);
		let start = 0;
		for (let end = text.indexOf("\n"); end >= 0; end = text.indexOf("\n", start)) {
			onLine(text.slice(start, end), ++lineNo);
			start = end + 1;
		}
		rest = text.slice(start);
	}
	if (rest) onLine(rest, ++lineNo);
}

function addLine(
	writer: ImportWriter,
	collection: LineCollection,
	file: string,
	text: string,
	lineNo: number,
): void {
	if (text.trim() === "") return;
	let doc: unknown;
	try {
		doc = JSON.parse(text);
	} catch (err) {
		throw new ExportError(`${file}:${lineNo} is not a JSON object: ${(err as Error).message}`);
	}
	try {
		writer.add(collection, doc as ImportDocs[LineCollection]);
	} catch (err) {
		if (err instanceof ImportProblem) throw new ExportError(`${file}:${lineNo} ${err.message}`);
		throw err;
	}
}

async function readJson(file: string): Promise<unknown> {
	try {
		return JSON.parse(await fs.promises.readFile(file, "utf8"));
	} catch (err) {
		throw new ExportError(`${file} is not valid JSON: ${(err as Error).message}`);
	}
}

const isObject = (value: unknown): value is Record<string, unknown> =>
	value !== null && typeof value === "object" && !Array.isArray(value);

/**
 * Imports the export in `dir` line by line into an audit database; an ExportError names the
 * first missing file or bad line (file and line number).
 */
export async function importExport(dir: string, options: ImportOptions = {}): Promise<AuditDb> {
	const source = path.resolve(dir);
	if (!fs.existsSync(source) || !fs.statSync(source).isDirectory())
		throw new ExportError(
			`${source} is not a directory; expected an export (see \`npm run export -- --out DIR\`)`,
		);
	const missing = Object.values(EXPORT_FILES).filter(
		(name) => !fs.existsSync(path.join(source, name)),
	);
	if (missing.length)
		throw new ExportError(`${source} is not an export: missing ${missing.join(", ")}`);
	const file = (name: string) => path.join(source, name);

	const jwks = await readJson(file(EXPORT_FILES.jwks));
	if (!isObject(jwks) || !Array.isArray(jwks.keys))
		throw new ExportError(`${file(EXPORT_FILES.jwks)} has no "keys" array`);
	jwks.keys.forEach((key, at) => {
		if (!isObject(key))
			throw new ExportError(`${file(EXPORT_FILES.jwks)}: keys[${at}] is not a JSON object`);
	});
	const runs = await readJson(file(EXPORT_FILES.runs));
	if (!Array.isArray(runs))
		throw new ExportError(`${file(EXPORT_FILES.runs)} is not a JSON array`);

	const writer = createImport(options);
	try {
		writer.jwks(jwks.keys);
		runs.forEach((run, at) => {
			try {
				writer.add("runs", run);
			} catch (err) {
				if (err instanceof ImportProblem)
					throw new ExportError(`${file(EXPORT_FILES.runs)}: entry ${at} ${err.message}`);
				throw err;
			}
		});
		for (const collection of LINE_COLLECTIONS) {
			const name = file(EXPORT_FILES[collection]);
			await eachLine(name, (text, lineNo) => addLine(writer, collection, name, text, lineNo));
		}
		await importLogs(source, writer);
		return writer.finish();
	} catch (err) {
		writer.abort();
		throw err;
	}
}

const isHash = (value: unknown): value is string =>
	typeof value === "string" && Buffer.from(value, "base64").length === 32;

/** The log files of an export into the import; absent files are an export from before the logs. */
async function importLogs(source: string, writer: ImportWriter): Promise<void> {
	for (const log of LOG_NAMES) {
		const name = path.join(source, LOG_FILES[log]);
		if (!fs.existsSync(name)) continue;
		let expected = 0;
		await eachLine(name, (text, lineNo) => {
			if (text.trim() === "") return;
			const line = parseLine(name, text, lineNo);
			if (line.index !== expected || !isHash(line.hash))
				throw new ExportError(
					`${name}:${lineNo} is not leaf ${expected}: expected { "index": ${expected}, "hash": <base64 of 32 bytes> }`,
				);
			if (log === "leases" && typeof line.entry !== "string")
				throw new ExportError(`${name}:${lineNo} has no string "entry"`);
			writer.logLeaf(
				log,
				Buffer.from(line.hash, "base64"),
				log === "leases" ? (line.entry as string) : undefined,
			);
			expected++;
		});
	}
	const name = path.join(source, LOG_FILES.checkpoints);
	if (!fs.existsSync(name)) return;
	await eachLine(name, (text, lineNo) => {
		if (text.trim() === "") return;
		const line = parseLine(name, text, lineNo);
		if (
			!(LOG_NAMES as unknown[]).includes(line.log) ||
			typeof line.note !== "string" ||
			!Number.isSafeInteger(line.size)
		)
			throw new ExportError(
				`${name}:${lineNo} is not a checkpoint: expected { "log", "size", "publishedAt", "note" }`,
			);
		writer.logCheckpoint(line.log as LogName, {
			size: line.size as number,
			note: line.note,
			publishedAt: String(line.publishedAt),
		});
	});
}

function parseLine(file: string, text: string, lineNo: number): Record<string, unknown> {
	let line: unknown;
	try {
		line = JSON.parse(text);
	} catch (err) {
		throw new ExportError(`${file}:${lineNo} is not a JSON object: ${(err as Error).message}`);
	}
	if (!isObject(line)) throw new ExportError(`${file}:${lineNo} is not a JSON object`);
	return line;
}

/** The logs' verifier keys an export carries (none in one from before the logs). */
export async function readExportLogKeys(dir: string): Promise<LogKeys> {
	const file = path.join(path.resolve(dir), LOG_FILES.keys);
	if (!fs.existsSync(file)) return {};
	const keys = await readJson(file);
	if (!isObject(keys)) throw new ExportError(`${file} is not a JSON object`);
	const key = (value: unknown) => (typeof value === "string" ? value : null);
	return { signatures: key(keys.signatures), leases: key(keys.leases) };
}

/** Reads an export into memory (tests, small exports); the audit uses importExport. */
export async function readExport(dir: string): Promise<AuditSnapshot> {
	return closeAfter(await importExport(dir), readSnapshot);
}
