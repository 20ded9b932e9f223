/**
 * A lease's Ed25519 secret key in libsodium's guarded memory, on the signer's main thread.
 *
 * The key's life (one lease, one batch):
 *
 * 1. The keyring seals the private JWK to this signer's session (src/keyring/key-transport.ts).
 *    `LeaseKeyOpener.openSecret` decrypts it; the JWK's `d` is read straight from the decrypted
 *    bytes into a `sodium_malloc` seed (never a JavaScript string), expanded there into the
 *    64-byte libsodium secret key (seed + public key) with `crypto_sign_seed_keypair`, checked
 *    against the JWK's `x` (once per key pair: `CheckedPairs`, below), and the seed and the
 *    decrypted bytes are wiped. From then on the
 *    key is `sodium_mprotect_noaccess` except for the moment it is read.
 * 2. Signing threads cannot share it: guarded memory belongs to the thread that allocated it and
 *    cannot be transferred. Each chunk of the batch carries a one-shot hand-off
 *    (`handOff()`): a 64-byte SharedArrayBuffer the key is copied into. The thread that runs
 *    the chunk copies it into its own guarded slot, wipes the hand-off at once, signs with the
 *    slot read-only, and wipes the slot before the chunk returns (src/signer/sign.worker.ts).
 *    The pool wipes every hand-off again once all chunks have settled (a chunk that never ran).
 * 3. The signer service disposes the key as soon as the batch is signed, before the
 *    signatures are stored and the lease released: `sodium_memzero`, and the guarded slot goes
 *    back, inaccessible, to the slots kept for the next lease (`GuardedSlots`, below). A key
 *    nobody disposed is still zeroed by libsodium when the garbage collector frees it.
 *
 * Why not open the sealed form in each thread? Opening needs the session's key-encryption key,
 * which opens every lease's key this keyring seals to the session for the process's life:
 * copying it into every thread would spread a longer-lived, stronger secret to open a
 * shorter-lived one. Why not keep a copy in each thread for the whole lease? Then every thread
 * that ever saw the key must be told the lease ended, and piscina hands tasks to whichever
 * thread is free: it has no way to reach every thread, and a thread that is busy, or dies,
 * would keep its copy. A copy that lives one chunk (milliseconds, inside the lease's deadline)
 * is wiped by the thread itself, in a `finally`, with nobody to tell; it costs a 64-byte copy
 * and four mprotect calls per chunk of up to 512 signatures.
 */
import { inspect } from "node:util";
import {
	PUBLIC_KEY_BYTES,
	SECRET_KEY_BYTES,
	SEED_BYTES,
	requireSodium,
	type SecureBuffer,
	type Sodium,
} from "../sodium";

/**
 * The key pairs this process has expanded and checked, so that a key leased again skips the
 * scalar multiplication of `crypto_sign_seed_keypair` (about 50 µs of the signer's thread per
 * lease): each seed is known by a keyed BLAKE2b of it under a random key of this process's own,
 * which says nothing of the seed, and maps to the public key its expansion gave. A lease key
 * whose `x` is not that public key is expanded and checked as a new one. At most
 * CHECKED_PAIRS_LIMIT pairs are kept (a keyring holds a hundred keys); past that, the memo
 * starts again.
 */
const CHECKED_PAIRS_LIMIT = 10_000;

class CheckedPairs {
	private readonly publicKeys = new Map<string, Buffer>();
	private key: Buffer | null = null;

	/** The public key this seed was checked against before, if any, and how to remember it. */
	of(
		sodium: Sodium,
		seed: SecureBuffer,
	): { publicKey: Buffer | undefined; remember(publicKey: Buffer): void } {
		if (!this.key) {
			this.key = Buffer.alloc(sodium.crypto_generichash_KEYBYTES);
			sodium.randombytes_buf(this.key);
		}
		const tag = Buffer.alloc(16);
		sodium.crypto_generichash(tag, seed, this.key);
		const id = tag.toString("latin1");
		return {
			publicKey: this.publicKeys.get(id),
			remember: (publicKey) => {
				if (this.publicKeys.size >= CHECKED_PAIRS_LIMIT) this.publicKeys.clear();
				this.publicKeys.set(id, Buffer.from(publicKey));
			},
		};
	}
}

const checkedPairs = new CheckedPairs();

export class LeaseKeyFormatError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "LeaseKeyFormatError";
	}
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isSpace(byte: number): boolean {
	return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;
}

