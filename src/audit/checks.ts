/**
 * What the audit's threads share: the rule names, a bounded list of findings, and the checks
 * of one signature (its JWS, its verification, its place in its lease). Erasable TypeScript
 * with `.ts` imports only, so a worker thread loads it straight from the sources under jest.
 */
import { createPublicKey, type KeyObject } from "node:crypto";

export const RULES = [
	"one-signature-per-record",
	"signature-verifies",
	"one-key-per-batch",
	"no-key-overlap",
	"lru-order",
	"batch-size",
	"signature-log",
	"lease-log",
] as const;
export type RuleName = (typeof RULES)[number];

export interface Violation {
	rule: RuleName;
	message: string;
	ids?: Record<string, string>;
}

/** Findings as they cross threads: a count and the first listed violations per rule, in RULES order. */
export interface FindingsData {
	counts: number[];
	listed: Violation[][];
}

/** Counts every violation per rule and keeps the first `maxListed` of each: a broken store must not fill memory. */
export class FindingList {
	readonly maxListed: number;
	readonly counts: number[] = RULES.map(() => 0);
	readonly listed: Violation[][] = RULES.map(() => []);

	constructor(maxListed: number) {
		this.maxListed = maxListed;
	}

	add(rule: RuleName, message: string, ids?: Record<string, string>): void {
		const at = RULES.indexOf(rule);
		this.counts[at]++;
		if (this.listed[at].length < this.maxListed)
			this.listed[at].push(ids ? { rule, message, ids } : { rule, message });
	}

	/** Appends findings made after these (a later range, a later pass). */
	append(data: FindingsData): void {
		for (let at = 0; at < RULES.length; at++) {
			this.counts[at] += data.counts[at];
			const room = this.maxListed - this.listed[at].length;
			if (room > 0) this.listed[at].push(...data.listed[at].slice(0, room));
		}
	}

	data(): FindingsData {
		return { counts: this.counts, listed: this.listed };
	}
}

// ---------------------------------------------------------------- one signature

/** A signature as the checks read it; `jws` and `signedAt` may be anything in an import. */
export interface SignatureRow {
	recordId: string;
	keyId: string;
	batchId: string;
	leaseId: string;
	jws: unknown;
	signedAt: unknown;
}

/** The lease a signature names, as stored (the first document of that id in an import). */
export interface LeaseRow {
	leaseId: string;
	keyId: unknown;
	grantedAt: unknown;
	expiresAt: unknown;
	endedAt: unknown;
}

export function signatureRef(signature: SignatureRow): string {
	return `batch ${signature.batchId}, key ${signature.keyId}, lease ${signature.leaseId}`;
}

export function time(value: unknown): number {
	return typeof value === "string" ? Date.parse(value) : NaN;
}

export function isSeq(value: unknown): value is number {
	return typeof value === "number" && Number.isInteger(value) && value > 0;
}

/** An Ed25519 public key from a JWK's `x`; throws when it is not one. */
export function importEd25519(x: string): KeyObject {
	return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
}

interface ProtectedHeader {
	alg?: unknown;
	kid?: unknown;
	crit?: unknown;
	b64?: unknown;
}

/** Every signature of a key shares one protected header: each distinct one is parsed once. */
export class HeaderCache {
	#headers = new Map<string, ProtectedHeader | null>();

