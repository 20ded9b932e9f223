/**
 * The keyring's keys: loaded from the store and checked against the master key, or generated
 * and sealed under it when the store has none; their public JWKS; and a leased key opened from
 * rest and sealed to its holder's session for that lease only. The master key also gives the
 * authority key lease tokens are signed with.
 */
import type { JWK } from "jose";
import type { KeyDoc, LeaseDoc } from "../contract";
import type { AuthorityKey } from "../identity/authority";
import { KeyTransport } from "./key-transport";
import { generateKeys, nextKeyIndex, publicJwkOf, verifySealedKey } from "./keys";
import {
	loadMasterKey,
	masterKeyFileExposure,
	unsealPrivateKey,
	type MasterKey,
} from "./master-key";
import type { KeyringStore } from "./store";

export interface KeyMaterialOptions {
	keys: number;
	masterKey: string | null;
	dataDir: string;
	mongoUri: string | null;
}

export class KeyMaterial {
	/** Seals leased keys to the signers' sessions; its key lives as long as this process. */
	private readonly transport = new KeyTransport();

	private constructor(
		private readonly master: MasterKey,
		readonly docs: Map<string, KeyDoc>,
	) {}

	/** Loads (or generates, into an empty store) the keys, and checks the master key opens them. */
	static async load(
		options: KeyMaterialOptions,
		store: KeyringStore,
		logger: { info(...args: unknown[]): void; warn(...args: unknown[]): void },
	): Promise<KeyMaterial> {
		let keyDocs = await store.keys();
		const master = await loadMasterKey(options, keyDocs.length === 0);
		if (options.dataDir && !options.masterKey && masterKeyFileExposure(options.dataDir))
			logger.warn(`${master.source} is readable by other users; chmod 600 it`);
		if (options.mongoUri && !options.masterKey)
			logger.warn(
				`Keys in MongoDB are sealed with ${master.source}; set KEYRING_MASTER_KEY so that any keyring node can open them`,
			);
		if (keyDocs.length === 0) {
			keyDocs = await generateKeys(options.keys, master);
			await store.insertKeys(keyDocs);
			logger.info(
				`Generated ${keyDocs.length} Ed25519 keys, private keys sealed with ${master.source}`,
			);
		} else {
			for (const doc of keyDocs) await verifySealedKey(doc, master);
			if (keyDocs.length !== options.keys)
				logger.info(
					`The store holds ${keyDocs.length} keys; KEYS=${options.keys} only applies to an empty keyring`,
				);
		}
		return new KeyMaterial(master, new Map(keyDocs.map((k) => [k.keyId, k])));
	}

	/** `count` new keys after the highest key id, sealed like the others; not yet stored (`adopt` once they are). */
	generate(count: number, now: Date): Promise<KeyDoc[]> {
		return generateKeys(count, this.master, now, nextKeyIndex(this.docs.keys()));
	}

	/** Keys stored since start-up (added by an operator): leased and published from now on. */
	adopt(docs: KeyDoc[]): void {
		for (const doc of docs) this.docs.set(doc.keyId, doc);
	}

	/** The key lease tokens are signed with, derived from the master key. */
	get authority(): AuthorityKey {
		return this.master.authority;
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

	/** The leased private key, opened from rest and sealed to the holder's session, for this lease only. */
	async sealFor(lease: LeaseDoc, sessionKey: JWK): Promise<string> {
		const doc = this.docs.get(lease.keyId);
		if (!doc) throw new Error(`no key ${lease.keyId}`);
		const privateJwk = await unsealPrivateKey(doc.sealedPrivateKey, lease.keyId, this.master);
		try {
			return this.transport.seal(privateJwk, lease.keyId, lease.leaseId, sessionKey);
		} finally {
			privateJwk.fill(0);
		}
	}
}
