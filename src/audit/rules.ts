/**
 * The audit of DESIGN.md section 8: pure checks over a snapshot of the stores (or an
 * export), no broker. Each rule has a stable name that tests, the CLI and operators use.
 */
import { webcrypto } from "node:crypto";
import type { JWK } from "jose";
import type { LeaseDoc } from "../contract";
import { replayLeases, type ReplayResult } from "../keyring/replay";
import { snapshotCounts, type AuditSnapshot, type SnapshotBatch, type SnapshotLease, type SnapshotSignature } from "./snapshot";

export const RULES = [
	"one-signature-per-record",
	"signature-verifies",
	"one-key-per-batch",
	"no-key-overlap",
	"lru-order",
	"batch-size"
] as const;
export type RuleName = (typeof RULES)[number];

export interface Violation {
	rule: RuleName;
	message: string;
	ids?: Record<string, string>;
}

export interface RuleResult {
	rule: RuleName;
	ok: boolean;
	/** Every violation found, listed or not. */
	violations: number;
	/** How many of them `AuditReport.violations` lists. */
	listed: number;
}

export interface AuditReport {
	ok: boolean;
	checked: { records: number; signatures: number; batches: number; leases: number; keys: number; runs: number };
	rules: RuleResult[];
	/** Every violation of every rule, listed or not. */
	violationCount: number;
	/** The first `maxListedPerRule` violations of each rule, in rule order. */
	violations: Violation[];
}

export interface AuditOptions {
	/** Slack between the signers' and the keyring's clocks when placing a signature in its lease. */
	clockToleranceMs?: number;
	/** A broken store must not print a million lines: list this many per rule, count them all. */
	maxListedPerRule?: number;
	/** Signatures verified at once (WebCrypto runs them on libuv's pool). */
	verifyConcurrency?: number;
}

const DEFAULTS: Required<AuditOptions> = { clockToleranceMs: 1000, maxListedPerRule: 50, verifyConcurrency: 1000 };

class Findings {
	private readonly listed = new Map<RuleName, Violation[]>();
	private readonly counts = new Map<RuleName, number>();

	constructor(private readonly maxListed: number) {
		for (const rule of RULES) {
			this.listed.set(rule, []);
			this.counts.set(rule, 0);
		}
	}

	add(rule: RuleName, message: string, ids?: Record<string, string>): void {
		this.counts.set(rule, this.counts.get(rule)! + 1);
		const list = this.listed.get(rule)!;
		if (list.length < this.maxListed) list.push(ids ? { rule, message, ids } : { rule, message });
	}

	rules(): RuleResult[] {
		return RULES.map(rule => {
			const violations = this.counts.get(rule)!;
			return { rule, ok: violations === 0, violations, listed: this.listed.get(rule)!.length };
		});
	}

	violations(): Violation[] {
		return RULES.flatMap(rule => this.listed.get(rule)!);
	}
}

/** The audit's view of the data, indexed once and shared by the rules. */
interface Indexes {
	recordData: Map<string, string>;
	signaturesByRecord: Map<string, SnapshotSignature[]>;
	batches: Map<string, SnapshotBatch>;
	leases: Map<string, SnapshotLease>;
	keyIds: string[];
	replay: ReplayResult;
}

export async function audit(snapshot: AuditSnapshot, options: AuditOptions = {}): Promise<AuditReport> {
	const opts = { ...DEFAULTS, ...options };
	const findings = new Findings(opts.maxListedPerRule);
	const index = buildIndexes(snapshot, findings);

	checkOneSignaturePerRecord(snapshot, index, findings);
	await checkSignaturesVerify(snapshot, index, findings, opts.verifyConcurrency);
	checkOneKeyPerBatch(snapshot, index, findings);
	checkNoKeyOverlap(snapshot, index, findings, opts.clockToleranceMs);
	checkLruOrder(index, findings);
	checkBatchSize(snapshot, findings);

	const rules = findings.rules();
	return {
		ok: rules.every(r => r.ok),
		checked: snapshotCounts(snapshot),
		rules,
		violationCount: rules.reduce((sum, r) => sum + r.violations, 0),
		violations: findings.violations()
	};
}

