/**
 * C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys (signature type 0x01), in
 * the key formats of golang.org/x/mod/sumdb/note: a verifier key is
 * `<name>+<key id, 8 hex>+<base64(0x01 || public key)>`, a signer key is `PRIVATE+KEY+<name>+<key
 * id>+<base64(0x01 || seed)>`, and the key id is the first four bytes (big endian) of
 * SHA-256(name || 0x0A || 0x01 || public key). So the standard verifiers check these notes
 * unchanged (test/unit/tlog-note.test.ts checks the spec's and Go's own examples).
 */
import { createHash, randomBytes } from "node:crypto";
import {
	PUBLIC_KEY_BYTES,
	requireSodium,
	SECRET_KEY_BYTES,
	SEED_BYTES,
	SIGNATURE_BYTES,
} from "../sodium";

const ED25519 = 0x01;
const SIGNER_PREFIX = "PRIVATE+KEY+";
/** Verifiers must accept at least 16 signatures; more than this many lines is refused. */
const MAX_SIGNATURES = 100;

export interface NoteVerifier {
	name: string;
	keyId: number;
	publicKey: Buffer;
}

export interface NoteSigner extends NoteVerifier {
	/** libsodium's secret key: the seed followed by the public key. */
	secretKey: Buffer;
}

export class NoteError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "NoteError";
	}
}

/** Whether `text` holds an ASCII control character other than those `allowed`. */
function hasControl(text: string, allowed = ""): boolean {
	for (let i = 0; i < text.length; i++)
		if (text.charCodeAt(i) < 0x20 && !allowed.includes(text[i])) return true;
	return false;
}

/** A key name: non-empty, with no Unicode space and no plus. */
function checkName(name: string): void {
	if (!name || /[\s+]/u.test(name) || hasControl(name))
		throw new NoteError(`"${name}" is not a note key name (non-empty, no spaces, no "+")`);
}

/** SHA-256(name || 0x0A || 0x01 || public key)[:4], big endian. */
export function noteKeyId(name: string, publicKey: Uint8Array): number {
	return createHash("sha256")
		.update(name)
		.update(Buffer.from([0x0a, ED25519]))
		.update(publicKey)
		.digest()
		.readUInt32BE(0);
}

const hex8 = (id: number) => id.toString(16).padStart(8, "0");

function fromSeed(name: string, seed: Uint8Array): NoteSigner {
	checkName(name);
	const sodium = requireSodium();
	const publicKey = Buffer.alloc(PUBLIC_KEY_BYTES);
	const secretKey = Buffer.alloc(SECRET_KEY_BYTES);
	sodium.crypto_sign_seed_keypair(publicKey, secretKey, Buffer.from(seed));
	return { name, keyId: noteKeyId(name, publicKey), publicKey, secretKey };
}

/** A new Ed25519 note key named `name`. */
export function generateNoteSigner(name: string): NoteSigner {
	return fromSeed(name, randomBytes(SEED_BYTES));
}

/** The verifier key string that tells anyone how to check this key's notes. */
export function verifierKeyString(key: NoteVerifier): string {
	return `${key.name}+${hex8(key.keyId)}+${Buffer.concat([Buffer.from([ED25519]), key.publicKey]).toString("base64")}`;
}

/** The signer key string (secret: the seed), as Go's note.NewSigner reads it. */
export function signerKeyString(key: NoteSigner): string {
	const seed = key.secretKey.subarray(0, SEED_BYTES);
	return `${SIGNER_PREFIX}${key.name}+${hex8(key.keyId)}+${Buffer.concat([Buffer.from([ED25519]), seed]).toString("base64")}`;
}