/** The end (exclusive, at the closing quote) of the JSON string whose opening quote is at `at`. */
function stringEnd(bytes: Uint8Array, at: number): number {
	for (let i = at + 1; i < bytes.length; i++) {
		if (bytes[i] === BACKSLASH) i++;
		else if (bytes[i] === QUOTE) return i;
	}
	throw new LeaseKeyFormatError("the lease key is not a JSON object (unterminated string)");
}

/** The end of the JSON value at `at` (not a string): a number, a literal, or a nested object or array. */
function valueEnd(bytes: Uint8Array, at: number): number {
	let depth = 0;
	for (let i = at; i < bytes.length; i++) {
		const byte = bytes[i];
		if (byte === QUOTE) i = stringEnd(bytes, i);
		else if (byte === 0x7b || byte === 0x5b) depth++;
		else if (byte === 0x7d || byte === 0x5d) {
			if (depth === 0) return i;
			if (--depth === 0) return i + 1;
		} else if (byte === 0x2c && depth === 0) return i;
	}
	throw new LeaseKeyFormatError("the lease key is not a JSON object (unterminated value)");
}

/**
 * Where the value of the top-level string member `"d"` of a JSON object lies in `bytes`
 * (between its quotes), found without turning any of it into a string.
 */
function privateMember(bytes: Uint8Array): { start: number; end: number } {
	const skip = (i: number) => {
		while (i < bytes.length && isSpace(bytes[i])) i++;
		return i;
	};
	let i = skip(0);
	if (bytes[i] !== 0x7b) throw new LeaseKeyFormatError("the lease key is not a JSON object");
	let found: { start: number; end: number } | null = null;
	i = skip(i + 1);
	if (bytes[i] === 0x7d) throw new LeaseKeyFormatError("the lease key is an empty JSON object");
	for (;;) {
		if (bytes[i] !== QUOTE)
			throw new LeaseKeyFormatError(
				"the lease key is not a JSON object (a member name is not a string)",
			);
		const nameEnd = stringEnd(bytes, i);
		const isD = nameEnd === i + 2 && bytes[i + 1] === 0x64;
		i = skip(nameEnd + 1);
		if (bytes[i] !== 0x3a)
			throw new LeaseKeyFormatError(
				"the lease key is not a JSON object (no colon after a member name)",
			);
		i = skip(i + 1);
		if (bytes[i] === QUOTE) {
			const end = stringEnd(bytes, i);
			if (isD) {
				if (found) throw new LeaseKeyFormatError('the lease key has two "d" members');
				found = { start: i + 1, end };
			}
			i = end + 1;
		} else {
			if (isD) throw new LeaseKeyFormatError('the lease key\'s "d" is not a string');
			i = valueEnd(bytes, i);
		}
		i = skip(i);
		if (bytes[i] === 0x2c) i = skip(i + 1);
		else if (bytes[i] === 0x7d) break;
		else
			throw new LeaseKeyFormatError(
				"the lease key is not a JSON object (no comma or closing brace after a member)",
			);
	}
	if (!found)
		throw new LeaseKeyFormatError('the lease key is not an Ed25519 private key (no "d")');
	return found;
}

/** The 6 bits of one base64url character, or -1. */
function sextet(byte: number): number {
	if (byte >= 0x41 && byte <= 0x5a) return byte - 0x41;
	if (byte >= 0x61 && byte <= 0x7a) return byte - 0x61 + 26;
	if (byte >= 0x30 && byte <= 0x39) return byte - 0x30 + 52;
	if (byte === 0x2d) return 62;
	if (byte === 0x5f) return 63;
	return -1;
}

/** Decodes the unpadded base64url of 32 bytes (43 characters) at `bytes[start, end)` into `out`, byte by byte. */
function decodeSeed(bytes: Uint8Array, start: number, end: number, out: Uint8Array): void {
	if (end - start !== 43)
		throw new LeaseKeyFormatError(
			`the lease key's "d" is not 32 bytes of base64url (${end - start} characters)`,
		);
	let bits = 0;
	let held = 0;
	let at = 0;
	for (let i = start; i < end; i++) {
		const value = sextet(bytes[i]);
		if (value < 0) throw new LeaseKeyFormatError('the lease key\'s "d" is not base64url');
		bits = ((bits << 6) | value) & 0xfff;
		held += 6;
		if (held >= 8) {
			held -= 8;
			out[at++] = (bits >> held) & 0xff;
		}
	}
	// 43 characters are 258 bits: the last 2 must be zero in a canonical encoding.
	if ((bits & ((1 << held) - 1)) !== 0)
		throw new LeaseKeyFormatError('the lease key\'s "d" is not canonical base64url');
	bits = 0;
}