function buildIndexes(snapshot: AuditSnapshot, findings: Findings): Indexes {
	const recordData = new Map<string, string>();
	for (const record of snapshot.records) {
		if (recordData.has(record.id)) findings.add("one-signature-per-record", `record ${record.id} is stored twice`, { recordId: record.id });
		recordData.set(record.id, record.data);
	}
	const signaturesByRecord = new Map<string, SnapshotSignature[]>();
	for (const signature of snapshot.signatures) {
		const list = signaturesByRecord.get(signature.recordId);
		if (list) list.push(signature);
		else signaturesByRecord.set(signature.recordId, [signature]);
	}
	const batches = new Map<string, SnapshotBatch>();
	for (const batch of snapshot.batches) {
		// A batch id with two documents could carry two keys: rule 3 needs it unique.
		if (batches.has(batch.batchId)) findings.add("one-key-per-batch", `batch ${batch.batchId} is stored twice`, { batchId: batch.batchId });
		else batches.set(batch.batchId, batch);
	}
	const leases = new Map<string, SnapshotLease>();
	for (const lease of snapshot.leases) {
		if (leases.has(lease.leaseId)) findings.add("no-key-overlap", `lease ${lease.leaseId} is stored twice`, { leaseId: lease.leaseId });
		else leases.set(lease.leaseId, lease);
	}
	const keyIds = [...new Set(snapshot.keys.map(k => k.keyId))].sort();
	// The free queue starts with every key in ascending id order: the keyring's own rule for never-used keys.
	const replay = replayLeases(keyIds, snapshot.leases as LeaseDoc[]);
	return { recordData, signaturesByRecord, batches, leases, keyIds, replay };
}

function signatureRef(signature: SnapshotSignature): string {
	return `batch ${signature.batchId}, key ${signature.keyId}, lease ${signature.leaseId}`;
}

// ---------------------------------------------------------------- rule 1

function checkOneSignaturePerRecord(snapshot: AuditSnapshot, index: Indexes, findings: Findings): void {
	for (const record of snapshot.records) {
		const signatures = index.signaturesByRecord.get(record.id);
		if (!signatures) findings.add("one-signature-per-record", `record ${record.id} has no signature`, { recordId: record.id });
		else if (signatures.length > 1)
			findings.add(
				"one-signature-per-record",
				`record ${record.id} has ${signatures.length} signatures: ${signatures.map(s => `(${signatureRef(s)})`).join(", ")}`,
				{ recordId: record.id, batchIds: signatures.map(s => s.batchId).join(","), leaseIds: signatures.map(s => s.leaseId).join(",") }
			);
	}
	for (const [recordId, signatures] of index.signaturesByRecord)
		if (!index.recordData.has(recordId))
			findings.add("one-signature-per-record", `${signatures.length} signature(s) for unknown record ${recordId} (${signatureRef(signatures[0])})`, { recordId, batchId: signatures[0].batchId });
}

// ---------------------------------------------------------------- signature verification

interface ProtectedHeader {
	alg?: unknown;
	kid?: unknown;
	crit?: unknown;
	b64?: unknown;
}

function parseHeader(encoded: string): ProtectedHeader | null {
	try {
		const header = JSON.parse(Buffer.from(encoded, "base64url").toString("utf8"));
		return header && typeof header === "object" && !Array.isArray(header) ? header : null;
	} catch {
		return null;
	}
}

