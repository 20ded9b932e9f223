/**
 * Private keys at rest (docs/design.md §5.1): each private JWK, and the keyring's authority
 * key, is sealed as a compact JWE (`dir`, `A256GCM`) under the keyring master key, a pure
 * key-encryption key. The master key comes from `KEYRING_MASTER_KEY`, else from
 * `DATA_DIR/master.key` (created once, mode 0600), else (memory-only store) a random one. The
 * next master key of a rotation (§5.8) comes from `KEYRING_MASTER_KEY_NEXT`, else from
 * `DATA_DIR/master.key.next`.
 */
import { createDecipheriv, createPrivateKey, randomBytes, type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { CompactEncrypt, type CryptoKey, type JWK } from "jose";
import { authorityOf, deriveAuthorityKey, type AuthorityKey } from "../identity/authority";

export const MASTER_KEY_FILE = "master.key";
/** The next master key of a rotation, beside the current one. */
export const NEXT_MASTER_KEY_FILE = "master.key.next";
/** The `kid` the sealed authority key carries (no key id is `key-…` and this at once). */
const AUTHORITY_SEAL_ID = "keyring-authority";

export interface MasterKey {
	key: CryptoKey;
	/**
	 * The authority key HKDF derives from it: the keyring's authority key when this is the
	 * first master key of a store that holds no sealed one yet (a new store, or one an earlier
	 * version wrote), and nothing once it does (src/identity/authority.ts).
	 */
	derivedAuthority: AuthorityKey;
	/** Where it came from, for log lines and error messages (never the key itself). */
	source: string;
	/** The file it was read from, or null (a variable, or memory). */
	file: string | null;
}

export interface MasterKeySettings {
	/** base64 of 32 bytes, or null. */
	masterKey: string | null;
	/** KEYRING_MASTER_KEY_NEXT: base64 of 32 bytes, or null. */
	masterKeyNext?: string | null;
	/** Embedded store folder; "" means memory only. */
	dataDir: string;
}

export class MasterKeyError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "MasterKeyError";
	}
}

async function importAesKey(
	raw: Uint8Array,
	source: string,
	file: string | null = null,
): Promise<MasterKey> {
	if (raw.length !== 32)
		throw new MasterKeyError(`the keyring master key must be 32 bytes, got ${raw.length}`);
	try {
		// Non-extractable: once imported, the raw bytes are wiped and cannot be read back.
		const key = await crypto.subtle.importKey(
			"raw",
			raw,
			{ name: "AES-GCM", length: 256 },
			false,
			["encrypt", "decrypt"],
		);
		return { key, derivedAuthority: deriveAuthorityKey(raw), source, file };
	} finally {
		raw.fill(0);
	}
}

/**
 * Resolves the master key. `mayCreate` is false when sealed keys already exist: a missing
 * key file then means the keys cannot be opened, and a fresh key would only hide that.
 */
export async function loadMasterKey(
	settings: MasterKeySettings,
	mayCreate: boolean,
): Promise<MasterKey> {
	if (settings.masterKey) {
		const raw = Buffer.from(settings.masterKey, "base64");
		if (raw.length !== 32)
			throw new MasterKeyError(
				"KEYRING_MASTER_KEY must be the base64 encoding of exactly 32 bytes",
			);
		return importAesKey(raw, "KEYRING_MASTER_KEY");
	}
	if (!settings.dataDir) {
		if (!mayCreate)
			throw new MasterKeyError(
				"the store holds sealed keys but no KEYRING_MASTER_KEY is set and there is no DATA_DIR to read master.key from",
			);
		return importAesKey(randomBytes(32), "a random in-memory master key");
	}
	const file = path.join(settings.dataDir, MASTER_KEY_FILE);
	if (!fs.existsSync(file)) {
		if (!mayCreate)
			throw new MasterKeyError(
				`the store holds sealed keys but ${file} is missing; restore it or set KEYRING_MASTER_KEY to the key they were sealed with`,
			);
		fs.mkdirSync(settings.dataDir, { recursive: true, mode: 0o700 });
		try {
			// "wx": never overwrite a master key another process has just written.
			fs.writeFileSync(file, randomBytes(32).toString("base64") + "\n", {
				mode: 0o600,
				flag: "wx",
			});
			fs.chmodSync(file, 0o600);
		} catch (err) {
			if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
		}
	}
	return readMasterKeyFile(file);
}