/** `name+hash+key`: the three parts, with the key id checked against the name and key. */
function parseKeyParts(text: string, what: string): { name: string; keyId: number; key: Buffer } {
	// The base64 key may hold "+" itself: only the first two separate parts.
	const [name, hash, ...rest] = text.split("+");
	const parts = [name, hash ?? "", rest.join("+")];
	const b64 = parts[2];
	if (!rest.length || !/^[0-9a-f]{8}$/.test(parts[1]) || !/^[A-Za-z0-9+/]+=*$/.test(b64))
		throw new NoteError(`malformed ${what}: expected name+hash+base64`);
	const raw = Buffer.from(b64, "base64");
	if (raw.toString("base64") !== b64) throw new NoteError(`malformed ${what}: bad base64`);
	if (raw[0] !== ED25519 || raw.length !== 1 + 32)
		throw new NoteError(`${what}: not an Ed25519 key (type 0x01, 32 bytes)`);
	return { name: parts[0], keyId: parseInt(parts[1], 16), key: raw.subarray(1) };
}

export function parseVerifierKey(text: string): NoteVerifier {
	const { name, keyId, key } = parseKeyParts(text.trim(), "verifier key");
	checkName(name);
	if (noteKeyId(name, key) !== keyId)
		throw new NoteError(`verifier key ${name}: its key id does not match its name and key`);
	return { name, keyId, publicKey: Buffer.from(key) };
}

export function parseSignerKey(text: string): NoteSigner {
	const trimmed = text.trim();
	if (!trimmed.startsWith(SIGNER_PREFIX))
		throw new NoteError("malformed signer key: no PRIVATE+KEY+ prefix");
	const { name, keyId, key } = parseKeyParts(trimmed.slice(SIGNER_PREFIX.length), "signer key");
	const signer = fromSeed(name, key);
	if (signer.keyId !== keyId)
		throw new NoteError(`signer key ${name}: its key id does not match its name and key`);
	return signer;
}

/** Note text: valid UTF-8 with no control character but newline, ending in a newline. */
function checkText(text: string): void {
	if (
		!text.endsWith("\n") ||
		hasControl(text, "\n") ||
		/[\uD800-\uDFFF]/.test(text.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ""))
	)
		throw new NoteError(
			"malformed note text: it must end in a newline and hold no control characters",
		);
}

/** The signed note: the text, a blank line, and this key's signature line. */
export function signNote(text: string, signer: NoteSigner): string {
	checkText(text);
	const signature = Buffer.alloc(SIGNATURE_BYTES);
	requireSodium().crypto_sign_detached(signature, Buffer.from(text), signer.secretKey);
	const id = Buffer.alloc(4);
	id.writeUInt32BE(signer.keyId);
	return `${text}\n\u2014 ${signer.name} ${Buffer.concat([id, signature]).toString("base64")}\n`;
}

export interface OpenedNote {
	text: string;
	/** The names of the known keys whose signatures verified. */
	verifiedBy: string[];
}

/**
 * Opens a signed note: signatures by unknown keys are ignored, one by a known key that does not
 * verify rejects the note, and at least one known key must have signed it.
 */
export function openNote(note: string, verifiers: NoteVerifier[]): OpenedNote {
	const split = note.lastIndexOf("\n\n");
	if (split < 0 || !note.endsWith("\n"))
		throw new NoteError("malformed note: no signature block");
	const text = note.slice(0, split + 1);
	checkText(text);
	const lines = note.slice(split + 2, -1).split("\n");
	if (lines.length > MAX_SIGNATURES) throw new NoteError("malformed note: too many signatures");
	const verifiedBy: string[] = [];
	for (const line of lines) {
		const match = /^\u2014 (\S+) ([A-Za-z0-9+/]+=*)$/.exec(line);
		if (!match) throw new NoteError(`malformed note: bad signature line "${line}"`);
		const raw = Buffer.from(match[2], "base64");
		if (raw.length < 5) throw new NoteError("malformed note: short signature");
		const keyId = raw.readUInt32BE(0);
		const key = verifiers.find((v) => v.name === match[1] && v.keyId === keyId);
		if (!key) continue;
		const signature = raw.subarray(4);
		if (
			signature.length !== SIGNATURE_BYTES ||
			!requireSodium().crypto_sign_verify_detached(
				signature,
				Buffer.from(text),
				key.publicKey,
			)
		)
			throw new NoteError(`the signature of ${key.name}+${hex8(keyId)} does not verify`);
		verifiedBy.push(key.name);
	}
	if (!verifiedBy.length) throw new NoteError("no signature by a known key");
	return { text, verifiedBy };
}