/** Imports each JWKS key once; reports keys that are missing, malformed or carry private material. */
async function importPublicKeys(snapshot: AuditSnapshot, findings: Findings): Promise<Map<string, webcrypto.CryptoKey>> {
	const rule: RuleName = "signature-verifies";
	const imported = new Map<string, webcrypto.CryptoKey>();
	const seen = new Set<string>();
	const known = new Set(snapshot.keys.map(k => k.keyId));
	const listedKeyIds = new Set<string>();
	for (const key of snapshot.keys) {
		if (listedKeyIds.has(key.keyId)) findings.add(rule, `key ${key.keyId} is listed twice`, { keyId: key.keyId });
		listedKeyIds.add(key.keyId);
	}
	for (const jwk of snapshot.jwks?.keys ?? []) {
		const kid = typeof jwk.kid === "string" ? jwk.kid : null;
		if (!kid) {
			findings.add(rule, "a JWKS key has no kid");
			continue;
		}
		if (seen.has(kid)) {
			findings.add(rule, `JWKS has two keys with kid ${kid}`, { keyId: kid });
			imported.delete(kid);
			continue;
		}
		seen.add(kid);
		if (jwk.d !== undefined) findings.add(rule, `JWKS key ${kid} carries private key material ("d")`, { keyId: kid });
		if (!known.has(kid)) findings.add(rule, `JWKS key ${kid} is not in the keyring's keys`, { keyId: kid });
		if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
			findings.add(rule, `JWKS key ${kid} is not an Ed25519 public key (kty ${jwk.kty}, crv ${jwk.crv})`, { keyId: kid });
			continue;
		}
		try {
			const publicOnly: JWK = { kty: "OKP", crv: "Ed25519", x: jwk.x };
			imported.set(kid, await webcrypto.subtle.importKey("jwk", publicOnly as webcrypto.JsonWebKey, { name: "Ed25519" }, false, ["verify"]));
		} catch (err) {
			findings.add(rule, `JWKS key ${kid} cannot be imported: ${(err as Error).message}`, { keyId: kid });
		}
	}
	for (const keyId of known) if (!seen.has(keyId)) findings.add(rule, `key ${keyId} has no public key in the JWKS`, { keyId });
	return imported;
}

interface PendingVerification {
	signature: SnapshotSignature;
	key: webcrypto.CryptoKey;
	signingInput: Buffer;
	signatureBytes: Buffer;
}

async function checkSignaturesVerify(snapshot: AuditSnapshot, index: Indexes, findings: Findings, concurrency: number): Promise<void> {
	const rule: RuleName = "signature-verifies";
	const keys = await importPublicKeys(snapshot, findings);
	// Every signature of a key shares one protected header: parse each distinct one once.
	const headers = new Map<string, ProtectedHeader | null>();
	const pending: PendingVerification[] = [];
	for (const signature of snapshot.signatures) {
		const ids = { recordId: signature.recordId, keyId: signature.keyId, batchId: signature.batchId };
		const data = index.recordData.get(signature.recordId);
		// A signature of an unknown record is rule 1's finding; there is no payload to verify against.
		if (data === undefined) continue;
		const parts = typeof signature.jws === "string" ? signature.jws.split(".") : [];
		if (parts.length !== 3 || parts[1] !== "" || !parts[0] || !parts[2]) {
			findings.add(rule, `signature of record ${signature.recordId} is not a detached compact JWS ("<protected>..<signature>")`, ids);
			continue;
		}
		let header = headers.get(parts[0]);
		if (header === undefined) headers.set(parts[0], (header = parseHeader(parts[0])));
		if (!header) {
			findings.add(rule, `signature of record ${signature.recordId} has an unreadable protected header`, ids);
			continue;
		}
		if (header.alg !== "EdDSA") {
			findings.add(rule, `signature of record ${signature.recordId} has alg ${JSON.stringify(header.alg)}, not "EdDSA"`, ids);
			continue;
		}
		if (header.kid !== signature.keyId) {
			findings.add(rule, `signature of record ${signature.recordId} has kid ${JSON.stringify(header.kid)} but keyId ${signature.keyId}`, ids);
			continue;
		}
		if (header.crit !== undefined || header.b64 !== undefined) {
			findings.add(rule, `signature of record ${signature.recordId} uses header parameters the contract does not allow (crit/b64)`, ids);
			continue;
		}
		const key = keys.get(signature.keyId);
		if (!key) {
			findings.add(rule, `signature of record ${signature.recordId} names key ${signature.keyId}, which has no usable public key`, ids);
			continue;
		}
		const signatureBytes = Buffer.from(parts[2], "base64url");
		if (signatureBytes.length !== 64) {
			findings.add(rule, `signature of record ${signature.recordId} is ${signatureBytes.length} bytes, not an Ed25519 signature`, ids);
			continue;
		}
		const payload = Buffer.from(JSON.stringify({ id: signature.recordId, data }), "utf8").toString("base64url");
		pending.push({ signature, key, signatureBytes, signingInput: Buffer.from(`${parts[0]}.${payload}`, "ascii") });
	}
	// Bounded: all 100,000 at once would hold every promise and buffer alive together.
	for (let at = 0; at < pending.length; at += concurrency) {
		const chunk = pending.slice(at, at + concurrency);
		const results = await Promise.all(chunk.map(p => webcrypto.subtle.verify("Ed25519", p.key, p.signatureBytes, p.signingInput).catch(() => false)));
		results.forEach((valid, i) => {
			const { signature } = chunk[i];
			if (!valid)
				findings.add(rule, `signature of record ${signature.recordId} does not verify against key ${signature.keyId} (${signatureRef(signature)})`, {
					recordId: signature.recordId,
					keyId: signature.keyId,
					batchId: signature.batchId
				});
		});
	}
}

