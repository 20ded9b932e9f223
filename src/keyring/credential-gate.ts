/**
 * Who may act on a lease (docs/design.md §6.2, §6.3): the keyring checks each
 * request against the credentials its store has enrolled and not revoked.
 * - Every acquire, renew and release carries a signer proof (src/identity/proof.ts). The gate
 *   checks it and names the holder: the node id the proof was made for, never a parameter.
 * - Every acquire also carries the batch's dispatch ticket (src/identity/ticket.ts), signed by
 *   an enrolled batcher: it must name the proven signer's node, be unexpired, and is taken once.
 *
 * Enrolled credentials are read from the store and kept for REFRESH_MS, so a revocation (an
 * operator command writing to the store) takes effect within that time; an unknown name is
 * looked up at once (at most once a second).
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import { DomainError, type ErrorType } from "../errors";
import type { Clock } from "../clock";
import { parseJws, verifyJws, verifyJwsHs256, type ParsedJws } from "../identity/compact-jws";
import { keyringMacKey } from "../identity/request-mac";
import type { CredentialRole } from "../identity/credential";
import { PROOF_MAX_AGE_MS, type ProofAction, type ProofClaims } from "../identity/proof";
import { BatchRefusedError, TICKET_TYPE, type TicketClaims } from "../identity/ticket";
import { EnrolmentReads } from "../identity/enrolment-reads";
import type { EnrolledSigner, KeyringStore } from "./store";

/** Why a lease request was refused: 403, with the reason; the keyring logs it with the caller's node. */
export class SignerRefusedError extends DomainError {
	constructor(
		reason: string,
		type: ErrorType,
		data: Record<string, unknown> = {},
		who = "Only an enrolled signer obtains, renews or releases a lease (npm run signer -- list)",
	) {
		super(type, `Refused: ${reason}. ${who}`, data);
	}
}

/** An operator's key change refused (docs/design.md §5.8): the same checks, a batcher credential's proof. */
const OPERATOR = {
	who: "Only an operator holding an enrolled batcher credential adds, retires or revokes keys (npm run keys)",
	types: {
		SIGNER_PROOF_MISSING: "OPERATOR_PROOF_MISSING",
		SIGNER_PROOF_INVALID: "OPERATOR_PROOF_INVALID",
		SIGNER_NOT_ENROLLED: "BATCHER_NOT_ENROLLED",
		SIGNER_REVOKED: "BATCHER_REVOKED",
	} as Partial<Record<ErrorType, ErrorType>>,
};

export interface ProofContext {
	/** The node the request came from, as the transport says; null for a call inside this process. */
	callerNode: string | null;
	/** acquire: the session key's `x` the proof must name. */
	sessionKey?: string;
	/** keys: the operation the proof must name, as `operatorOp` words it (src/identity/proof.ts). */
	keyOp?: string;
	/** renew, release: the lease the proof must name, and its holder when the keyring knows the lease. */
	leaseId?: string;
	holder?: string | null;
}

export interface ProvenSigner {
	/** The enrolled credential's name. */
	credential: string;
	/** Its public key's `x`: what a lease token binds the holder's store proofs to. */
	x: string;
	/** The node the proof was made for: the lease's holder. */
	node: string;
}

interface Known {
	signer: EnrolledSigner;
	key: KeyObject;
}

export class CredentialGate {
	private known = new Map<string, Known>();
	/** When the enrolments are read again (src/identity/enrolment-reads.ts). */
	private readonly reads: EnrolmentReads;
	/** Proof ids and ticket ids taken, with when they may be forgotten. */
	private readonly seen = new Map<string, number>();

	/**
	 * `clock`: the wall clock proofs are dated by (not a lease clock a test moves by hand).
	 * `authority`: the keyring authority's private key, which checks statements made under a
	 * credential's request MAC key (HS256, src/identity/request-mac.ts); without it only EdDSA.
	 */
	constructor(
		private readonly store: Pick<KeyringStore, "enrolled">,
		private readonly role: CredentialRole,
		private readonly clock: Clock,
		private readonly authority: KeyObject | null = null,
	) {
		this.reads = new EnrolmentReads(
			() => this.load(),
			() => clock.now(),
		);
	}

