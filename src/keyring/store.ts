/**
 * The keyring's store: `keys` (private keys only sealed) and `leases` (the lease log). One
 * interface, two backends (src/keyring/sqlite-store.ts, src/keyring/mongo-store.ts). The
 * store itself refuses two leases with one `grantSeq` and a second open lease of a key.
 */
import type { KeyDoc, LeaseDoc, LeaseEnd, Page } from "../contract";

/** What a restarted keyring needs from its lease log, in memory per key, not per lease. */
export interface LeaseLogSummary {
	/** Leases not ended. */
	open: LeaseDoc[];
	/** Per key with an ended lease: the seq of its last end (the LRU order of free keys). */
	lastEnd: Map<string, number>;
	/** Leases ever granted, per key. */
	uses: Map<string, number>;
	/** The highest seq in the log. */
	lastSeq: number;
}

export interface KeyringStore {
	/** Every key, by keyId. */
	keys(): Promise<KeyDoc[]>;
	insertKeys(docs: KeyDoc[]): Promise<void>;
	summary(): Promise<LeaseLogSummary>;
	/** A grant; refused (DuplicateLeaseError) when its seq is taken or its key has an open lease. */
	insertLease(lease: LeaseDoc): Promise<void>;
	/** Sets the expiry of an open lease; returns how many matched (0 or 1). */
	renewLease(leaseId: string, expiresAt: string): Promise<number>;
	/** Ends an open lease; returns how many matched (0 or 1). */
	endLease(leaseId: string, end: { end: LeaseEnd; endSeq: number; endedAt: string }): Promise<number>;
	lease(leaseId: string): Promise<LeaseDoc | null>;
	/** A page of `leases`, or of `keys` with their public fields only. */
	page(collection: "keys" | "leases", after: string | undefined, limit: number): Promise<Page>;
	close(): Promise<void>;
}

/** The store refused a lease that would break rule 2 or the log's order. */
export class DuplicateLeaseError extends Error {
	constructor(lease: Pick<LeaseDoc, "leaseId" | "keyId" | "grantSeq">, cause: unknown) {
		super(`the store refused lease ${lease.leaseId} of ${lease.keyId} at seq ${lease.grantSeq}: its seq is taken or ${lease.keyId} has an open lease (${(cause as Error)?.message ?? cause})`);
		this.name = "DuplicateLeaseError";
	}
}

/** Public fields of a key, as anyone may page them. */
export function publicKeyDoc(doc: KeyDoc): Omit<KeyDoc, "sealedPrivateKey"> & { _id: string } {
	return { _id: doc.keyId, keyId: doc.keyId, createdAt: doc.createdAt, publicJwk: doc.publicJwk };
}