// ---------------------------------------------------------------- rule 3

function checkOneKeyPerBatch(snapshot: AuditSnapshot, index: Indexes, findings: Findings): void {
	const rule: RuleName = "one-key-per-batch";
	const used = new Map<string, { keyIds: Set<string>; leaseIds: Set<string> }>();
	const batchRecordIds = new Map<string, Set<string>>();
	for (const signature of snapshot.signatures) {
		const batch = index.batches.get(signature.batchId);
		if (!batch) {
			findings.add(rule, `signature of record ${signature.recordId} names unknown batch ${signature.batchId}`, { recordId: signature.recordId, batchId: signature.batchId });
			continue;
		}
		let members = batchRecordIds.get(batch.batchId);
		if (!members) batchRecordIds.set(batch.batchId, (members = new Set(batch.recordIds)));
		if (!members.has(signature.recordId))
			findings.add(rule, `signature of record ${signature.recordId} names batch ${batch.batchId}, which does not contain that record`, { recordId: signature.recordId, batchId: batch.batchId });
		let seen = used.get(batch.batchId);
		if (!seen) used.set(batch.batchId, (seen = { keyIds: new Set(), leaseIds: new Set() }));
		seen.keyIds.add(signature.keyId);
		seen.leaseIds.add(signature.leaseId);
	}
	for (const batch of index.batches.values()) {
		const lease = batch.leaseId != null ? index.leases.get(batch.leaseId) : undefined;
		if (lease && batch.keyId != null && lease.keyId !== batch.keyId)
			findings.add(rule, `batch ${batch.batchId} records key ${batch.keyId} and lease ${lease.leaseId}, which is a lease of key ${lease.keyId}`, { batchId: batch.batchId, leaseId: lease.leaseId });
	}
	for (const [batchId, seen] of used) {
		const batch = index.batches.get(batchId)!;
		if (seen.keyIds.size > 1)
			findings.add(rule, `batch ${batchId} has signatures made with ${seen.keyIds.size} keys: ${[...seen.keyIds].sort().join(", ")}`, { batchId, keyIds: [...seen.keyIds].sort().join(",") });
		if (seen.leaseIds.size > 1)
			findings.add(rule, `batch ${batchId} has signatures made under ${seen.leaseIds.size} leases: ${[...seen.leaseIds].sort().join(", ")}`, { batchId, leaseIds: [...seen.leaseIds].sort().join(",") });
		// The batch doc's key is null when the batcher died before the signer's reply: then the signatures decide.
		const otherKeys = [...seen.keyIds].filter(k => k !== batch.keyId);
		if (batch.keyId != null && otherKeys.length)
			findings.add(rule, `batch ${batchId} records key ${batch.keyId} but its signatures use ${otherKeys.sort().join(", ")}`, { batchId, keyId: batch.keyId });
		const otherLeases = [...seen.leaseIds].filter(l => l !== batch.leaseId);
		if (batch.leaseId != null && otherLeases.length)
			findings.add(rule, `batch ${batchId} records lease ${batch.leaseId} but its signatures use ${otherLeases.sort().join(", ")}`, { batchId, leaseId: batch.leaseId });
	}
}

