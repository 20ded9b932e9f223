/**
 * The keyring's store: `keys` (private keys only sealed) and `leases` (the lease log). One
 * interface, two backends (src/keyring/sqlite-store.ts, src/keyring/mongo-store.ts). The
 * store itself refuses two leases with one `grantSeq` and a second open lease of a key.
 */
import type { JWK } from "jose";
import {
	KEY_LIFECYCLE_NONE,
	type KeyDoc,
	type KeyEvent,
	type KeyLifecycle,
	type LeaseDoc,
	type LeaseEnd,
	type Page,
} from "../contract";
import type { CredentialRole } from "../identity/credential";
import type { TransparencyLog } from "../tlog/log";

/** A signer or batcher credential the keyring knows: its public key under its enrolment name. */
export interface EnrolledSigner {
	name: string;
	publicJwk: JWK;
	enrolledAt: string;
	revokedAt: string | null;
}

/** A key the keyring revoked (docs/design.md §5.8), and since when (ISO time). */
export interface RevokedKey {
	key: string;
	at: string;
}

/** How an enrolment went: new, the same key already enrolled under the name, or the name taken by another key. */
export type Enrolment = "enrolled" | "already" | "name-taken";

/** What a restarted keyring needs from its lease log, in memory per key, not per lease. */
export interface LeaseLogSummary {
	/** Leases not ended. */
	open: LeaseDoc[];
	/** Per key with an ended lease: the seq of its last end (the LRU order of free keys). */
	lastEnd: Map<string, number>;
	/** Leases ever granted, per key. */
	uses: Map<string, number>;
	/** The highest seq in the log (key events included). */
	lastSeq: number;
}

/** Who holds the keyring role in a store, until when, under which fencing number. */
export interface RoleHolder {
	epoch: number;
	/** The holder's node id. */
	holder: string;
	host: string;
	pid: number;
	since: string;
	expiresAt: string;
}

export interface RoleClaim {
	holder: string;
	host: string;
	pid: number;
	now: string;
	expiresAt: string;
	/** Whether the current holder may be displaced (its claim expired, or its process is gone). */
	mayTakeOver(current: RoleHolder): boolean;
}

export interface KeyringStore {
	/** Every lease grant and end, appended in the transaction that writes it (docs/design.md §8.4). */
	readonly leaseLog: TransparencyLog;
	/**
	 * Takes the keyring role with the next epoch when nobody holds it or `mayTakeOver` says so,
	 * atomically; otherwise says who holds it.
	 */
	claimRole(claim: RoleClaim): Promise<{ claimed: RoleHolder } | { heldBy: RoleHolder }>;
	/** Extends the role while `epoch` still holds it; false once another keyring took it. */
	renewRole(epoch: number, expiresAt: string): Promise<boolean>;
	/** Gives the role up (it expires at once) if `epoch` still holds it. */
	releaseRole(epoch: number, now: string): Promise<void>;
	/** Every key, by keyId. */
	keys(): Promise<KeyDoc[]>;
	insertKeys(docs: KeyDoc[]): Promise<void>;
	/** Every key event (§5.8), from the keys' lifecycle fields, in seq order. */
	keyEvents(): Promise<KeyEvent[]>;
	/**
	 * Key events: the `added` keys are inserted as they are (their `addedSeq` set, the seq of
	 * their `added` event), a `retired` or `revoked` event sets its key's fields; written only
	 * while `epoch` holds the role (else FencedError), refused when a key id is taken.
	 */
	writeKeyEvents(events: KeyEvent[], added: KeyDoc[], epoch: number): Promise<void>;
	summary(): Promise<LeaseLogSummary>;
	/** The keyring's authority key sealed under the master key (§5.1), or null: a store an earlier version wrote, or a new one. */
	sealedAuthority(): Promise<string | null>;
	/** Keeps the sealed authority key, unless the store holds one already (then it changes nothing). */
	keepSealedAuthority(sealed: string): Promise<void>;
	/**
	 * A master key's rotation (§5.8): every sealed key and the authority key, sealed again under
	 * the next master key, in one transaction, written only while `epoch` holds the role (else
	 * FencedError). Like a lease write it may be applied before it is committed (`durable()`).
	 */
	reseal(keys: ResealedKey[], sealedAuthority: string, epoch: number): Promise<void>;
	/**
	 * A grant, written only while `epoch` holds the role (else FencedError); refused
	 * (DuplicateLeaseError) when its seq is taken or its key has an open lease.
	 */
	insertLease(lease: LeaseDoc, epoch: number): Promise<void>;
	/** Sets the expiry of an open lease while `epoch` holds the role; returns how many matched (0 or 1). */
	renewLease(leaseId: string, expiresAt: string, epoch: number): Promise<number>;
	/**
	 * Ends an open lease while `epoch` holds the role; a reclaim (`expiredBy`) only if its stored
	 * expiry, renewals included, is at or before that time. Returns how many matched (0 or 1).
	 */
	endLease(leaseId: string, end: LeaseEnding, epoch: number): Promise<number>;
	/**
	 * Resolves once every lease write applied so far is committed, and rejects when their
	 * commit failed: the keyring tells nobody of a grant, renewal or end before (§5.4). A write
	 * may be applied (later reads see it) before it is committed, its commit shared with the
	 * other writes of the moment (the SQLite store's group commit).
	 */
	durable(): Promise<void>;
	lease(leaseId: string): Promise<LeaseDoc | null>;
	/** Every credential of `role` ever enrolled (revoked ones included), by name. */
	enrolled(role: CredentialRole): Promise<EnrolledSigner[]>;
	/** Enrols a credential of `role` under its name, unless the name is taken (a revoked name stays taken). */
	enrol(role: CredentialRole, credential: EnrolledSigner): Promise<Enrolment>;
	/** Revokes the credential of `role` named `name`; false when there is none, or it was revoked already. */
	revoke(role: CredentialRole, name: string, at: string): Promise<boolean>;
	/** A page of `leases`, or of `keys` with their public fields only (their lifecycle fields included). */
	page(collection: "keys" | "leases", after: string | undefined, limit: number): Promise<Page>;
	/** Resolves when the store answers (readiness). */
	ping(): Promise<void>;
	close(): Promise<void>;
}

