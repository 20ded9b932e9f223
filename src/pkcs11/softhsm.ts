/**
 * A throwaway SoftHSM token (Debian's `softhsm2`): its own token directory and configuration
 * file in a folder, initialised with `softhsm2-util`. The benchmark's PKCS#11 figure and the
 * tests use one; the processes given its `env` share the token through its directory, as nodes
 * share a network HSM's partition.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { TokenSettings } from "./token";

/** Where Debian and Ubuntu put the module, then other distributions. */
const MODULES = [
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
];

/** The SoftHSM module, or null when `softhsm2` is not installed. */
export function findSoftHsm(): { module: string; util: string } | null {
	const module = MODULES.find((file) => fs.existsSync(file));
	const util = ["/usr/bin/softhsm2-util", "/usr/local/bin/softhsm2-util"].find((file) =>
		fs.existsSync(file),
	);
	return module && util ? { module, util } : null;
}

export interface SoftHsmToken {
	settings: TokenSettings;
	/** The variables a process needs to use the token: SOFTHSM2_CONF and KEY_STORE=pkcs11 with its PKCS11_*. */
	env: Record<string, string>;
	/** The token directory the processes share. */
	tokenDir: string;
}

/** Initialises a token labelled `label` with a random user PIN, in `dir` (made 0700). */
export function createSoftHsmToken(dir: string, label = "record-signer"): SoftHsmToken {
	const softHsm = findSoftHsm();
	if (!softHsm)
		throw new Error(
			"SoftHSM is not installed: `apt-get install -y softhsm2` (its module and softhsm2-util)",
		);
	const tokenDir = path.join(dir, "tokens");
	fs.mkdirSync(tokenDir, { recursive: true, mode: 0o700 });
	const conf = path.join(dir, "softhsm2.conf");
	fs.writeFileSync(
		conf,
		`directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
		{ mode: 0o600 },
	);
	const pin = randomBytes(9).toString("base64url");
	const env = { ...process.env, SOFTHSM2_CONF: conf };
	execFileSync(
		softHsm.util,
		[
			"--init-token",
			"--free",
			"--label",
			label,
			"--pin",
			pin,
			"--so-pin",
			randomBytes(9).toString("base64url"),
		],
		{ env, stdio: "ignore" },
	);
	return {
		settings: { module: softHsm.module, tokenLabel: label, pin, pinSource: "PKCS11_PIN" },
		env: {
			SOFTHSM2_CONF: conf,
			KEY_STORE: "pkcs11",
			PKCS11_MODULE: softHsm.module,
			PKCS11_TOKEN_LABEL: label,
			PKCS11_PIN: pin,
		},
		tokenDir,
	};
}
