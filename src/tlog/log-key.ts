/**
 * A log's signing key (docs/design.md §8.4): an Ed25519 note key that signs that log's
 * checkpoints and nothing else. Given as a note signer key string (`PRIVATE+KEY+<name>+...`,
 * the form Go's note.NewSigner reads) in a variable or a file (a Secret); otherwise made on
 * first start as a 0600 file under DATA_DIR, or in memory when there is no DATA_DIR.
 */
import fs from "node:fs";
import path from "node:path";
import { UserError } from "../user-error";
import {
	generateNoteSigner,
	parseSignerKey,
	signerKeyString,
	verifierKeyString,
	type NoteSigner,
} from "./note";

export interface LogKeySettings {
	/** The signer key string itself (a variable), or null. */
	key: string | null;
	/** The file holding it, made on first start when absent; null keeps a new key in memory. */
	keyFile: string | null;
	/** The key's name, the log's origin, when a key is made here. */
	name: string;
}

/** The file names of the logs' keys under DATA_DIR. */
export const LOG_KEY_FILES = {
	signatures: "signature-log.key",
	leases: "lease-log.key",
} as const;

/** The default origins (key names) of the two logs. */
export const LOG_ORIGINS = {
	signatures: "record-signer/signatures",
	leases: "record-signer/leases",
} as const;

/** Reads or makes the key; tells `log` when it made one. */
export function loadLogKey(settings: LogKeySettings, log?: (line: string) => void): NoteSigner {
	if (settings.key) return parseSignerKey(settings.key);
	const file = settings.keyFile;
	if (!file) return generateNoteSigner(settings.name);
	if (!fs.existsSync(file)) {
		fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
		const made = generateNoteSigner(settings.name);
		try {
			// "wx": two processes starting together must not both write one.
			fs.writeFileSync(file, signerKeyString(made) + "\n", { mode: 0o600, flag: "wx" });
			fs.chmodSync(file, 0o600);
			log?.(`Made the log key ${file} (${settings.name})`);
		} catch (err) {
			if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
		}
	}
	try {
		return parseSignerKey(fs.readFileSync(file, "utf8"));
	} catch (err) {
		throw new UserError(`Cannot read the log key ${file}: ${(err as Error).message}`);
	}
}

/** The verifier key of a log's configured key, read only (nothing is made): null when there is none. */
export function readLogVerifier(settings: LogKeySettings): string | null {
	if (!settings.key && !(settings.keyFile && fs.existsSync(settings.keyFile))) return null;
	return verifierKeyString(loadLogKey(settings));
}
