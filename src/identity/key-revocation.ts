/**
 * A key's revocation, told to records at once (docs/design.md §5.8): the keyring's signed word
 * that key K is revoked since T, a compact JWS (typ `key-revocation`) made with its authority
 * key, which records checks with the key it checks lease tokens with. Unsigned, an event on the
 * bus could be forged to make records refuse every piece of a key; signed, only the keyring
 * revokes. Records then refuses any piece under the key with a signature made after T, so a
 * revoked key's current lease stores nothing more, however long its batch.
 */
import type { AuthorityKey, KeyringTrust } from "./authority";
import { parseJws, signJws, verifyJws } from "./compact-jws";

export const KEY_REVOCATION_TYPE = "key-revocation";

export interface KeyRevocation {
	/** The revoked key. */
	key: string;
	/** Since when (ISO time): a signature made after it is refused. */
	at: string;
	/** The revocation's place in the lease log's sequence. */
	seq: number;
}

export function issueKeyRevocation(authority: AuthorityKey, revocation: KeyRevocation): string {
	return signJws(
		authority.privateKey,
		{ alg: "EdDSA", kid: authority.kid, typ: KEY_REVOCATION_TYPE },
		revocation,
	);
}

/** The revocation `notice` says, when the trusted keyring signed it; null otherwise. */
export function checkKeyRevocation(trust: KeyringTrust, notice: unknown): KeyRevocation | null {
	const parsed = parseJws<KeyRevocation>(notice);
	if (
		!parsed ||
		parsed.header.typ !== KEY_REVOCATION_TYPE ||
		typeof parsed.header.kid !== "string"
	)
		return null;
	const key = trust.key(parsed.header.kid);
	if (!key || !verifyJws(parsed, key)) return null;
	const { claims } = parsed;
	return typeof claims.key === "string" &&
		typeof claims.at === "string" &&
		!Number.isNaN(Date.parse(claims.at)) &&
		typeof claims.seq === "number"
		? { key: claims.key, at: claims.at, seq: claims.seq }
		: null;
}
