/**
 * The keyring's keys: loaded from the store and checked against the master key (software keys)
 * or the token (KEY_STORE=pkcs11), or generated when the store has none; their public JWKS; and
 * what a lease hands its holder: a software key opened from rest and sealed to the holder's
 * session for that lease only, or a token key's reference, nothing secret. The master key also
 * seals the authority key lease tokens are signed with, whichever the key store, and a rotation
 * seals all of them again under the next master key (docs/design.md §5.1, §5.8).
 */
import type { JWK } from "jose";
import type { KeyDoc, LeaseDoc, LeaseKey } from "../contract";
import type { KeyStore } from "../config";
import type { AuthorityKey } from "../identity/authority";
import { Token, TokenError, type TokenSettings } from "../pkcs11/token";
import { KeyTransport } from "./key-transport";
import { generateKeys, nextKeyIndex, publicJwkOf, verifySealedKey } from "./keys";
import { generateTokenKeys, verifyTokenKeys } from "./token-keys";
import {
	loadMasterKey,
	loadNextMasterKey,
	masterKeyFileExposure,
	MasterKeyError,
	opensAuthority,
	promoteNextMasterKey,
	sealAuthority,
	sealPrivateKey,
	unsealAuthority,
	unsealPrivateKey,
	type MasterKey,
} from "./master-key";
import type { KeyringStore, ResealedKey } from "./store";

export interface KeyMaterialOptions {
	keys: number;
	masterKey: string | null;
	/** KEYRING_MASTER_KEY_NEXT: the next master key of a rotation, or null (then DATA_DIR/master.key.next). */
	masterKeyNext?: string | null;
	dataDir: string;
	mongoUri: string | null;
	/** KEY_STORE: "software" (sealed under the master key) or "pkcs11" (in the token). */
	keyStore: KeyStore;
	/** The token, with KEY_STORE=pkcs11. */
	token: TokenSettings | null;
}

/** A store's keys were made by one key store: the other cannot use them. */
function checkKeyStore(docs: KeyDoc[], keyStore: KeyStore): void {
	const inToken = docs.filter((doc) => doc.tokenKey).length;
	if (keyStore === "pkcs11" && inToken < docs.length)
		throw new TokenError(
			`KEY_STORE=pkcs11, but the keyring's store holds ${docs.length - inToken} software keys sealed under the master key: a token keyring starts from an empty keyring store (or set KEY_STORE=software)`,
		);
	if (keyStore === "software" && inToken > 0)
		throw new TokenError(
			`the keyring's store holds ${inToken} keys in a PKCS#11 token: set KEY_STORE=pkcs11 with its PKCS11_MODULE, PKCS11_TOKEN_LABEL and PIN`,
		);
}

interface Logger {
	info(...args: unknown[]): void;
	warn(...args: unknown[]): void;
}

/**
 * The master key that opens the store and the authority key: unsealed from the store, or (a
 * store that holds none yet) derived from the master key and sealed there once. When the master
 * key does not open the sealed authority but the next one does, a rotation committed its
 * re-sealing and stopped before its file swap: it is finished here.
 */
async function openAuthority(
	master: MasterKey,
	keyDocs: KeyDoc[],
	options: KeyMaterialOptions,
	store: KeyringStore,
	logger: Logger,
): Promise<{ master: MasterKey; authority: AuthorityKey }> {
	const sealed = await store.sealedAuthority();
	if (sealed === null) {
		// Sealed only under the master key its keys were sealed with: a wrong one stops here.
		for (const doc of keyDocs) if (!doc.tokenKey) await verifySealedKey(doc, master);
		await store.keepSealedAuthority(await sealAuthority(master.derivedAuthority, master));
		const kept = await store.sealedAuthority();
		logger.info(
			`Sealed the keyring's authority key under ${master.source} in its store, once: from now on the master key only seals keys and can be rotated (npm run keys -- rotate-master)`,
		);
		return { master, authority: await unsealAuthority(kept!, master) };
	}
	if (await opensAuthority(sealed, master))
		return { master, authority: await unsealAuthority(sealed, master) };
	const next = await loadNextMasterKey(options);
	if (!next || !(await opensAuthority(sealed, next)))
		throw new MasterKeyError(
			`the master key from ${master.source} does not open the keyring's sealed authority key: it is not the key the store was sealed with${next ? `, nor is ${next.source}` : ""}`,
		);
	promoteNextMasterKey(next);
	logger.warn(
		next.file
			? `Finished a master-key rotation that stopped before its file swap: the store is sealed under the next master key, now ${next.file}`
			: "The store is sealed under KEYRING_MASTER_KEY_NEXT (a finished master-key rotation): set KEYRING_MASTER_KEY to it and remove KEYRING_MASTER_KEY_NEXT",
	);
	return { master: next, authority: await unsealAuthority(sealed, next) };
}

export class KeyMaterial {
	/** Seals leased keys to the signers' sessions; its key lives as long as this process. */
	private readonly transport = new KeyTransport();

	private constructor(
		private master: MasterKey,
		/** The key lease tokens are signed with, kept sealed under the master key. */
		readonly authority: AuthorityKey,
		readonly docs: Map<string, KeyDoc>,
		/** The token keys are made in, with KEY_STORE=pkcs11; null for software keys. */
		private readonly token: TokenSettings | null,
	) {}

