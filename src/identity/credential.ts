/**
 * A credential: an Ed25519 key pair whose public half the keyring has enrolled under a name
 * (docs/design.md §6.1). Two roles hold one:
 * - a signer proves itself with it on each lease request (proof.ts) and on each piece of
 *   signatures it stores (lease-token.ts): only an enrolled signer obtains a key;
 * - the batcher signs each batch's dispatch ticket with it (ticket.ts): only a batch the
 *   batcher recorded is signed; records takes a batch's closing from it alone.
 *
 * Where a role finds its credential, first match wins (`<ROLE>` = SIGNER or BATCHER):
 * - `<ROLE>_KEY`: the private JWK itself (JSON, or base64 of it), e.g. from a Kubernetes Secret;
 * - `<ROLE>_KEY_FILE`: a file holding it;
 * - `DATA_DIR/signer.key` or `DATA_DIR/batcher.key`: created on first use (mode 0600) on the
 *   embedded default and in `npm run cluster`, whose keyring, sharing DATA_DIR, enrols it by itself;
 * - with `DATA_DIR=""` (tests, in-process), one credential per role and process, in memory.
 *
 * The private JWK carries its enrolment name as `kid`. A node reads its credential's file again
 * when the file changes (`CredentialSource`, checked at most once a second), so an operator
 * rotates a credential without restarting the node (docs/design.md §6.1).
 */
import {
	createHash,
	createPrivateKey,
	createPublicKey,
	generateKeyPairSync,
	type KeyObject,
} from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { JWK } from "jose";
import { UserError } from "../user-error";

export type CredentialRole = "signer" | "batcher";

/** Each role's credential file in DATA_DIR. */
export const CREDENTIAL_FILES: Record<CredentialRole, string> = {
	signer: "signer.key",
	batcher: "batcher.key",
};
export const SIGNER_KEY_FILE = CREDENTIAL_FILES.signer;
/** The variables each role's credential is read from, for messages. */
export const CREDENTIAL_VARIABLES: Record<CredentialRole, { key: string; file: string }> = {
	signer: { key: "SIGNER_KEY", file: "SIGNER_KEY_FILE" },
	batcher: { key: "BATCHER_KEY", file: "BATCHER_KEY_FILE" },
};

export interface SignerCredential {
	/** The name the keyring enrolled it under (the JWK's `kid`). */
	name: string;
	privateKey: KeyObject;
	/** Public Ed25519 JWK (`kty`, `crv`, `x`, `kid`). */
	publicJwk: JWK;
	/** Where it came from, for messages (never the key). */
	source: string;
}

export class CredentialError extends UserError {}

/** Enrolment names: what commands and log lines show. */
export const SIGNER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface CredentialSettings {
	role: CredentialRole;
	/** SIGNER_KEY or BATCHER_KEY: the private JWK (JSON or base64 of JSON), or null. */
	key: string | null;
	/** SIGNER_KEY_FILE or BATCHER_KEY_FILE: a file holding it, or null. */
	keyFile: string | null;
	/** DATA_DIR: the role's file there, created when absent; "" = memory. */
	dataDir: string;
}

/** A new credential: a fresh Ed25519 pair under `name`. */
export function newCredential(name: string, source = "new"): SignerCredential {
	if (!SIGNER_NAME.test(name))
		throw new CredentialError(
			`A signer name is 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit; got ${JSON.stringify(name)}`,
		);
	const { privateKey } = generateKeyPairSync("ed25519");
	return fromPrivateKey(privateKey, name, source);
}

function fromPrivateKey(privateKey: KeyObject, name: string, source: string): SignerCredential {
	const { kty, crv, x } = createPublicKey(privateKey).export({ format: "jwk" }) as JWK;
	return { name, privateKey, publicJwk: { kty, crv, x, kid: name }, source };
}

/** The private JWK with its name as `kid`: what SIGNER_KEY and the credential files hold. */
export function serializeCredential(credential: SignerCredential): string {
	const jwk = credential.privateKey.export({ format: "jwk" }) as JWK;
	return JSON.stringify({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, d: jwk.d, kid: credential.name });
}

/** Whether `jwk` is an OKP public key on `crv` whose `x` is 32 bytes (Ed25519 and X25519 alike). */
export function isOkpPublicKey(
	jwk: JWK | undefined,
	crv: "Ed25519" | "X25519",
): jwk is JWK & { x: string } {
	return (
		jwk?.kty === "OKP" &&
		jwk.crv === crv &&
		typeof jwk.x === "string" &&
		Buffer.from(jwk.x, "base64url").length === 32
	);
}

/** Reads a serialized credential (the JSON, or base64 of it); `source` names where it came from. */
export function parseCredential(text: string, source: string): SignerCredential {
	const trimmed = text.trim();
	let jwk: JWK;
	try {
		jwk = JSON.parse(
			trimmed.startsWith("{") ? trimmed : Buffer.from(trimmed, "base64").toString("utf8"),
		) as JWK;
	} catch {
		throw new CredentialError(
			`${source} is not a signer credential: expected the private Ed25519 JWK as JSON (or base64 of it), as \`npm run signer -- create\` prints`,
		);
	}
	if (
		jwk?.kty !== "OKP" ||
		jwk.crv !== "Ed25519" ||
		typeof jwk.d !== "string" ||
		typeof jwk.kid !== "string" ||
		!SIGNER_NAME.test(jwk.kid)
	)
		throw new CredentialError(
			`${source} is not a signer credential: it must be a private Ed25519 JWK (kty OKP, crv Ed25519, d) whose kid is the signer's enrolled name`,
		);
	try {
		return fromPrivateKey(
			createPrivateKey({ key: jwk as never, format: "jwk" }),
			jwk.kid,
			source,
		);
	} catch (err) {
		throw new CredentialError(
			`${source} holds an unusable Ed25519 key: ${(err as Error).message}`,
		);
	}
}