/** A key's private half, sealed again under the next master key. */
export interface ResealedKey {
	keyId: string;
	sealedPrivateKey: string;
}

export interface LeaseEnding {
	end: LeaseEnd;
	endSeq: number;
	endedAt: string;
	/** For a reclaim: the latest stored expiry that may be ended. */
	expiredBy?: string;
}

/** Another keyring took the role: this one's writes are refused by the store. */
export class FencedError extends Error {
	constructor(readonly epoch: number) {
		super(
			`the store refused the write: this keyring's claim (epoch ${epoch}) is no longer the current one; another keyring holds the role`,
		);
		this.name = "FencedError";
	}
}

/** The store refused a lease that would break rule 2 or the log's order. */
export class DuplicateLeaseError extends Error {
	constructor(lease: Pick<LeaseDoc, "leaseId" | "keyId" | "grantSeq">, cause: unknown) {
		super(
			`the store refused lease ${lease.leaseId} of ${lease.keyId} at seq ${lease.grantSeq}: its seq is taken or ${lease.keyId} has an open lease (${(cause as Error)?.message ?? cause})`,
		);
		this.name = "DuplicateLeaseError";
	}
}

/**
 * What enrolling `credential` answers once its insert was tried: `enrolled` when it went in;
 * otherwise `already` when the name holds the same key, unrevoked, and `name-taken` when not.
 */
export async function enrolment(
	store: Pick<KeyringStore, "enrolled">,
	role: CredentialRole,
	credential: EnrolledSigner,
	inserted: boolean,
): Promise<Enrolment> {
	if (inserted) return "enrolled";
	const existing = (await store.enrolled(role)).find((s) => s.name === credential.name)!;
	return existing.publicJwk.x === credential.publicJwk.x && !existing.revokedAt
		? "already"
		: "name-taken";
}

/** Public fields of a key, as anyone may page them. */
export function publicKeyDoc(doc: KeyDoc): Omit<KeyDoc, "sealedPrivateKey"> & { _id: string } {
	return {
		_id: doc.keyId,
		keyId: doc.keyId,
		createdAt: doc.createdAt,
		publicJwk: doc.publicJwk,
		...lifecycleOf(doc),
	};
}

/** A key's lifecycle fields, each null when absent (a store or export from before them). */
export function lifecycleOf(doc: Partial<KeyDoc>): KeyLifecycle {
	const out: Record<string, unknown> = {};
	for (const field of Object.keys(KEY_LIFECYCLE_NONE))
		out[field] = doc[field as keyof KeyDoc] ?? null;
	return out as KeyLifecycle;
}

/** Applies a `retired` or `revoked` event to a key's lifecycle fields (what both stores write). */
export function endedFields(event: KeyEvent): Partial<KeyDoc> {
	return event.event === "revoked"
		? { revokedSeq: event.seq, revokedAt: event.at, revokedReason: event.reason }
		: { retiredSeq: event.seq, retiredAt: event.at, retiredBy: event.reason };
}