	get(encoded: string): ProtectedHeader | null {
		let header = this.#headers.get(encoded);
		if (header !== undefined) return header;
		try {
			const parsed = JSON.parse(Buffer.from(encoded, "base64url").toString("utf8"));
			header = parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : null;
		} catch {
			header = null;
		}
		// Corrupt data could bring a header per signature: keep the cache small.
		if (this.#headers.size > 1000) this.#headers.clear();
		this.#headers.set(encoded, header ?? null);
		return header ?? null;
	}
}

/** The raw 32 bytes of an Ed25519 public key from a JWK's `x` (one `importEd25519` accepted). */
export function ed25519PublicKeyBytes(x: string): Buffer {
	const bytes = Buffer.from(x, "base64url");
	if (bytes.length !== 32)
		throw new Error(`an Ed25519 public key is 32 bytes, not ${bytes.length}`);
	return bytes;
}

/**
 * What verifying needs: the raw public key of each key id that imported, the parsed headers,
 * and Ed25519 verification of a 64-byte detached signature (libsodium's
 * `crypto_sign_verify_detached` in the audit's threads, src/audit/audit.worker.ts).
 */
export interface Verifier {
	keys: Map<string, Uint8Array>;
	headers: HeaderCache;
	verify(signature: Buffer, message: Buffer, publicKey: Uint8Array): boolean;
}

/**
 * Rule "signature-verifies" for one signature of a known record: a detached compact JWS with
 * the contract's header, 64 bytes, valid over `<protected>.<base64url(JSON of { id, data })>`.
 */
export function checkSignature(
	signature: SignatureRow,
	data: unknown,
	verifier: Verifier,
	findings: FindingList,
): void {
	const rule: RuleName = "signature-verifies";
	const { recordId, keyId } = signature;
	const ids = { recordId, keyId, batchId: signature.batchId };
	const parts = typeof signature.jws === "string" ? signature.jws.split(".") : [];
	if (parts.length !== 3 || parts[1] !== "" || !parts[0] || !parts[2])
		return findings.add(
			rule,
			`signature of record ${recordId} is not a detached compact JWS ("<protected>..<signature>")`,
			ids,
		);
	const header = verifier.headers.get(parts[0]);
	if (!header)
		return findings.add(
			rule,
			`signature of record ${recordId} has an unreadable protected header`,
			ids,
		);
	if (header.alg !== "EdDSA")
		return findings.add(
			rule,
			`signature of record ${recordId} has alg ${JSON.stringify(header.alg)}, not "EdDSA"`,
			ids,
		);
	if (header.kid !== keyId)
		return findings.add(
			rule,
			`signature of record ${recordId} has kid ${JSON.stringify(header.kid)} but keyId ${keyId}`,
			ids,
		);
	if (header.crit !== undefined || header.b64 !== undefined)
		return findings.add(
			rule,
			`signature of record ${recordId} uses header parameters the contract does not allow (crit/b64)`,
			ids,
		);
	const key = verifier.keys.get(keyId);
	if (!key)
		return findings.add(
			rule,
			`signature of record ${recordId} names key ${keyId}, which has no usable public key`,
			ids,
		);
	const signatureBytes = Buffer.from(parts[2], "base64url");
	if (signatureBytes.length !== 64)
		return findings.add(
			rule,
			`signature of record ${recordId} is ${signatureBytes.length} bytes, not an Ed25519 signature`,
			ids,
		);
	if (!verifier.verify(signatureBytes, signingInput(parts[0], recordId, data), key))
		findings.add(
			rule,
			`signature of record ${recordId} does not verify against key ${keyId} (${signatureRef(signature)})`,
			ids,
		);
}

/** `<protected>.<base64url(UTF-8 of JSON.stringify({ id, data }))>`, the bytes Ed25519 signed (docs/design.md §8.1). */
export function signingInput(protectedHeader: string, id: string, data: unknown): Buffer {
	const payload = Buffer.from(JSON.stringify({ id, data }), "utf8").toString("base64url");
	return Buffer.from(`${protectedHeader}.${payload}`, "latin1");
}

/**
 * The signature half of rule "no-key-overlap": the lease it names exists, is of its key, and
 * `signedAt` lies within the lease, give or take the clock tolerance.
 */
export function checkSignatureInLease(
	signature: SignatureRow,
	lease: LeaseRow | null,
	toleranceMs: number,
	findings: FindingList,
): void {
	const rule: RuleName = "no-key-overlap";
	const { recordId, keyId, leaseId } = signature;
	const ids = { recordId, keyId, leaseId };
	if (!lease)
		return findings.add(
			rule,
			`signature of record ${recordId} names unknown lease ${leaseId}`,
			ids,
		);
	if (lease.keyId !== keyId)
		return findings.add(
			rule,
			`signature of record ${recordId} is made with key ${keyId} under lease ${lease.leaseId}, which is a lease of key ${lease.keyId}`,
			ids,
		);
	const signedAt = time(signature.signedAt);
	if (Number.isNaN(signedAt))
		return findings.add(
			rule,
			`signature of record ${recordId} has no valid signedAt (${JSON.stringify(signature.signedAt)})`,
			ids,
		);
	const grantedAt = time(lease.grantedAt);
	// An ended lease is bounded by its end; an active one by its last granted expiry.
	const until = lease.endedAt != null ? time(lease.endedAt) : time(lease.expiresAt);
	if (signedAt < grantedAt - toleranceMs || signedAt > until + toleranceMs)
		findings.add(
			rule,
			`signature of record ${recordId} was made at ${signature.signedAt}, outside lease ${lease.leaseId} of key ${lease.keyId} (granted ${lease.grantedAt}, ${lease.endedAt != null ? `ended ${lease.endedAt}` : `expires ${lease.expiresAt ?? "unknown"}`})`,
			ids,
		);
}
