/**
 * Lease tokens: the keyring's signed word that a lease is current, for which batch, held by
 * which signer. A compact JWS (typ `lease-token`) made with the keyring authority key
 * (authority.ts), binding the lease, its key, its holder node, the holder's credential
 * (`cnf`, RFC 7800's confirmation key), the batch of the dispatch ticket it was granted on
 * with the ids of each piece of it, and the end of the holder's right to the key (its expiry
 * plus the keyring's grace). Each renewal brings a fresh one.
 *
 * A signer stores each piece of signatures with the token and a store proof: its credential's
 * signature over the lease, the batch and a digest of the piece. Records checks both offline,
 * with no round trip: a token read off the bus is useless without the holder's credential.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import { DomainError, type ErrorType } from "../errors";
import type { StoreSignaturesParams } from "../contract";
import type { AuthorityKey, KeyringTrust } from "./authority";
import { idsDigest, signaturesDigest, signaturesDigestV2 } from "./batch-digest";
import { parseJws, signDetached, signJws, verifyDetached, verifyJws } from "./compact-jws";
import type { SignerCredential } from "./credential";

export const LEASE_TOKEN_TYPE = "lease-token";

export interface LeaseTokenClaims {
	lid: string;
	/** The key the lease grants. */
	key: string;
	/** The holder's node. */
	node: string;
	/** The holder's credential: its public key's `x`. */
	cnf: string;
	bid: string;
	/** idChunkDigests of the batch's record ids (from its dispatch ticket). */
	ids: string[];
	iat: number;
	/** Until when (ms) the holder may store under the lease: its expiry plus the keyring's grace. */
	exp: number;
}

export function issueLeaseToken(
	authority: AuthorityKey,
	claims: Omit<LeaseTokenClaims, "iat">,
	now = Date.now(),
): string {
	return signJws(
		authority.privateKey,
		{ alg: "EdDSA", kid: authority.kid, typ: LEASE_TOKEN_TYPE },
		{ ...claims, iat: now },
	);
}

/** The claims of a token this keyring issued (checked with its own key); null when it is not one. */
export function ownLeaseToken(authority: AuthorityKey, token: unknown): LeaseTokenClaims | null {
	const parsed = parseJws<LeaseTokenClaims>(token);
	if (!parsed || parsed.header.typ !== LEASE_TOKEN_TYPE || parsed.header.kid !== authority.kid)
		return null;
	return verifyJws(parsed, authority.privateKey) ? parsed.claims : null;
}

/**
 * What a store proof signs: the lease, the batch and the piece's digest. Version 2 digests the
 * piece by groups (signature-groups.ts), which the signing threads hash; version 1, the whole
 * piece at once, is what signers before it send, and records still takes it.
 */
const storeStatement = (version: 1 | 2, leaseId: string, batchId: string, digest: string) =>
	`record-signer store v${version}\n${leaseId}\n${batchId}\n${digest}`;

/** The holder's proof for one stored piece: its credential's signature over the lease, the batch and the piece. */
export function makeStoreProof(
	credential: SignerCredential,
	piece: Pick<StoreSignaturesParams, "leaseId" | "batchId" | "signatures">,
): string {
	return signDetached(
		credential.privateKey,
		storeStatement(2, piece.leaseId, piece.batchId, signaturesDigestV2(piece.signatures)),
	);
}

/** Whether `proof` is the holder's over this piece: version 2, or version 1 from an older signer. */
function storeProofHolds(
	holderKey: KeyObject,
	params: Pick<StoreSignaturesParams, "leaseId" | "batchId" | "signatures" | "proof">,
): boolean {
	const { leaseId, batchId, signatures, proof } = params;
	return (
		verifyDetached(
			holderKey,
			storeStatement(2, leaseId, batchId, signaturesDigestV2(signatures)),
			proof,
		) ||
		verifyDetached(
			holderKey,
			storeStatement(1, leaseId, batchId, signaturesDigest(signatures)),
			proof,
		)
	);
}

/** Signatures refused because their sender is not the holder of the batch's current lease: 403. */
export class StoreRefusedError extends DomainError {
	constructor(reason: string, type: ErrorType, data: Record<string, unknown> = {}) {
		super(
			type,
			`Refused: ${reason}. Only the holder of a batch's current lease stores its signatures`,
			data,
		);
	}
}

