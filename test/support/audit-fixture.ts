/**
 * Builds a small, fully consistent signed history (keys, records, runs, batches, leases in
 * LRU order, real Ed25519 JWS) as the audit would read it. Tests corrupt copies of it to see
 * each rule fire; it lives here, next to the rules, so any test of the audit can use it.
 */
import { randomBytes } from "node:crypto";
import { CompactSign, exportJWK, generateKeyPair, type CryptoKey, type JWK } from "jose";
import type {
	AuditSnapshot,
	SnapshotBatch,
	SnapshotKey,
	SnapshotLease,
	SnapshotRecord,
	SnapshotRun,
	SnapshotSignature
} from "../../src/audit/snapshot";

export interface MiniRunOptions {
	keys?: number;
	/** One entry per run, signed in order; a run signs the next `records` records. */
	runs?: Array<{ batchSize: number; records: number; status?: SnapshotRun["status"] }>;
	/** Batches signed at once, each under its own lease. */
	window?: number;
	/** The first batch of the first run fails once (lease expired, no signatures) and is retried. */
	failFirstBatch?: boolean;
	/** Which free key each grant takes; the default is the keyring's rule, the least recently used. */
	chooseKey?: (freeQueue: readonly string[], grantIndex: number) => string;
}

export interface MiniRun {
	snapshot: AuditSnapshot;
	privateKeys: Map<string, CryptoKey>;
	/** Signs like a signer does: detached compact JWS, kid in the header (DESIGN.md section 5). */
	sign(keyId: string, recordId: string, data: string, kid?: string): Promise<string>;
}

const BASE = Date.parse("2026-01-01T00:00:00.000Z");
const LEASE_TTL_MS = 30_000;

export async function signRecord(privateKey: CryptoKey, kid: string, recordId: string, data: string): Promise<string> {
	const payload = new TextEncoder().encode(JSON.stringify({ id: recordId, data }));
	const compact = await new CompactSign(payload).setProtectedHeader({ alg: "EdDSA", kid }).sign(privateKey);
	const [header, , signature] = compact.split(".");
	return `${header}..${signature}`;
}

export async function buildMiniRun(options: MiniRunOptions = {}): Promise<MiniRun> {
	const keyCount = options.keys ?? 3;
	const runs = options.runs ?? [{ batchSize: 4, records: 6, status: "failed" }, { batchSize: 3, records: 9, status: "completed" }];
	const window = options.window ?? 2;
	const chooseKey = options.chooseKey ?? ((free: readonly string[]) => free[0]);
	let clock = BASE;
	const tick = () => new Date((clock += 10)).toISOString();
	let seq = 0;

	const snapshot: AuditSnapshot = { records: [], signatures: [], batches: [], leases: [], keys: [], jwks: { keys: [] }, runs: [] };
	const privateKeys = new Map<string, CryptoKey>();
	for (let i = 0; i < keyCount; i++) {
		const keyId = `key-${String(i).padStart(3, "0")}`;
		const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
		privateKeys.set(keyId, privateKey);
		const key: SnapshotKey = { keyId, createdAt: new Date(BASE).toISOString() };
		snapshot.keys.push(key);
		const jwk: JWK = { ...(await exportJWK(publicKey)), kid: keyId };
		snapshot.jwks.keys.push(jwk);
	}
	const sign = async (keyId: string, recordId: string, data: string, kid = keyId) => signRecord(privateKeys.get(keyId)!, kid, recordId, data);

	const totalRecords = runs.reduce((sum, run) => sum + run.records, 0);
	for (let i = 1; i <= totalRecords; i++) {
		// One payload outside ASCII: the signed bytes are UTF-8.
		const data = i === 2 ? "données signées ✓" : randomBytes(12).toString("hex");
		snapshot.records.push({ id: `r-${String(i).padStart(4, "0")}`, data });
	}
	const recordData = new Map(snapshot.records.map((r: SnapshotRecord) => [r.id, r.data]));

	const freeQueue = snapshot.keys.map(k => k.keyId).sort();
	let grants = 0;
	const grant = (holder: string): SnapshotLease => {
		const keyId = chooseKey(freeQueue, grants++);
		freeQueue.splice(freeQueue.indexOf(keyId), 1);
		const grantedAt = tick();
		const lease: SnapshotLease = {
			leaseId: `lease-${String(snapshot.leases.length + 1).padStart(4, "0")}`,
			keyId,
			holder,
			grantSeq: ++seq,
			grantedAt,
			endSeq: null,
			endedAt: null,
			end: null,
			expiresAt: new Date(Date.parse(grantedAt) + LEASE_TTL_MS).toISOString()
		};
		snapshot.leases.push(lease);
		return lease;
	};
	const end = (lease: SnapshotLease, how: "released" | "expired") => {
		lease.endSeq = ++seq;
		lease.endedAt = tick();
		lease.end = how;
		freeQueue.push(lease.keyId);
	};
	const newBatch = (runId: string, recordIds: string[], attempt: number): SnapshotBatch => {
		const batch: SnapshotBatch = {
			batchId: `batch-${String(snapshot.batches.length + 1).padStart(4, "0")}`,
			runId,
			keyId: null,
			leaseId: null,
			recordIds,
			attempt,
			status: "pending",
			startedAt: tick(),
			finishedAt: null
		};
		snapshot.batches.push(batch);
		return batch;
	};

	let nextRecord = 0;
	for (const [r, spec] of runs.entries()) {
		const run: SnapshotRun = { runId: `run-${r + 1}`, batchSize: spec.batchSize, status: spec.status ?? "completed", startedAt: tick(), finishedAt: null };
		snapshot.runs.push(run);
		const ids = snapshot.records.slice(nextRecord, nextRecord + spec.records).map(rec => rec.id);
		nextRecord += spec.records;
		const planned: Array<{ recordIds: string[]; attempt: number }> = [];
		for (let at = 0; at < ids.length; at += spec.batchSize) planned.push({ recordIds: ids.slice(at, at + spec.batchSize), attempt: 1 });

		if (r === 0 && options.failFirstBatch !== false && planned.length) {
			// A signer that died holding its lease: the keyring reclaims it, the batcher never learnt the key.
			const first = planned.shift()!;
			const failed = newBatch(run.runId, first.recordIds, 1);
			const lease = grant("signer-dead");
			end(lease, "expired");
			failed.status = "failed";
			failed.finishedAt = tick();
			planned.unshift({ recordIds: first.recordIds, attempt: 2 });
		}

		for (let at = 0; at < planned.length; at += window) {
			const group = planned.slice(at, at + window).map((plan, i) => {
				const batch = newBatch(run.runId, plan.recordIds, plan.attempt);
				return { batch, lease: grant(`signer-${i + 1}`) };
			});
			for (const { batch, lease } of group)
				for (const recordId of batch.recordIds) {
					const signature: SnapshotSignature = {
						recordId,
						keyId: lease.keyId,
						batchId: batch.batchId,
						leaseId: lease.leaseId,
						jws: await sign(lease.keyId, recordId, recordData.get(recordId)!),
						signedAt: tick()
					};
					snapshot.signatures.push(signature);
				}
			for (const { batch, lease } of group) {
				end(lease, "released");
				Object.assign(batch, { keyId: lease.keyId, leaseId: lease.leaseId, status: "signed", finishedAt: tick() });
			}
		}
		run.finishedAt = tick();
	}
	return { snapshot, privateKeys, sign };
}

/** A deep copy to corrupt without touching the original. */
export function cloneSnapshot(snapshot: AuditSnapshot): AuditSnapshot {
	return structuredClone(snapshot);
}