// ---------------------------------------------------------------- rule 2

function time(value: string | null | undefined): number {
	return typeof value === "string" ? Date.parse(value) : NaN;
}

function isSeq(value: unknown): value is number {
	return typeof value === "number" && Number.isInteger(value) && value > 0;
}

function checkNoKeyOverlap(snapshot: AuditSnapshot, index: Indexes, findings: Findings, toleranceMs: number): void {
	const rule: RuleName = "no-key-overlap";
	const knownKeys = new Set(index.keyIds);
	const seqOwner = new Map<number, string>();
	const claimSeq = (seq: number, leaseId: string) => {
		const owner = seqOwner.get(seq);
		if (owner !== undefined) findings.add(rule, `seq ${seq} is used by both lease ${owner} and lease ${leaseId}; the lease log must be totally ordered`, { leaseId, seq: String(seq) });
		else seqOwner.set(seq, leaseId);
	};
	for (const lease of index.leases.values()) {
		const ids = { leaseId: lease.leaseId, keyId: lease.keyId };
		if (!knownKeys.has(lease.keyId)) findings.add(rule, `lease ${lease.leaseId} is of unknown key ${lease.keyId}`, ids);
		if (!isSeq(lease.grantSeq)) findings.add(rule, `lease ${lease.leaseId} has no valid grantSeq (${JSON.stringify(lease.grantSeq)})`, ids);
		else claimSeq(lease.grantSeq, lease.leaseId);
		const ended = lease.endSeq != null || lease.endedAt != null || lease.end != null;
		if (ended && (!isSeq(lease.endSeq) || lease.endedAt == null || (lease.end !== "released" && lease.end !== "expired")))
			findings.add(rule, `lease ${lease.leaseId} is half ended (end ${JSON.stringify(lease.end)}, endSeq ${JSON.stringify(lease.endSeq)}, endedAt ${JSON.stringify(lease.endedAt)})`, ids);
		if (isSeq(lease.endSeq)) {
			claimSeq(lease.endSeq, lease.leaseId);
			if (isSeq(lease.grantSeq) && lease.endSeq <= lease.grantSeq) findings.add(rule, `lease ${lease.leaseId} ends at seq ${lease.endSeq}, not after its grant at seq ${lease.grantSeq}`, ids);
		}
		if (Number.isNaN(time(lease.grantedAt))) findings.add(rule, `lease ${lease.leaseId} has no valid grantedAt (${JSON.stringify(lease.grantedAt)})`, ids);
		else if (time(lease.endedAt) < time(lease.grantedAt)) findings.add(rule, `lease ${lease.leaseId} ended at ${lease.endedAt}, before its grant at ${lease.grantedAt}`, ids);
	}
	// Replaying grants and ends by seq: a grant of a key that is still held is two leases at once.
	for (const problem of index.replay.problems)
		findings.add(rule, `lease ${problem.leaseId} (seq ${problem.seq}) ${problem.problem}`, { leaseId: problem.leaseId, seq: String(problem.seq) });

	for (const signature of snapshot.signatures) {
		const ids = { recordId: signature.recordId, keyId: signature.keyId, leaseId: signature.leaseId };
		const lease = index.leases.get(signature.leaseId);
		if (!lease) {
			findings.add(rule, `signature of record ${signature.recordId} names unknown lease ${signature.leaseId}`, ids);
			continue;
		}
		if (lease.keyId !== signature.keyId) {
			findings.add(rule, `signature of record ${signature.recordId} is made with key ${signature.keyId} under lease ${lease.leaseId}, which is a lease of key ${lease.keyId}`, ids);
			continue;
		}
		const signedAt = time(signature.signedAt);
		if (Number.isNaN(signedAt)) {
			findings.add(rule, `signature of record ${signature.recordId} has no valid signedAt (${JSON.stringify(signature.signedAt)})`, ids);
			continue;
		}
		const grantedAt = time(lease.grantedAt);
		// An ended lease is bounded by its end; an active one by its deadline when the store knows it.
		const until = lease.endedAt != null ? time(lease.endedAt) : time(lease.expiresAt);
		if (signedAt < grantedAt - toleranceMs || signedAt > until + toleranceMs)
			findings.add(
				rule,
				`signature of record ${signature.recordId} was made at ${signature.signedAt}, outside lease ${lease.leaseId} of key ${lease.keyId} (granted ${lease.grantedAt}, ${lease.endedAt != null ? `ended ${lease.endedAt}` : `expires ${lease.expiresAt ?? "unknown"}`})`,
				ids
			);
	}
}

