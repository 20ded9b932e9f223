/**
 * API keys: the second way to authenticate to the gateway (header `X-API-Key`), for scripts
 * and CI jobs. A key is `rsk_<id>_<secret>`: made by `npm run apikey -- create`, shown once,
 * and kept only as the SHA-256 of the whole key (a key is 32 random bytes: a fast hash is
 * enough; there is nothing to guess). The presented key's hash is compared in constant time.
 *
 * The keys live in one JSON file (API_KEYS_FILE, default DATA_DIR/api-keys.json, mode 0600),
 * written by the command and re-read by the gateway when it changes, so a revocation takes
 * effect within a second. In Kubernetes the file is a Secret mounted read-only (docs/api.md).
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { SCOPE_RECORDS_WRITE, SCOPE_RUNS_WRITE } from "./auth";
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from "../private-files";

export const API_KEYS_FILE = "api-keys.json";
export const API_KEY_HEADER = "x-api-key";
/** Scopes a key may carry: the same as tokens'. */
export const KNOWN_SCOPES = [SCOPE_RUNS_WRITE, SCOPE_RECORDS_WRITE];

export interface ApiKeyRecord {
	id: string;
	name: string;
	/** Hex SHA-256 of the whole key. */
	hash: string;
	scopes: string[];
	createdAt: string;
	revokedAt: string | null;
}

const KEY = /^rsk_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class ApiKeyError extends Error {}

const sha256 = (text: string) => createHash("sha256").update(text).digest();

function readFile(file: string): ApiKeyRecord[] {
	if (!fs.existsSync(file)) return [];
	const parsed = JSON.parse(fs.readFileSync(file, "utf8")) as unknown;
	if (!Array.isArray(parsed)) throw new ApiKeyError(`${file} must hold a JSON array of API keys`);
	return parsed as ApiKeyRecord[];
}

/** Written whole, then renamed over the old file: a reader never sees half of it. */
function writeFile(file: string, records: ApiKeyRecord[]): void {
	// Its folder may be any (API_KEYS_FILE): made 0700 when missing, never changed when there.
	fs.mkdirSync(path.dirname(file), { recursive: true, mode: PRIVATE_DIR_MODE });
	const temporary = `${file}.${process.pid}.tmp`;
	fs.writeFileSync(temporary, JSON.stringify(records, null, 2) + "\n", {
		mode: PRIVATE_FILE_MODE,
	});
	fs.chmodSync(temporary, PRIVATE_FILE_MODE);
	fs.renameSync(temporary, file);
}

/** The command's side: create, list and revoke keys in `file`. */
export class ApiKeyFile {
	constructor(readonly file: string) {}

	list(): ApiKeyRecord[] {
		return readFile(this.file);
	}

	/** A new key: its record is stored, the key itself is returned once and never again. */
	create(
		name: string,
		scopes: string[],
		now = new Date(),
	): { key: string; record: ApiKeyRecord } {
		if (!NAME.test(name))
			throw new ApiKeyError(
				`An API key's name is 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit; got ${JSON.stringify(name)}`,
			);
		const unknown = scopes.filter((scope) => !KNOWN_SCOPES.includes(scope));
		if (unknown.length)
			throw new ApiKeyError(
				`Unknown scope ${unknown.map((s) => JSON.stringify(s)).join(", ")}: the scopes are ${KNOWN_SCOPES.join(", ")}`,
			);
		const records = readFile(this.file);
		if (records.some((r) => r.name === name && !r.revokedAt))
			throw new ApiKeyError(
				`An API key named "${name}" exists: revoke it first, or choose another name`,
			);
		const id = randomBytes(9).toString("base64url").replace(/[-_]/g, "x").slice(0, 12);
		const key = `rsk_${id}_${randomBytes(32).toString("base64url")}`;
		const record: ApiKeyRecord = {
			id,
			name,
			hash: sha256(key).toString("hex"),
			scopes,
			createdAt: now.toISOString(),
			revokedAt: null,
		};
		writeFile(this.file, [...records, record]);
		return { key, record };
	}

	/** Revokes the active key of `name`; false when there is none. */
	revoke(name: string, now = new Date()): boolean {
		const records = readFile(this.file);
		const record = records.find((r) => r.name === name && !r.revokedAt);
		if (!record) return false;
		record.revokedAt = now.toISOString();
		writeFile(this.file, records);
		return true;
	}
}

/** The gateway's side: checks presented keys against the file, re-read when it changes. */
export class ApiKeyVerifier {
	private records = new Map<string, ApiKeyRecord>();
	private loaded = "";
	private checkedAt = -Infinity;

	/** `file` null: no keys (every presented key is refused). */
	constructor(
		private readonly file: string | null,
		private readonly now = Date.now,
	) {}

	/** The key's record when it is valid and not revoked; null otherwise. */
	verify(presented: string): ApiKeyRecord | null {
		this.refresh(false);
		const match = KEY.exec(presented.trim());
		// A key made a moment ago: look at the file again now (a stat; the file is read only if it changed).
		if (match && !this.records.has(match[1])) this.refresh(true);
		const record = match ? this.records.get(match[1]) : undefined;
		// Compared in constant time, against a dummy when the id is unknown, so timing tells nothing.
		const expected = record ? Buffer.from(record.hash, "hex") : sha256("no such key");
		const equal = timingSafeEqual(sha256(presented.trim()), expected);
		return record && equal && !record.revokedAt ? record : null;
	}

	private refresh(now: boolean): void {
		if (!this.file || (!now && this.now() - this.checkedAt < 1_000)) return;
		this.checkedAt = this.now();
		let version: string;
		try {
			const stat = fs.statSync(this.file);
			version = `${stat.ino}:${stat.mtimeMs}:${stat.size}`;
		} catch {
			this.records.clear();
			this.loaded = "";
			return;
		}
		if (version === this.loaded) return;
		try {
			this.records = new Map(readFile(this.file).map((r) => [r.id, r]));
			this.loaded = version;
		} catch {
			// Unreadable or half-written by hand: no key is accepted until it reads again.
			this.records.clear();
			this.loaded = "";
		}
	}
}
