/**
 * Whose close proofs and submit proofs records takes (docs/design.md §6.5, §6.10): any batcher
 * credential the keyring has enrolled and not revoked, so that a batcher whose credential is
 * rotated (§6.1) is believed under the old one and the new one while both are enrolled; and the
 * batcher credential of records' own node (as the batcher finds it, read again when its file
 * changes) unless the keyring revoked it, which is all records knows when the keyring's store is
 * kept in memory. Enrolments are read from the keyring's store (src/keyring/enrolments.ts), never
 * from the bus, at most every REFRESH_MS, and at once (at most once a second) when no known key
 * verifies a proof, so a credential just enrolled is believed at once and a revocation within 5 s
 * (src/identity/enrolment-reads.ts, as the keyring's credential gate reads them).
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import type { CredentialSource } from "../identity/credential";
import { EnrolmentReads } from "../identity/enrolment-reads";

/** An enrolled credential as records needs it: its public key, and whether it was revoked. */
export interface BatcherEnrolment {
	publicJwk: { x?: string };
	revokedAt: string | null;
}

export class BatcherKeys {
	/** Enrolled public keys by `x`: null for a revoked one. */
	private enrolled = new Map<string, KeyObject | null>();
	/** When the enrolments are read again (src/identity/enrolment-reads.ts). */
	private readonly reads: EnrolmentReads;

	constructor(
		private readonly own: CredentialSource,
		/** The keyring's enrolled batchers, or null: its store is in memory. */
		private readonly enrolments: (() => Promise<BatcherEnrolment[]>) | null,
		private readonly logger: { warn(line: string): void },
		now: () => number = Date.now,
	) {
		this.reads = new EnrolmentReads(() => this.load(), now);
	}

	/** Whether `verifies` holds for one of the keys records takes batcher proofs from. */
	async verify(verifies: (key: KeyObject) => boolean): Promise<boolean> {
		return (await this.reads.find(() => this.keys().some(verifies) || undefined)) ?? false;
	}

	private keys(): KeyObject[] {
		const keys = [...this.enrolled.values()].filter((key): key is KeyObject => key !== null);
		const own = this.own.current();
		const x = own.publicJwk.x!;
		// Records' own batcher credential, unless the keyring knows it, enrolled (above) or revoked.
		if (!this.enrolled.has(x)) keys.push(createPublicKey(own.privateKey));
		return keys;
	}

	private async load(): Promise<void> {
		if (!this.enrolments) return;
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
	}
}
