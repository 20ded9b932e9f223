/**
 * Whose close proofs and submit proofs records takes (docs/design.md §6.5, §6.10): any batcher
 * credential the keyring has enrolled and not revoked, so that a batcher whose credential is
 * rotated (§6.1) is believed under the old one and the new one while both are enrolled; and the
 * batcher credential of records' own node (as the batcher finds it, read again when its file
 * changes) unless the keyring revoked it, which is all records knows when the keyring's store is
 * kept in memory. Enrolments are read from the keyring's store (src/keyring/enrolments.ts), never
 * from the bus, at most every REFRESH_MS, and at once (at most once a second) when no known key
 * verifies a proof, so a credential just enrolled is believed at once and a revocation within 5 s.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import type { CredentialSource } from "../identity/credential";

const REFRESH_MS = 5_000;
const MISS_LOOKUP_MS = 1_000;

/** An enrolled credential as records needs it: its public key, and whether it was revoked. */
export interface BatcherEnrolment {
	publicJwk: { x?: string };
	revokedAt: string | null;
}

export class BatcherKeys {
	/** Enrolled public keys by `x`: null for a revoked one. */
	private enrolled = new Map<string, KeyObject | null>();
	private loadedAt = -Infinity;
	private missLookupAt = -Infinity;
	private refreshing: Promise<void> | null = null;

	constructor(
		private readonly own: CredentialSource,
		/** The keyring's enrolled batchers, or null: its store is in memory. */
		private readonly enrolments: (() => Promise<BatcherEnrolment[]>) | null,
		private readonly logger: { warn(line: string): void },
		private readonly now: () => number = Date.now,
	) {}

	/** Whether `verifies` holds for one of the keys records takes batcher proofs from. */
	async verify(verifies: (key: KeyObject) => boolean): Promise<boolean> {
		if (this.now() - this.loadedAt > REFRESH_MS) await this.refresh();
		if (this.keys().some(verifies)) return true;
		// A read under way may bring the key (a batcher just rotated): wait for it rather than refuse beside it.
		if (this.refreshing) {
			await this.refreshing;
			if (this.keys().some(verifies)) return true;
		}
		if (!this.enrolments || this.now() - this.missLookupAt < MISS_LOOKUP_MS) return false;
		this.missLookupAt = this.now();
		await this.refresh();
		return this.keys().some(verifies);
	}

	private keys(): KeyObject[] {
		const keys = [...this.enrolled.values()].filter((key): key is KeyObject => key !== null);
		const own = this.own.current();
		const x = own.publicJwk.x!;
		// Records' own batcher credential, unless the keyring knows it, enrolled (above) or revoked.
		if (!this.enrolled.has(x)) keys.push(createPublicKey(own.privateKey));
		return keys;
	}

	private refresh(): Promise<void> {
		this.refreshing ??= this.load().finally(() => (this.refreshing = null));
		return this.refreshing;
	}

	private async load(): Promise<void> {
		if (!this.enrolments) {
			this.loadedAt = this.now();
			return;
		}
		try {
			const enrolled = new Map<string, KeyObject | null>();
			for (const batcher of await this.enrolments()) {
				const x = batcher.publicJwk.x;
				if (!x) continue;
				const previous = this.enrolled.get(x);
				enrolled.set(
					x,
					batcher.revokedAt
						? null
						: (previous ??
								createPublicKey({
									key: { kty: "OKP", crv: "Ed25519", x },
									format: "jwk",
								} as never)),
				);
			}
			this.enrolled = enrolled;
		} catch (err) {
			this.logger.warn(
				`Could not read the keyring's enrolled batchers (${(err as Error).message}): batcher proofs are checked against those read before`,
			);
		}
		this.loadedAt = this.now();
	}
}