	/** Loads (or generates, into an empty store) the keys, and checks the master key opens them. */
	static async load(
		options: KeyMaterialOptions,
		store: KeyringStore,
		logger: Logger,
	): Promise<KeyMaterial> {
		let keyDocs = await store.keys();
		const opened = await openAuthority(
			await loadMasterKey(
				options,
				keyDocs.length === 0 && (await store.sealedAuthority()) === null,
			),
			keyDocs,
			options,
			store,
			logger,
		);
		const master = opened.master;
		if (options.dataDir && !options.masterKey && masterKeyFileExposure(options.dataDir))
			logger.warn(`${master.source} is readable by other users; chmod 600 it`);
		if (options.mongoUri && !options.masterKey)
			logger.warn(
				`Keys in MongoDB are sealed with ${master.source}; set KEYRING_MASTER_KEY so that any keyring node can open them`,
			);
		checkKeyStore(keyDocs, options.keyStore);
		// The keyring needs the token only to make and check its keys: signers sign in it, not the keyring.
		const token = options.keyStore === "pkcs11" ? await Token.open(options.token!) : null;
		try {
			if (keyDocs.length === 0) {
				keyDocs = token
					? generateTokenKeys(token, options.keys)
					: await generateKeys(options.keys, master);
				await store.insertKeys(keyDocs);
				logger.info(
					token
						? `Generated ${keyDocs.length} Ed25519 keys in token "${token.settings.tokenLabel}" (sensitive, not extractable)`
						: `Generated ${keyDocs.length} Ed25519 keys, private keys sealed with ${master.source}`,
				);
			} else {
				if (token) verifyTokenKeys(token, keyDocs);
				else for (const doc of keyDocs) await verifySealedKey(doc, master);
				if (keyDocs.length !== options.keys)
					logger.info(
						`The store holds ${keyDocs.length} keys; KEYS=${options.keys} only applies to an empty keyring`,
					);
			}
		} finally {
			token?.close();
		}
		return new KeyMaterial(
			master,
			opened.authority,
			new Map(keyDocs.map((k) => [k.keyId, k])),
			options.keyStore === "pkcs11" ? options.token : null,
		);
	}

	/**
	 * `count` new keys after the highest key id, made like the others (in the token, or sealed
	 * under the master key); not yet stored (`adopt` once they are).
	 */
	async generate(count: number, now: Date): Promise<KeyDoc[]> {
		const from = nextKeyIndex(this.docs.keys());
		if (!this.token) return generateKeys(count, this.master, now, from);
		const token = await Token.open(this.token);
		try {
			return generateTokenKeys(token, count, now, from);
		} finally {
			token.close();
		}
	}

	/** Keys stored since start-up (added by an operator): leased and published from now on. */
	adopt(docs: KeyDoc[]): void {
		for (const doc of docs) this.docs.set(doc.keyId, doc);
	}

	/** Where the master key in use comes from, for messages. */
	get masterSource(): string {
		return this.master.source;
	}

	/**
	 * The next master key of a rotation, from KEYRING_MASTER_KEY_NEXT or DATA_DIR/master.key.next,
	 * with every sealed key and the authority key sealed again under it: what the store keeps
	 * once `useMaster` takes it. Null when no next key is given.
	 */
	async resealUnder(options: KeyMaterialOptions): Promise<{
		next: MasterKey;
		keys: ResealedKey[];
		authority: string;
	} | null> {
		if (!options.masterKey && !options.dataDir)
			throw new MasterKeyError(
				"the master key is a random one in memory (no KEYRING_MASTER_KEY, DATA_DIR empty): nothing at rest to rotate",
			);
		const next = await loadNextMasterKey(options);
		if (!next) return null;
		const keys: ResealedKey[] = [];
		for (const doc of this.docs.values()) {
			if (!doc.sealedPrivateKey) continue;
			const plaintext = await unsealPrivateKey(doc.sealedPrivateKey, doc.keyId, this.master);
			try {
				const jwk = JSON.parse(new TextDecoder().decode(plaintext)) as JWK;
				keys.push({
					keyId: doc.keyId,
					sealedPrivateKey: await sealPrivateKey(jwk, doc.keyId, next),
				});
				delete jwk.d;
			} finally {
				plaintext.fill(0);
			}
		}
		return { next, keys, authority: await sealAuthority(this.authority, next) };
	}

	/**
	 * The store committed the re-sealing: the next master key is the one in use, and its file
	 * becomes master.key. A swap that fails is finished by the next start (`openAuthority`).
	 */
	useMaster(next: MasterKey, keys: ResealedKey[]): void {
		for (const key of keys) this.docs.get(key.keyId)!.sealedPrivateKey = key.sealedPrivateKey;
		this.master = next;
		promoteNextMasterKey(next);
	}

	/** The keyring's X25519 public key: the signers' other half of the key-transport derivation. */
	get transportKey(): JWK {
		return this.transport.publicJwk;
	}

	get keyIds(): string[] {
		return [...this.docs.keys()];
	}

	jwks(): { keys: JWK[] } {
		return {
			keys: [...this.docs.values()].map((doc) => publicJwkOf(doc.keyId, doc.publicJwk)),
		};
	}

	/**
	 * What the lease hands its holder: a token key's reference (the holder signs in the token),
	 * or the software key opened from rest and sealed to the holder's session, for this lease only.
	 */
	async keyFor(lease: LeaseDoc, sessionKey: JWK): Promise<LeaseKey> {
		const doc = this.docs.get(lease.keyId);
		if (!doc) throw new Error(`no key ${lease.keyId}`);
		if (doc.tokenKey) return { tokenKey: doc.tokenKey };
		const privateJwk = await unsealPrivateKey(doc.sealedPrivateKey, lease.keyId, this.master);
		try {
			return {
				key: this.transport.seal(privateJwk, lease.keyId, lease.leaseId, sessionKey),
				transportKey: this.transport.publicJwk,
			};
		} finally {
			privateJwk.fill(0);
		}
	}
}