/**
 * Guarded buffers of one size, kept for the next lease rather than freed. `sodium_malloc` and
 * `sodium_free` map and unmap guard pages around each buffer: several system calls, and each
 * unmap makes the cores running the signing threads drop their address translations. Two of
 * each per lease (the seed and the secret key) took about 160 µs of the main thread per lease
 * in a run's profile, more than the lease's own signing statements. A slot handed back is
 * zeroed and made inaccessible before it waits; past `SPARE_SLOTS` waiting, it is freed.
 */
class GuardedSlots {
	readonly #spare: SecureBuffer[] = [];

	constructor(
		private readonly sodium: Sodium,
		private readonly bytes: number,
	) {}

	/** A zeroed, writable slot. */
	take(): SecureBuffer {
		const slot = this.#spare.pop();
		if (!slot) return this.sodium.sodium_malloc(this.bytes);
		this.sodium.sodium_mprotect_readwrite(slot);
		return slot;
	}

	/**
	 * Zeroes `slot` and keeps it inaccessible for the next `take` (or frees it). `writable`: the
	 * caller has not protected it since `take`, so it needs no change of protection to be zeroed.
	 */
	give(slot: SecureBuffer, writable = false): void {
		if (!writable) this.sodium.sodium_mprotect_readwrite(slot);
		this.sodium.sodium_memzero(slot);
		if (this.#spare.length >= SPARE_SLOTS) {
			this.sodium.sodium_free(slot);
			return;
		}
		this.sodium.sodium_mprotect_noaccess(slot);
		this.#spare.push(slot);
	}
}

/** Slots kept per size: more than the leases a signer holds at once (SIGNER_CONCURRENCY). */
const SPARE_SLOTS = 32;

const slotsBySodium = new WeakMap<Sodium, { seeds: GuardedSlots; secretKeys: GuardedSlots }>();

function guardedSlots(sodium: Sodium) {
	let slots = slotsBySodium.get(sodium);
	if (!slots)
		slotsBySodium.set(
			sodium,
			(slots = {
				seeds: new GuardedSlots(sodium, SEED_BYTES),
				secretKeys: new GuardedSlots(sodium, SECRET_KEY_BYTES),
			}),
		);
	return slots;
}

/** Wipes a hand-off made by `LeaseSecret.handOff` (the signing thread wipes it too, once it has copied it). */
export function wipeHandOff(handOff: SharedArrayBuffer, sodium: Sodium = requireSodium()): void {
	sodium.sodium_memzero(Buffer.from(handOff));
}

export class LeaseSecret {
	/** seed + public key, `sodium_mprotect_noaccess` but while `use` reads it; null once disposed. */
	#secretKey: SecureBuffer | null;
	readonly #sodium: Sodium;
	/** The key id it signs for, and its raw public key (not secret). */
	readonly keyId: string;
	readonly publicKey: Buffer;

	private constructor(sodium: Sodium, keyId: string, secretKey: SecureBuffer, publicKey: Buffer) {
		this.#sodium = sodium;
		this.keyId = keyId;
		this.#secretKey = secretKey;
		this.publicKey = publicKey;
		sodium.sodium_mprotect_noaccess(secretKey);
	}