// ---------------------------------------------------------------- rule 4

function checkLruOrder(index: Indexes, findings: Findings): void {
	for (const grant of index.replay.nonLruGrants)
		findings.add(
			"lru-order",
			`lease ${grant.leaseId} (seq ${grant.seq}) was granted key ${grant.granted} while ${grant.expected} was the least recently used free key`,
			{ leaseId: grant.leaseId, seq: String(grant.seq), keyId: grant.granted, expected: grant.expected ?? "" }
		);
}

// ---------------------------------------------------------------- rule 5

function checkBatchSize(snapshot: AuditSnapshot, findings: Findings): void {
	const rule: RuleName = "batch-size";
	const sizes = new Map<string, Set<number>>();
	const docs = new Map<string, number>();
	for (const run of snapshot.runs) {
		if (!Number.isInteger(run.batchSize) || run.batchSize < 1) findings.add(rule, `run ${run.runId} has an invalid batch size ${JSON.stringify(run.batchSize)}`, { runId: run.runId });
		docs.set(run.runId, (docs.get(run.runId) ?? 0) + 1);
		const set = sizes.get(run.runId);
		if (set) set.add(run.batchSize);
		else sizes.set(run.runId, new Set([run.batchSize]));
	}
	for (const [runId, set] of sizes) {
		if (set.size > 1) findings.add(rule, `run ${runId} has ${set.size} batch sizes: ${[...set].sort((a, b) => a - b).join(", ")}`, { runId });
		else if (docs.get(runId)! > 1) findings.add(rule, `run ${runId} is stored ${docs.get(runId)} times`, { runId });
	}
	for (const batch of snapshot.batches) {
		const set = sizes.get(batch.runId);
		if (!set) {
			findings.add(rule, `batch ${batch.batchId} names unknown run ${batch.runId}`, { batchId: batch.batchId, runId: batch.runId });
			continue;
		}
		const batchSize = Math.min(...set);
		const size = Array.isArray(batch.recordIds) ? batch.recordIds.length : NaN;
		if (!(size <= batchSize))
			findings.add(rule, `batch ${batch.batchId} has ${size} records, more than run ${batch.runId}'s batch size ${batchSize}`, { batchId: batch.batchId, runId: batch.runId });
	}
}
