/**
 * Signer proofs: a compact JWS (EdDSA, `kid` = the signer's enrolled name) over what one lease
 * request asks, made with the signer's credential (credential.ts) and checked by the keyring
 * (src/keyring/credential-gate.ts). node:crypto signs and verifies one in tens of microseconds.
 *
 * - `acquire`: the node asking and the X25519 session key the private key is to be sealed to,
 *   so a proof seen on the bus is worth nothing to anyone without that session's private key;
 * - `renew`, `release`: the node and the lease;
 * - `keys`: an operator's key change (docs/design.md §5.8), made with a batcher credential: the
 *   node and the operation.
 * Each carries the time it was made and a random id; the keyring takes each id once, and only
 * within PROOF_MAX_AGE_MS of that time.
 */
import { randomBytesPooled } from "../random";
import { signForKeyring } from "./request-mac";
import type { SignerCredential } from "./credential";

export type ProofAction = "acquire" | "renew" | "release" | "keys";

export interface ProofClaims {
	act: ProofAction;
	/** keys: the operation, as `operatorOp` words it ("add 5", "retire key-007", "revoke key-007", "rotate master-key"). */
	op?: string;
	/** The node id of the signer asking: the lease's holder. */
	node: string;
	/** acquire: the session key's `x`. */
	sk?: string;
	/** renew, release: the lease. */
	lid?: string;
	/** When it was made (ms since the epoch). */
	iat: number;
	/** Random: taken once. */
	jti: string;
}

/** A proof older (or further ahead of the keyring's clock) than this is refused. */
export const PROOF_MAX_AGE_MS = 60_000;

/**
 * Signs `claims` (time and random id added) with the credential: under its request MAC key for
 * the keyring when given (HS256, request-mac.ts), else with its Ed25519 key.
 */
export function makeProof(
	credential: SignerCredential,
	claims: Omit<ProofClaims, "iat" | "jti">,
	now = Date.now(),
	macKey: Uint8Array | null = null,
): string {
	const full = { ...claims, iat: now, jti: randomBytesPooled(12).toString("base64url") };
	return signForKeyring(credential, "signer-proof", full, macKey);
}

/** How an operator proof words a key change: what it is valid for, and for nothing else. */
export function operatorOp(
	op: "add" | "retire" | "revoke" | "rotate",
	subject: string | number,
): string {
	return `${op} ${subject}`;
}
