/**
 * A leased private key's way from the keyring to one signer (docs/design.md §5.6: a
 * key-encryption key derived once per signer session and keyring, and A256KW per lease).
 *
 * Each signer process makes an X25519 session key pair and sends the public half with its
 * acquires; each keyring process has an X25519 transport key pair. Both sides derive the same
 * key-encryption key once per (signer session, keyring) pair: HKDF-SHA256 over their X25519
 * shared secret. Per lease the keyring seals the private JWK as a compact JWE
 * (`A256KW`, `A256GCM`) under that key, with the key id and the lease id in its protected
 * header (so the sealed key cannot be replayed for another lease): a few microseconds of
 * AES, where an ECDH per lease cost a millisecond and a half. Only that signer opens it,
 * straight into libsodium's guarded memory (`openSecret`, src/signer/lease-secret.ts), from
 * which its signing threads sign the batch.
 */
import crypto, { type KeyObject, type webcrypto } from "node:crypto";
import type { JWK } from "jose";
import type { LeaseGrant, LeaseKey } from "../contract";
import { isOkpPublicKey } from "../identity/credential";
import { randomBytesPooled } from "../random";
import { LeaseSecret } from "../signer/lease-secret";

export const LEASE_KEY_ALG = "A256KW";
export const LEASE_KEY_ENC = "A256GCM";
const KDF_SALT = Buffer.from("record-signer lease key transport v1");
/** RFC 3394's default initial value. */
const KEY_WRAP_IV = Buffer.from("A6A6A6A6A6A6A6A6", "hex");

export interface SessionKey {
	/** X25519 public JWK (`kty`, `crv`, `x`). */
	publicJwk: JWK;
	privateKey: KeyObject;
}

export class InvalidSessionKeyError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "InvalidSessionKeyError";
	}
}

/** An X25519 key pair: a signer's session key or a keyring's transport key. */
export function createSessionKey(): SessionKey {
	const { publicKey, privateKey } = crypto.generateKeyPairSync("x25519");
	const { kty, crv, x } = publicKey.export({ format: "jwk" });
	return { publicJwk: { kty, crv, x }, privateKey };
}

/** Checks the shape of an X25519 public JWK, synchronously; only its public members count. */
export function checkSessionKey(jwk: JWK): void {
	if (!isOkpPublicKey(jwk, "X25519"))
		throw new InvalidSessionKeyError(
			'sessionKey must be an X25519 public JWK ({ kty: "OKP", crv: "X25519", x: <32 bytes base64url> })',
		);
}

function publicKeyOf(jwk: JWK): KeyObject {
	checkSessionKey(jwk);
	try {
		// Only the public members: a stray `d` must not turn it into a private key here.
		return crypto.createPublicKey({
			key: { kty: "OKP", crv: "X25519", x: jwk.x },
			format: "jwk",
		});
	} catch (err) {
		throw new InvalidSessionKeyError(
			`sessionKey is not a usable X25519 public key: ${(err as Error).message}`,
		);
	}
}

/**
 * The key-encryption key of one (signer session, keyring) pair. `info` binds it to both
 * public keys, in a fixed order, so each side derives the same bytes.
 */
function deriveKek(
	ownPrivate: KeyObject,
	peerPublicJwk: JWK,
	signerX: string,
	keyringX: string,
): Buffer {
	const shared = crypto.diffieHellman({
		privateKey: ownPrivate,
		publicKey: publicKeyOf(peerPublicJwk),
	});
	return Buffer.from(
		crypto.hkdfSync(
			"sha256",
			shared,
			KDF_SALT,
			Buffer.from(`signer=${signerX};keyring=${keyringX}`),
			32,
		),
	);
}

/** Keys derived once and kept, a few hundred at most: one per live signer session. */
class KekCache {
	private readonly keks = new Map<string, Buffer>();
	constructor(private readonly limit = 1024) {}

	get(id: string, derive: () => Buffer): Buffer {
		let kek = this.keks.get(id);
		if (!kek) {
			kek = derive();
			if (this.keks.size >= this.limit)
				this.keks.delete(this.keks.keys().next().value as string);
			this.keks.set(id, kek);
		}
		return kek;
	}
}

function b64(bytes: Buffer): string {
	return bytes.toString("base64url");
}

/** Keyring side: seals leased private keys to the sessions of the signers that hold them. */
export class KeyTransport {
	private readonly own = createSessionKey();
	private readonly keks = new KekCache();

	/** This keyring process's X25519 public key; a signer derives its half of the key from it. */
	get publicJwk(): JWK {
		return this.own.publicJwk;
	}

	/** Compact JWE of `privateJwkBytes` for the session `sessionKey`, bound to `keyId` and `leaseId`. */
	seal(privateJwkBytes: Uint8Array, keyId: string, leaseId: string, sessionKey: JWK): string {
		const kek = this.keks.get(String(sessionKey.x), () =>
			deriveKek(
				this.own.privateKey,
				sessionKey,
				String(sessionKey.x),
				String(this.own.publicJwk.x),
			),
		);
		const header = b64(
			Buffer.from(
				JSON.stringify({
					alg: LEASE_KEY_ALG,
					enc: LEASE_KEY_ENC,
					kid: keyId,
					lid: leaseId,
					cty: "jwk+json",
				}),
			),
		);
		const cek = randomBytesPooled(32);
		try {
			const wrap = crypto.createCipheriv("id-aes256-wrap", kek, KEY_WRAP_IV);
			const wrapped = Buffer.concat([wrap.update(cek), wrap.final()]);
			const iv = randomBytesPooled(12);
			const cipher = crypto.createCipheriv("aes-256-gcm", cek, iv);
			cipher.setAAD(Buffer.from(header, "ascii"));
			const ciphertext = Buffer.concat([cipher.update(privateJwkBytes), cipher.final()]);
			return [header, b64(wrapped), b64(iv), b64(ciphertext), b64(cipher.getAuthTag())].join(
				".",
			);
		} finally {
			cek.fill(0);
		}
	}
}