	/** Whether `parsed` is signed by the enrolled credential: EdDSA with its key, or HS256 under its request MAC key. */
	private verified(parsed: ParsedJws<object>, known: Known): boolean {
		if (parsed.header.alg === "HS256")
			return (
				this.authority !== null &&
				verifyJwsHs256(
					parsed,
					keyringMacKey(this.role, this.authority, known.signer.publicJwk.x!),
				)
			);
		return verifyJws(parsed, known.key);
	}

	/**
	 * Checks a dispatch ticket for an acquire by `holder` (a proven signer's node): signed by an
	 * enrolled batcher, for that node, unexpired, never used before. Returns its claims.
	 */
	async checkTicket(ticket: unknown, holder: string): Promise<TicketClaims> {
		if (ticket === undefined || ticket === null || ticket === "")
			throw new BatchRefusedError(
				"keyring.acquire carries no dispatch ticket",
				"DISPATCH_TICKET_MISSING",
			);
		const parsed = parseJws<TicketClaims>(ticket);
		if (!parsed || parsed.header.typ !== TICKET_TYPE || typeof parsed.header.kid !== "string")
			throw new BatchRefusedError(
				"the dispatch ticket is not one",
				"DISPATCH_TICKET_INVALID",
			);
		const batcher = parsed.header.kid;
		const known = await this.lookup(batcher);
		const invalid = (reason: string, type: ErrorType = "DISPATCH_TICKET_INVALID") =>
			new BatchRefusedError(reason, type, { batcher });
		if (!known) throw invalid(`batcher "${batcher}" is not enrolled`, "BATCHER_NOT_ENROLLED");
		if (known.signer.revokedAt)
			throw invalid(
				`batcher "${batcher}" was revoked at ${known.signer.revokedAt}`,
				"BATCHER_REVOKED",
			);
		if (!this.verified(parsed, known))
			throw invalid(
				`the dispatch ticket's signature does not verify with batcher "${batcher}"'s key`,
			);
		const { claims } = parsed;
		const now = this.clock.now();
		if (claims.node !== holder)
			throw invalid(
				`the dispatch ticket is for node ${String(claims.node)}, the lease was asked for by ${holder}`,
			);
		if (typeof claims.exp !== "number" || claims.exp < now)
			throw invalid(
				`the dispatch ticket expired at ${new Date(Number(claims.exp)).toISOString()}`,
				"DISPATCH_TICKET_EXPIRED",
			);
		if (
			typeof claims.bid !== "string" ||
			!Array.isArray(claims.ids) ||
			!claims.ids.every((id) => typeof id === "string")
		)
			throw invalid("the dispatch ticket lacks its claims");
		this.forgetOld(now);
		const id = `ticket/${batcher}/${claims.bid}`;
		if (this.seen.has(id))
			throw invalid(
				`the dispatch ticket of batch ${claims.bid} was used before (a replay)`,
				"DISPATCH_TICKET_REPLAYED",
			);
		this.seen.set(id, claims.exp);
		return claims;
	}