	/**
	 * From the bytes of a private Ed25519 JWK (the lease key the keyring sealed). `d` goes from
	 * `jwkBytes` into guarded memory only; `jwkBytes` is left with `d` overwritten, and the
	 * caller wipes it. Refuses anything but an Ed25519 key whose `x` matches its `d`.
	 */
	static fromPrivateJwk(
		jwkBytes: Uint8Array,
		keyId: string,
		sodium: Sodium = requireSodium(),
	): LeaseSecret {
		const { start, end } = privateMember(jwkBytes);
		const slots = guardedSlots(sodium);
		const seed = slots.seeds.take();
		let secretKey: SecureBuffer | null = null;
		try {
			decodeSeed(jwkBytes, start, end, seed);
			// `d` is in guarded memory now: blank it, so the rest of the JWK can be read as JSON.
			jwkBytes.fill(0x41, start, end);
			const jwk = JSON.parse(
				Buffer.from(jwkBytes.buffer, jwkBytes.byteOffset, jwkBytes.byteLength).toString(
					"utf8",
				),
			) as { kty?: unknown; crv?: unknown; x?: unknown };
			if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string")
				throw new LeaseKeyFormatError("the lease key is not an Ed25519 private key");
			const expected = Buffer.from(jwk.x, "base64url");
			secretKey = slots.secretKeys.take();
			const publicKey = Buffer.alloc(PUBLIC_KEY_BYTES);
			const checked = checkedPairs.of(sodium, seed);
			if (expected.length === PUBLIC_KEY_BYTES && checked.publicKey?.equals(expected)) {
				// This very seed was expanded and checked against this public key before.
				secretKey.set(seed, 0);
				secretKey.set(expected, SEED_BYTES);
				expected.copy(publicKey);
			} else {
				sodium.crypto_sign_seed_keypair(publicKey, secretKey, seed);
				if (expected.length !== PUBLIC_KEY_BYTES || !publicKey.equals(expected))
					throw new LeaseKeyFormatError(
						`the lease key of ${keyId} is not one key pair: its "x" is not the public key of its "d"`,
					);
				checked.remember(publicKey);
			}
			const secret = new LeaseSecret(sodium, keyId, secretKey, publicKey);
			secretKey = null;
			return secret;
		} finally {
			// Both taken writable and never protected here (the LeaseSecret protects its own).
			slots.seeds.give(seed, true);
			if (secretKey) slots.secretKeys.give(secretKey, true);
		}
	}

	/** A fresh random key, straight into guarded memory (the benchmark's floor, tests). */
	static generate(keyId: string, sodium: Sodium = requireSodium()): LeaseSecret {
		const secretKey = guardedSlots(sodium).secretKeys.take();
		const publicKey = Buffer.alloc(PUBLIC_KEY_BYTES);
		sodium.crypto_sign_keypair(publicKey, secretKey);
		return new LeaseSecret(sodium, keyId, secretKey, publicKey);
	}

	get disposed(): boolean {
		return this.#secretKey === null;
	}

	/** Runs `read` with the key readable (read-only), and makes it inaccessible again. `read` must not keep it. */
	use<T>(read: (secretKey: SecureBuffer) => T): T {
		const secretKey = this.#secretKey;
		if (!secretKey)
			throw new Error(`the key of ${this.keyId} was wiped: its lease's batch is over`);
		this.#sodium.sodium_mprotect_readonly(secretKey);
		try {
			return read(secretKey);
		} finally {
			this.#sodium.sodium_mprotect_noaccess(secretKey);
		}
	}

	/**
	 * A one-shot copy for one signing thread's task (see the top of this file): a fresh
	 * SharedArrayBuffer, since guarded memory cannot cross threads. The thread wipes it once
	 * copied; whoever made it wipes it again with `wipeHandOff` when the task has settled.
	 */
	handOff(): SharedArrayBuffer {
		return this.handOffs(1)[0];
	}

	/**
	 * `count` hand-offs, one per chunk of a batch, copied in one readable window of the key: a
	 * change of a page's protection costs the signer's event loop about 20 µs with the signing
	 * threads running, so one pair of them per batch, not one per chunk.
	 */
	handOffs(count: number): SharedArrayBuffer[] {
		const shared = Array.from({ length: count }, () => new SharedArrayBuffer(SECRET_KEY_BYTES));
		this.use((secretKey) => {
			for (const handOff of shared) new Uint8Array(handOff).set(secretKey);
		});
		return shared;
	}

	/** Zeroes the key and hands its slot back (inaccessible until the next lease's key); later uses throw. Idempotent. */
	dispose(): void {
		const secretKey = this.#secretKey;
		if (!secretKey) return;
		this.#secretKey = null;
		guardedSlots(this.#sodium).secretKeys.give(secretKey);
	}

	/** Never the key: printing or serialising must not read (and crash on) inaccessible memory. */
	toJSON(): { keyId: string; disposed: boolean } {
		return { keyId: this.keyId, disposed: this.disposed };
	}

	[inspect.custom](): string {
		return `LeaseSecret { keyId: ${JSON.stringify(this.keyId)}, ${this.disposed ? "wiped" : "in guarded memory"} }`;
	}
}