/** Records has no keyring public key to check tokens with yet: 503, retried by the signer's batch. */
export class NoTrustAnchorError extends DomainError {
	constructor(where: string) {
		super(
			"NO_KEYRING_PUBLIC_KEY",
			`Records cannot check lease tokens: no keyring public key found in ${where}. Start the keyring with the same DATA_DIR, or set KEYRING_PUBLIC_KEY`,
		);
	}
}

/** The cost of checking a token is paid once per token, not per piece. */
const CHECKED_MAX = 4_096;

/** Records' side: checks a piece of signatures against its lease token and store proof. */
export class StoreGate {
	private readonly checked = new Map<
		string,
		{ claims: LeaseTokenClaims; holderKey: KeyObject }
	>();
	/** The holders' credentials, by their `x`: a handful of signers, each made into a key once. */
	private readonly holders = new Map<string, KeyObject>();

	constructor(private readonly trust: KeyringTrust) {}

	check(params: StoreSignaturesParams, now = Date.now()): void {
		const token = this.token(params.token);
		const { claims } = token;
		const refuse = (reason: string, type: ErrorType = "LEASE_TOKEN_INVALID") =>
			new StoreRefusedError(reason, type, {
				batchId: params.batchId,
				leaseId: params.leaseId,
			});
		if (
			claims.lid !== params.leaseId ||
			claims.key !== params.keyId ||
			claims.bid !== params.batchId
		)
			throw refuse(
				`the lease token is for lease ${claims.lid} of ${claims.key} on batch ${claims.bid}, not lease ${params.leaseId} of ${params.keyId} on batch ${params.batchId}`,
			);
		if (claims.exp < now)
			throw refuse(
				`lease ${params.leaseId} ended at ${new Date(claims.exp).toISOString()}`,
				"LEASE_TOKEN_EXPIRED",
			);
		if (!claims.ids.includes(idsDigest(params.signatures.map((s) => s.recordId))))
			throw refuse(
				`the signatures are not for a piece of batch ${params.batchId}'s records`,
				"NOT_THE_BATCH_RECORDS",
			);
		if (!storeProofHolds(token.holderKey, params))
			throw refuse(
				`the store proof does not verify with the credential of lease ${params.leaseId}'s holder`,
				"STORE_PROOF_INVALID",
			);
	}

	private token(token: unknown): { claims: LeaseTokenClaims; holderKey: KeyObject } {
		if (typeof token !== "string" || !token)
			throw new StoreRefusedError(
				"records.storeSignatures carries no lease token",
				"LEASE_TOKEN_MISSING",
			);
		const known = this.checked.get(token);
		if (known) return known;
		const parsed = parseJws<LeaseTokenClaims>(token);
		if (
			!parsed ||
			parsed.header.typ !== LEASE_TOKEN_TYPE ||
			typeof parsed.header.kid !== "string"
		)
			throw new StoreRefusedError("the lease token is not one", "LEASE_TOKEN_INVALID");
		const key = this.trust.key(parsed.header.kid);
		if (!key) throw new NoTrustAnchorError(this.trust.describe());
		if (!verifyJws(parsed, key))
			throw new StoreRefusedError(
				"the lease token's signature does not verify with the keyring's public key",
				"LEASE_TOKEN_INVALID",
			);
		const { claims } = parsed;
		if (
			typeof claims.cnf !== "string" ||
			!Array.isArray(claims.ids) ||
			typeof claims.exp !== "number"
		)
			throw new StoreRefusedError("the lease token lacks its claims", "LEASE_TOKEN_INVALID");
		let holderKey = this.holders.get(claims.cnf);
		if (!holderKey)
			this.holders.set(
				claims.cnf,
				(holderKey = createPublicKey({
					key: { kty: "OKP", crv: "Ed25519", x: claims.cnf },
					format: "jwk",
				} as never)),
			);
		const checked = { claims, holderKey };
		if (this.checked.size >= CHECKED_MAX)
			this.checked.delete(this.checked.keys().next().value!);
		this.checked.set(token, checked);
		return checked;
	}
}
