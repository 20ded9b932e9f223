/**
 * DATA_DIR holds the stores, the keys and secrets: the folder is 0700 and every file the
 * project makes in it 0600, whatever the umask. Used by the gateway (auth.secret, the webhook
 * key, API keys), the embedded stores (src/store/sqlite.ts) and the cluster launcher's logs.
 * No broker in here.
 */
import fs from "node:fs";

export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** Folders already told about, so each is logged once per process. */
const told = new Set<string>();

/**
 * Creates `dir` (and missing parents) with mode 0700. An existing one others may read or
 * enter (0755 from an earlier version) is tightened to 0700, told to `log` once; one this user
 * may not chmod (a volume owned by root, e.g. with a Kubernetes fsGroup) is left as it is,
 * told once too.
 */
export function ensurePrivateDir(dir: string, log?: (line: string) => void): void {
	fs.mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
	const mode = fs.statSync(dir).mode & 0o7777;
	if ((mode & 0o077) === 0) return;
	const was = `0${mode.toString(8)}`;
	try {
		fs.chmodSync(dir, PRIVATE_DIR_MODE);
		if (!told.has(dir))
			log?.(`DATA_DIR ${dir} was mode ${was}, open to other users: tightened to 0700`);
	} catch (err) {
		const code = (err as NodeJS.ErrnoException).code;
		if (code !== "EPERM" && code !== "EACCES") throw err;
		if (!told.has(dir))
			log?.(
				`DATA_DIR ${dir} is mode ${was} and not this user's to change (${code}): left as it is; the files made in it are 0600`,
			);
	}
	told.add(dir);
}

/** Makes `file` mode 0600 if it exists and is this user's (one an earlier version made 0644). */
export function makePrivate(file: string): void {
	try {
		fs.chmodSync(file, PRIVATE_FILE_MODE);
	} catch (err) {
		const code = (err as NodeJS.ErrnoException).code;
		if (code !== "ENOENT" && code !== "EPERM") throw err;
	}
}

/** Creates `file` empty with mode 0600 unless it exists, and makes it 0600 either way (makePrivate). */
export function touchPrivate(file: string): void {
	fs.closeSync(fs.openSync(file, "a", PRIVATE_FILE_MODE));
	makePrivate(file);
}

/** A write stream appending to `file`, made 0600 before anything is written (a log). */
export function privateAppendStream(file: string): fs.WriteStream {
	const fd = fs.openSync(file, "a", PRIVATE_FILE_MODE);
	try {
		fs.fchmodSync(fd, PRIVATE_FILE_MODE);
	} catch (err) {
		fs.closeSync(fd);
		throw err;
	}
	return fs.createWriteStream(file, { fd });
}
