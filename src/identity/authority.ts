/**
 * The keyring's authority key: the Ed25519 key a keyring signs lease tokens with
 * (lease-token.ts), so that records can check, offline, that signatures come from the holder
 * of a batch's current lease. It was first derived from the keyring's first master key
 * (HKDF-SHA256); the keyring keeps it sealed under the current master key in its store
 * (src/keyring/master-key.ts), so rotating the master key leaves it, and every node's trust in
 * it, unchanged. It signs nothing but lease tokens.
 *
 * Its public half is the trust anchor of every node that checks tokens. Records finds it,
 * first match wins:
 * - `KEYRING_PUBLIC_KEY`: the key itself (its JWK, or the base64url `x`), e.g. in a ConfigMap;
 * - `KEYRING_PUBLIC_KEY_FILE` (default `DATA_DIR/keyring.pub`): the file the keyring writes
 *   there at start (npm start, serve, cluster, and compose through a shared volume);
 * - a keyring in the same process.
 * Never from the bus: a stranger there could answer in the keyring's name.
 */
import {
	createHash,
	createPrivateKey,
	createPublicKey,
	hkdfSync,
	type KeyObject,
} from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { JWK } from "jose";
import { UserError } from "../user-error";

export const AUTHORITY_PUBLIC_FILE = "keyring.pub";

/** PKCS#8 DER of an Ed25519 private key, before its 32-byte seed. */
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

export interface AuthorityKey {
	/** The thumbprint tokens name it by (`kid`). */
	kid: string;
	privateKey: KeyObject;
	publicJwk: JWK;
}

export class TrustAnchorError extends UserError {}

/** Base64url SHA-256 of the public key's `x`, shortened: how a token names its signing key. */
function kidOf(x: string): string {
	return createHash("sha256").update(`authority:${x}`).digest("base64url").slice(0, 16);
}

/** The authority key of a master key's raw bytes (read before they are wiped): how a keyring's first master key made it. */
export function deriveAuthorityKey(masterKey: Uint8Array): AuthorityKey {
	const seed = Buffer.from(
		hkdfSync("sha256", masterKey, Buffer.alloc(0), "record-signer keyring authority v1", 32),
	);
	try {
		return authorityOf(
			createPrivateKey({
				key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]),
				format: "der",
				type: "pkcs8",
			}),
		);
	} finally {
		seed.fill(0);
	}
}

/** The authority key of an Ed25519 private key (as unsealed from the keyring's store). */
export function authorityOf(privateKey: KeyObject): AuthorityKey {
	const { x } = createPublicKey(privateKey).export({ format: "jwk" }) as JWK;
	const kid = kidOf(x!);
	return { kid, privateKey, publicJwk: { kty: "OKP", crv: "Ed25519", x, kid, use: "sig" } };
}

/** Keyrings of this process: records in the same process trusts them without a file. */
const inProcess = new Map<string, KeyObject>();

/**
 * Makes the authority's public half known: to this process, and in `file` (mode 0600; a
 * public key, but every file in DATA_DIR is the owner's alone). Rewritten only when it changed.
 */
export function publishAuthority(authority: AuthorityKey, file: string | null): void {
	inProcess.set(authority.kid, createPublicKey(authority.privateKey));
	if (!file) return;
	const text = JSON.stringify(authority.publicJwk) + "\n";
	if (fs.existsSync(file) && fs.readFileSync(file, "utf8") === text) return;
	fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
	const temporary = `${file}.${process.pid}.tmp`;
	fs.writeFileSync(temporary, text, { mode: 0o600 });
	fs.renameSync(temporary, file);
}

/** A trusted public key from its JWK (JSON) or its base64url `x`; `source` names where it came from. */
export function parseAuthorityKey(text: string, source: string): { kid: string; key: KeyObject } {
	const trimmed = text.trim();
	let x: string | undefined;
	if (trimmed.startsWith("{")) {
		try {
			const jwk = JSON.parse(trimmed) as JWK;
			if (jwk.kty === "OKP" && jwk.crv === "Ed25519") x = jwk.x;
		} catch {
			// reported below
		}
	} else if (/^[A-Za-z0-9_-]{43}$/.test(trimmed)) x = trimmed;
	if (!x || Buffer.from(x, "base64url").length !== 32)
		throw new TrustAnchorError(
			`${source} is not the keyring's public key: expected its Ed25519 JWK or the 43-character base64url x (npm run signer -- authority prints it)`,
		);
	return {
		kid: kidOf(x),
		key: createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" } as never),
	};
}

export interface TrustSettings {
	/** KEYRING_PUBLIC_KEY, or null. */
	keyringPublicKey: string | null;
	/** KEYRING_PUBLIC_KEY_FILE (default DATA_DIR/keyring.pub), or null. */
	keyringPublicKeyFile: string | null;
}

/** How often a missing or unknown key sends the reader back to its sources. */
const RELOAD_MS = 1_000;

/** The keyring authority keys a node trusts, from the sources the module comment lists. */
export class KeyringTrust {
	private readonly fixed = new Map<string, KeyObject>();
	private fromFile = new Map<string, KeyObject>();
	private loadedAt = -Infinity;

	constructor(private readonly settings: TrustSettings) {
		if (settings.keyringPublicKey) {
			const { kid, key } = parseAuthorityKey(settings.keyringPublicKey, "KEYRING_PUBLIC_KEY");
			this.fixed.set(kid, key);
		}
	}

	/** The trusted key named `kid`, or null (re-reading the file at most once a second). */
	key(kid: string): KeyObject | null {
		const known =
			this.fixed.get(kid) ??
			this.fromFile.get(kid) ??
			(this.fixed.size ? undefined : inProcess.get(kid));
		if (known) return known;
		if (
			this.fixed.size ||
			!this.settings.keyringPublicKeyFile ||
			Date.now() - this.loadedAt < RELOAD_MS
		)
			return null;
		this.loadedAt = Date.now();
		const file = this.settings.keyringPublicKeyFile;
		if (!fs.existsSync(file)) return null;
		const { kid: fileKid, key } = parseAuthorityKey(fs.readFileSync(file, "utf8"), file);
		this.fromFile = new Map([[fileKid, key]]);
		return fileKid === kid ? key : null;
	}

	/**
	 * The one key this node trusts, when it knows exactly one: KEYRING_PUBLIC_KEY, else the file,
	 * else a keyring of this process. What a signer or the batcher derives its request MAC key
	 * with (request-mac.ts); null while it knows none, or several.
	 */
	anchor(): KeyObject | null {
		if (this.fixed.size === 1) return [...this.fixed.values()][0];
		if (this.fixed.size) return null;
		this.key("");
		if (this.fromFile.size === 1) return [...this.fromFile.values()][0];
		return inProcess.size === 1 ? [...inProcess.values()][0] : null;
	}

	/** Where this node looks for the keyring's public key, for messages. */
	describe(): string {
		if (this.fixed.size) return "KEYRING_PUBLIC_KEY";
		return this.settings.keyringPublicKeyFile
			? `${this.settings.keyringPublicKeyFile} (KEYRING_PUBLIC_KEY_FILE), or a keyring in this process`
			: "a keyring in this process (set KEYRING_PUBLIC_KEY)";
	}
}