/** Base64url SHA-256 of the public key: how commands tell two credentials of one name apart. */
export function thumbprint(publicJwk: JWK): string {
	return createHash("sha256")
		.update(`{"crv":"Ed25519","kty":"OKP","x":"${publicJwk.x}"}`)
		.digest("base64url")
		.slice(0, 16);
}

const inMemory = new Map<string, SignerCredential>();

/** The credential of this process's embedded `role`: its file in DATA_DIR, created when absent (or one per role and process in memory). */
export function localCredential(
	dataDir: string,
	role: CredentialRole = "signer",
): SignerCredential {
	if (!dataDir) {
		let credential = inMemory.get(role);
		if (!credential)
			inMemory.set(role, (credential = newCredential(`local-${role}-memory`, "memory")));
		return credential;
	}
	return credentialFile(path.join(dataDir, CREDENTIAL_FILES[role]), true);
}

/** The credential in `file`; created there (mode 0600, under a fresh `local-…` name) when absent and `create` says so. */
export function credentialFile(file: string, create: boolean): SignerCredential {
	if (create && !fs.existsSync(file)) {
		fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
		const created = newCredential(`local-${thumbprintOfNew()}`, file);
		try {
			// "wx": a signer and the keyring starting together must not both write one.
			fs.writeFileSync(file, serializeCredential(created) + "\n", {
				mode: 0o600,
				flag: "wx",
			});
			fs.chmodSync(file, 0o600);
		} catch (err) {
			if ((err as NodeJS.ErrnoException).code !== "EEXIST")
				throw new CredentialError(
					`Cannot create the signer credential ${file}: ${(err as Error).message}`,
				);
		}
	}
	let text: string;
	try {
		text = fs.readFileSync(file, "utf8");
	} catch (err) {
		throw new CredentialError(
			`Cannot read the signer credential ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
		);
	}
	return parseCredential(text, file);
}

/** A short random suffix for an auto-enrolled name, so a replaced local credential gets a new one. */
function thumbprintOfNew(): string {
	return createHash("sha256")
		.update(String(process.hrtime.bigint()) + Math.random())
		.digest("hex")
		.slice(0, 8);
}

/** A role's credential, as the module comment says where it is looked for. */
export function loadCredential(settings: CredentialSettings): SignerCredential {
	if (settings.key) return parseCredential(settings.key, CREDENTIAL_VARIABLES[settings.role].key);
	if (settings.keyFile) return credentialFile(settings.keyFile, false);
	return localCredential(settings.dataDir, settings.role);
}

/** How often a node looks whether its credential file changed. */
const REREAD_MS = 1_000;

/** What tells one version of a file from the next: a rotation writes a new file and renames it over the old. */
function fileStamp(file: string): string | null {
	try {
		const stat = fs.statSync(file);
		return `${stat.ino}:${stat.mtimeMs}:${stat.size}`;
	} catch {
		return null;
	}
}

/**
 * A role's credential as its node uses it (docs/design.md §6.1): loaded as `loadCredential`
 * finds it, and read again when its file changes, so a node switches to a rotated credential
 * without a restart. A credential from `<ROLE>_KEY` or from memory never changes. A file that
 * cannot be read or parsed keeps the credential in use, and says why once per change.
 */
export class CredentialSource {
	private credential: SignerCredential;
	private readonly file: string | null;
	private stamp: string | null;
	private checkedAt: number;

	constructor(
		settings: CredentialSettings,
		private readonly told: {
			switched?(next: SignerCredential, previous: SignerCredential): void;
			unreadable?(err: Error): void;
		} = {},
		private readonly now: () => number = Date.now,
	) {
		this.credential = loadCredential(settings);
		this.file = settings.key
			? null
			: (settings.keyFile ??
				(settings.dataDir
					? path.join(settings.dataDir, CREDENTIAL_FILES[settings.role])
					: null));
		this.stamp = this.file && fileStamp(this.file);
		this.checkedAt = this.now();
	}

	/** The credential to make new statements with: the file's, as it was at most a second ago. */
	current(): SignerCredential {
		if (!this.file || this.now() - this.checkedAt < REREAD_MS) return this.credential;
		this.checkedAt = this.now();
		const stamp = fileStamp(this.file);
		if (stamp === this.stamp) return this.credential;
		this.stamp = stamp;
		try {
			const next = credentialFile(this.file, false);
			const previous = this.credential;
			if (next.publicJwk.x !== previous.publicJwk.x || next.name !== previous.name) {
				this.credential = next;
				this.told.switched?.(next, previous);
			}
		} catch (err) {
			this.told.unreadable?.(err as Error);
		}
		return this.credential;
	}
}

/**
 * Writes a credential to `file` in one rename (mode 0600), over the one there: what a node
 * reading it sees is the old credential or the new one, never part of either.
 */
export function writeCredentialFile(file: string, credential: SignerCredential): void {
	fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true, mode: 0o700 });
	const temporary = `${file}.${process.pid}.tmp`;
	fs.writeFileSync(temporary, serializeCredential(credential) + "\n", {
		mode: 0o600,
		flag: "wx",
	});
	fs.renameSync(temporary, file);
}