async function readMasterKeyFile(file: string): Promise<MasterKey> {
	const raw = Buffer.from(fs.readFileSync(file, "utf8").trim(), "base64");
	if (raw.length !== 32)
		throw new MasterKeyError(`${file} must hold the base64 encoding of exactly 32 bytes`);
	return importAesKey(raw, file, file);
}

/**
 * The next master key of a rotation, or null when none is given: KEYRING_MASTER_KEY_NEXT beside
 * KEYRING_MASTER_KEY, else `DATA_DIR/master.key.next` beside `DATA_DIR/master.key`. A next key
 * of the wrong length fails, naming where it came from.
 */
export async function loadNextMasterKey(settings: MasterKeySettings): Promise<MasterKey | null> {
	if (settings.masterKey) {
		if (!settings.masterKeyNext) return null;
		const raw = Buffer.from(settings.masterKeyNext, "base64");
		if (raw.length !== 32)
			throw new MasterKeyError(
				`KEYRING_MASTER_KEY_NEXT must be the base64 encoding of exactly 32 bytes, got ${raw.length}`,
			);
		return importAesKey(raw, "KEYRING_MASTER_KEY_NEXT");
	}
	if (!settings.dataDir) return null;
	const file = path.join(settings.dataDir, NEXT_MASTER_KEY_FILE);
	return fs.existsSync(file) ? readMasterKeyFile(file) : null;
}

/** Makes `DATA_DIR/master.key.next` (random, mode 0600) unless it exists; returns its path and whether it was made. */
export function createNextMasterKeyFile(dataDir: string): { file: string; created: boolean } {
	const file = path.join(dataDir, NEXT_MASTER_KEY_FILE);
	try {
		fs.writeFileSync(file, randomBytes(32).toString("base64") + "\n", {
			mode: 0o600,
			flag: "wx",
		});
		fs.chmodSync(file, 0o600);
		return { file, created: true };
	} catch (err) {
		if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
		return { file, created: false };
	}
}

/**
 * The last step of a rotation, once the store's re-sealing is committed: `master.key.next`
 * becomes `master.key` in one rename, so a crash leaves either the old file and the next one
 * (the next start finishes the rotation) or the new file alone. Nothing to do for a key from a
 * variable: the operator moves KEYRING_MASTER_KEY_NEXT to KEYRING_MASTER_KEY.
 */
export function promoteNextMasterKey(next: MasterKey): void {
	if (!next.file || path.basename(next.file) !== NEXT_MASTER_KEY_FILE) return;
	const target = path.join(path.dirname(next.file), MASTER_KEY_FILE);
	const fd = fs.openSync(next.file, "r");
	try {
		fs.fsyncSync(fd);
	} finally {
		fs.closeSync(fd);
	}
	fs.renameSync(next.file, target);
	// The rename itself made durable: the folder's entry.
	const folder = fs.openSync(path.dirname(target), "r");
	try {
		fs.fsyncSync(folder);
	} finally {
		fs.closeSync(folder);
	}
	next.file = target;
	next.source = target;
}

/** Permission bits of the master key file that let anyone but its owner read it, or 0. */
export function masterKeyFileExposure(dataDir: string): number {
	const file = path.join(dataDir, MASTER_KEY_FILE);
	return fs.existsSync(file) ? fs.statSync(file).mode & 0o077 : 0;
}