/** What opening a lease's key reads of it. */
type LeaseKeyOf = Pick<LeaseGrant, "keyId" | "leaseId"> & LeaseKey;

/** A lease's sealed key; a token lease has none (docs/design.md §5.9): its holder signs in the token. */
function sealed(lease: LeaseKeyOf): LeaseKeyOf & { key: string; transportKey: JWK } {
	if (lease.key === undefined)
		throw new Error(
			`lease ${lease.leaseId} grants key ${lease.keyId} in a PKCS#11 token, not a sealed key: this signer needs KEY_STORE=pkcs11 and the token`,
		);
	return lease;
}

/** Signer side: opens the keys of its leases, deriving each keyring's key-encryption key once. */
export class LeaseKeyOpener {
	private readonly keks = new KekCache(16);

	constructor(readonly session: SessionKey = createSessionKey()) {}

	/**
	 * Decrypts the lease's sealed key and hands its plaintext (the private JWK's bytes) to
	 * `use`, then wipes every buffer that held it or the content key. Refuses a sealed key bound
	 * to another key id or lease, or one that does not open under this session.
	 */
	private unseal<T>(
		lease: { key: string; keyId: string; leaseId: string; transportKey: JWK },
		use: (plaintext: Buffer) => T,
	): T {
		const kek = this.keks.get(String(lease.transportKey.x), () =>
			deriveKek(
				this.session.privateKey,
				lease.transportKey,
				String(this.session.publicJwk.x),
				String(lease.transportKey.x),
			),
		);
		const [header, wrapped, iv, ciphertext, tag] = lease.key.split(".");
		const fields = JSON.parse(Buffer.from(header ?? "", "base64url").toString("utf8")) as {
			alg?: string;
			enc?: string;
			kid?: string;
			lid?: string;
		};
		if (fields.alg !== LEASE_KEY_ALG || fields.enc !== LEASE_KEY_ENC)
			throw new Error(`the lease key is not an ${LEASE_KEY_ALG}/${LEASE_KEY_ENC} JWE`);
		if (fields.kid !== lease.keyId || fields.lid !== lease.leaseId)
			throw new Error(
				`the lease key is sealed for ${fields.kid} under lease ${fields.lid}, not ${lease.keyId} under ${lease.leaseId}`,
			);
		// Each output buffer is wiped, not only the joined one: update() and final() return their own.
		const parts: Buffer[] = [];
		const kept = (part: Buffer) => {
			parts.push(part);
			return part;
		};
		try {
			const unwrap = crypto.createDecipheriv("id-aes256-wrap", kek, KEY_WRAP_IV);
			const cek = kept(
				Buffer.concat([
					kept(unwrap.update(Buffer.from(wrapped, "base64url"))),
					kept(unwrap.final()),
				]),
			);
			const decipher = crypto.createDecipheriv(
				"aes-256-gcm",
				cek,
				Buffer.from(iv, "base64url"),
			);
			decipher.setAAD(Buffer.from(header, "ascii"));
			decipher.setAuthTag(Buffer.from(tag, "base64url"));
			const plaintext = kept(
				Buffer.concat([
					kept(decipher.update(Buffer.from(ciphertext, "base64url"))),
					kept(decipher.final()),
				]),
			);
			return use(plaintext);
		} finally {
			for (const part of parts) part.fill(0);
		}
	}

	/**
	 * The lease's Ed25519 key in libsodium's guarded memory, for the signing threads
	 * (src/signer/lease-secret.ts): `d` goes from the decrypted bytes into a secure buffer and
	 * nowhere else. The caller disposes it when the batch is signed.
	 */
	async openSecret(lease: LeaseKeyOf): Promise<LeaseSecret> {
		return this.unseal(sealed(lease), (plaintext) =>
			LeaseSecret.fromPrivateJwk(plaintext, lease.keyId),
		);
	}

	/**
	 * The lease's Ed25519 private key as a non-extractable node:crypto/WebCrypto key (for
	 * JOSE libraries; the signer itself signs with `openSecret`'s key).
	 */
	async open(lease: LeaseKeyOf): Promise<webcrypto.CryptoKey> {
		return this.unseal(sealed(lease), (plaintext) => {
			const jwk = JSON.parse(plaintext.toString("utf8")) as JWK;
			if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.d !== "string")
				throw new Error("the lease key is not an Ed25519 private key");
			const key = crypto
				.createPrivateKey({
					key: { kty: "OKP", crv: "Ed25519", x: jwk.x, d: jwk.d },
					format: "jwk",
				})
				.toCryptoKey("Ed25519", false, ["sign"]);
			delete jwk.d;
			return key as webcrypto.CryptoKey;
		});
	}
}