	/** Checks a proof for `action`; the proven signer, or SignerRefusedError saying why. */
	async check(action: ProofAction, proof: unknown, context: ProofContext): Promise<ProvenSigner> {
		const operator = action === "keys";
		const noun = operator ? "operator proof" : "signer proof";
		const refuse = (reason: string, type: ErrorType, data: Record<string, unknown> = {}) =>
			operator
				? new SignerRefusedError(reason, OPERATOR.types[type] ?? type, data, OPERATOR.who)
				: new SignerRefusedError(reason, type, data);
		if (typeof proof !== "string" || proof.split(".").length !== 3)
			throw refuse(`keyring.${action} carries no ${noun}`, "SIGNER_PROOF_MISSING");
		const parsed = parseJws<ProofClaims>(proof);
		if (!parsed) throw refuse(`the ${noun} is not a JWS`, "SIGNER_PROOF_INVALID");
		const { header, claims } = parsed;
		if ((header.alg !== "EdDSA" && header.alg !== "HS256") || typeof header.kid !== "string")
			throw refuse(
				`the ${noun} is not an EdDSA or HS256 JWS naming its signer`,
				"SIGNER_PROOF_INVALID",
			);
		const known = await this.lookup(header.kid);
		if (!known)
			throw refuse(`${this.role} "${header.kid}" is not enrolled`, "SIGNER_NOT_ENROLLED", {
				signer: header.kid,
			});
		if (known.signer.revokedAt)
			throw refuse(
				`${this.role} "${header.kid}" was revoked at ${known.signer.revokedAt}`,
				"SIGNER_REVOKED",
				{ signer: header.kid },
			);
		if (!this.verified(parsed, known))
			throw refuse(
				`the proof's signature does not verify with ${this.role} "${header.kid}"'s key`,
				"SIGNER_PROOF_INVALID",
				{ signer: header.kid },
			);

		const now = this.clock.now();
		const invalid = (reason: string) =>
			refuse(reason, "SIGNER_PROOF_INVALID", { signer: header.kid });
		if (claims.act !== action)
			throw invalid(`the proof is for keyring.${claims.act}, not keyring.${action}`);
		if (typeof claims.node !== "string" || !claims.node)
			throw invalid("the proof names no node");
		if (context.callerNode !== null && claims.node !== context.callerNode)
			throw invalid(
				`the proof was made for node ${claims.node}, the request came from ${context.callerNode}`,
			);
		if (typeof claims.iat !== "number" || Math.abs(now - claims.iat) > PROOF_MAX_AGE_MS)
			throw invalid(
				`the proof was made at ${new Date(Number(claims.iat)).toISOString()}, not within ${PROOF_MAX_AGE_MS / 1000} s of now`,
			);
		if (action === "acquire" && claims.sk !== context.sessionKey)
			throw invalid("the proof names another session key than the request");
		if (operator && claims.op !== context.keyOp)
			throw invalid(
				`the proof is for ${JSON.stringify(claims.op)}, not ${JSON.stringify(context.keyOp)}`,
			);
		const leaseAction = action === "renew" || action === "release";
		if (leaseAction && claims.lid !== context.leaseId)
			throw invalid("the proof names another lease than the request");
		if (leaseAction && context.holder && context.holder !== claims.node)
			throw invalid(
				`lease ${context.leaseId} is held by ${context.holder}, not ${claims.node}`,
			);
		if (typeof claims.jti !== "string" || claims.jti.length < 8)
			throw invalid("the proof has no id");
		this.forgetOld(now);
		const id = `${header.kid}/${claims.jti}`;
		if (this.seen.has(id)) throw invalid("the proof was used before (a replay)");
		this.seen.set(id, claims.iat + PROOF_MAX_AGE_MS);
		return { credential: header.kid, x: known.signer.publicJwk.x!, node: claims.node };
	}

	/** The enrolled signers, as last read from the store. */
	async list(): Promise<EnrolledSigner[]> {
		await this.reads.read();
		return [...this.known.values()].map((k) => k.signer);
	}

	private lookup(name: string): Promise<Known | undefined> {
		return this.reads.find(() => this.known.get(name));
	}

	private async load(): Promise<void> {
		const signers = await this.store.enrolled(this.role);
		const known = new Map<string, Known>();
		for (const signer of signers) {
			const previous = this.known.get(signer.name);
			const key =
				previous && previous.signer.publicJwk.x === signer.publicJwk.x
					? previous.key
					: createPublicKey({
							key: { kty: "OKP", crv: "Ed25519", x: signer.publicJwk.x },
							format: "jwk",
						} as never);
			known.set(signer.name, { signer, key });
		}
		this.known = known;
	}

	private lastPrune = -Infinity;
	/** Proof ids too old to be accepted again are forgotten (at most once a second). */
	private forgetOld(now: number): void {
		if (now - this.lastPrune < 1_000) return;
		this.lastPrune = now;
		for (const [id, until] of this.seen) if (until < now) this.seen.delete(id);
	}
}