/** The `kid` in the protected header binds each sealed key to its keyId (it is the AAD). */
export async function sealPrivateKey(
	privateJwk: object,
	keyId: string,
	master: MasterKey,
): Promise<string> {
	const plaintext = new TextEncoder().encode(JSON.stringify(privateJwk));
	try {
		return await new CompactEncrypt(plaintext)
			.setProtectedHeader({ alg: "dir", enc: "A256GCM", kid: keyId, cty: "jwk+json" })
			.encrypt(master.key);
	} finally {
		plaintext.fill(0);
	}
}

/**
 * The private JWK's UTF-8 JSON bytes. The caller wipes them (`fill(0)`) once used. A wrong
 * master key or a sealed key moved to another keyId fails with a MasterKeyError.
 *
 * The compact JWE (`dir`, `A256GCM`) is opened with node:crypto directly, on this thread and
 * in microseconds: it happens for every lease. Any JOSE library opens it too.
 */
export async function unsealPrivateKey(
	sealed: string,
	keyId: string,
	master: MasterKey,
): Promise<Uint8Array> {
	const [header, encryptedKey, iv, ciphertext, tag] = sealed.split(".");
	let fields: { alg?: unknown; enc?: unknown; kid?: unknown };
	try {
		fields = JSON.parse(Buffer.from(header, "base64url").toString("utf8"));
	} catch {
		throw new MasterKeyError(`the sealed private key of ${keyId} is not a compact JWE`);
	}
	if (fields.kid !== keyId)
		throw new MasterKeyError(
			`the sealed private key stored for ${keyId} belongs to ${String(fields.kid)}`,
		);
	if (
		fields.alg !== "dir" ||
		fields.enc !== "A256GCM" ||
		encryptedKey !== "" ||
		tag === undefined
	)
		throw new MasterKeyError(
			`the sealed private key of ${keyId} is not a dir/A256GCM compact JWE`,
		);
	try {
		// node:crypto takes the non-extractable CryptoKey as it is (@types/node does not say so).
		const decipher = createDecipheriv(
			"aes-256-gcm",
			master.key as unknown as KeyObject,
			Buffer.from(iv, "base64url"),
		);
		decipher.setAAD(Buffer.from(header, "ascii"));
		decipher.setAuthTag(Buffer.from(tag, "base64url"));
		return Buffer.concat([
			decipher.update(Buffer.from(ciphertext, "base64url")),
			decipher.final(),
		]);
	} catch {
		throw new MasterKeyError(
			`the master key from ${master.source} does not open the sealed private key of ${keyId}: it is not the key these keys were sealed with`,
		);
	}
}

/** The authority key sealed under the master key, as the keyring's store keeps it. */
export async function sealAuthority(authority: AuthorityKey, master: MasterKey): Promise<string> {
	const jwk = authority.privateKey.export({ format: "jwk" }) as JWK;
	try {
		return await sealPrivateKey(
			{ kty: jwk.kty, crv: jwk.crv, x: jwk.x, d: jwk.d },
			AUTHORITY_SEAL_ID,
			master,
		);
	} finally {
		delete jwk.d;
	}
}

/** The authority key the store keeps sealed; a MasterKeyError when `master` does not open it. */
export async function unsealAuthority(sealed: string, master: MasterKey): Promise<AuthorityKey> {
	const plaintext = await unsealPrivateKey(sealed, AUTHORITY_SEAL_ID, master);
	try {
		const jwk = JSON.parse(new TextDecoder().decode(plaintext)) as JWK;
		try {
			return authorityOf(createPrivateKey({ key: jwk as never, format: "jwk" }));
		} finally {
			delete jwk.d;
		}
	} finally {
		plaintext.fill(0);
	}
}

/** Whether `master` opens the sealed authority key. */
export async function opensAuthority(sealed: string, master: MasterKey): Promise<boolean> {
	try {
		await unsealAuthority(sealed, master);
		return true;
	} catch (err) {
		if (err instanceof MasterKeyError) return false;
		throw err;
	}
}
