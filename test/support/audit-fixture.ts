/**
 * Builds a small, fully consistent signed history (keys, records, runs, batches, leases in
 * LRU order, real Ed25519 JWS) as the audit would read it. Tests corrupt copies of it to see
 * each rule fire; it lives here, next to the rules, so any test of the audit can use it.
 * It also writes such histories as the embedded store's own SQLite files (the real schema),
 * small from a snapshot or large straight from node:crypto.
 */
import { generateKeyPairSync, randomBytes, sign as signBytes, type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { CompactSign, exportJWK, generateKeyPair, type CryptoKey, type JWK } from "jose";
import { openStoreFiles } from "../../src/audit/audit-db";
import { audit, type AuditReport } from "../../src/audit/rules";
import {
	BATCHER_SCHEMA,
	KEYRING_SCHEMA,
	RECORDS_SCHEMA,
	STORE_FILES,
} from "../../src/store/schema";
import type {
	AuditSnapshot,
	SnapshotBatch,
	SnapshotKey,
	SnapshotLease,
	SnapshotRecord,
	SnapshotRun,
	SnapshotSignature,
} from "../../src/audit/snapshot";
import { KEY_LIFECYCLE_NONE } from "../../src/contract";

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
	/** Signs like a signer does: detached compact JWS, kid in the header (docs/design.md §8.1). */
	sign(keyId: string, recordId: string, data: string, kid?: string): Promise<string>;
}

const BASE = Date.parse("2026-01-01T00:00:00.000Z");
const LEASE_TTL_MS = 30_000;

export async function signRecord(
	privateKey: CryptoKey,
	kid: string,
	recordId: string,
	data: string,
): Promise<string> {
	const payload = new TextEncoder().encode(JSON.stringify({ id: recordId, data }));
	const compact = await new CompactSign(payload)
		.setProtectedHeader({ alg: "EdDSA", kid })
		.sign(privateKey);
	const [header, , signature] = compact.split(".");
	return `${header}..${signature}`;
}

export async function buildMiniRun(options: MiniRunOptions = {}): Promise<MiniRun> {
	const keyCount = options.keys ?? 3;
	const runs = options.runs ?? [
		{ batchSize: 4, records: 6, status: "failed" },
		{ batchSize: 3, records: 9, status: "completed" },
	];
	const window = options.window ?? 2;
	const chooseKey = options.chooseKey ?? ((free: readonly string[]) => free[0]);
	let clock = BASE;
	const tick = () => new Date((clock += 10)).toISOString();
	let seq = 0;

	const snapshot: AuditSnapshot = {
		records: [],
		signatures: [],
		batches: [],
		leases: [],
		keys: [],
		jwks: { keys: [] },
		runs: [],
	};
	const privateKeys = new Map<string, CryptoKey>();
	for (let i = 0; i < keyCount; i++) {
		const keyId = `key-${String(i).padStart(3, "0")}`;
		const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
		privateKeys.set(keyId, privateKey);
		const key: SnapshotKey = {
			keyId,
			createdAt: new Date(BASE).toISOString(),
			...KEY_LIFECYCLE_NONE,
		};
		snapshot.keys.push(key);
		const jwk: JWK = { ...(await exportJWK(publicKey)), kid: keyId };
		snapshot.jwks.keys.push(jwk);
	}
	const sign = async (keyId: string, recordId: string, data: string, kid = keyId) =>
		signRecord(privateKeys.get(keyId)!, kid, recordId, data);

	const totalRecords = runs.reduce((sum, run) => sum + run.records, 0);
	for (let i = 1; i <= totalRecords; i++) {
		// One payload outside ASCII: the signed bytes are UTF-8.
		const data = i === 2 ? "données signées ✓" : randomBytes(12).toString("hex");
		snapshot.records.push({ id: `r-${String(i).padStart(4, "0")}`, data });
	}
	const recordData = new Map(snapshot.records.map((r: SnapshotRecord) => [r.id, r.data]));

	const freeQueue = snapshot.keys.map((k) => k.keyId).sort();
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
			expiresAt: new Date(Date.parse(grantedAt) + LEASE_TTL_MS).toISOString(),
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
			finishedAt: null,
			// What the batch says it stored: left out here, as in stores from before it was kept.
			stored: null,
			// Why it is short: left out too (the fixture's runs do not follow).
			short: null,
		};
		snapshot.batches.push(batch);
		return batch;
	};

	let nextRecord = 0;
	for (const [r, spec] of runs.entries()) {
		const run: SnapshotRun = {
			runId: `run-${r + 1}`,
			batchSize: spec.batchSize,
			status: spec.status ?? "completed",
			startedAt: tick(),
			finishedAt: null,
			follow: null,
		};
		snapshot.runs.push(run);
		const ids = snapshot.records
			.slice(nextRecord, nextRecord + spec.records)
			.map((rec) => rec.id);
		nextRecord += spec.records;
		const planned: Array<{ recordIds: string[]; attempt: number }> = [];
		for (let at = 0; at < ids.length; at += spec.batchSize)
			planned.push({ recordIds: ids.slice(at, at + spec.batchSize), attempt: 1 });

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
						signedAt: tick(),
						logIndex: null,
					};
					snapshot.signatures.push(signature);
				}
			for (const { batch, lease } of group) {
				end(lease, "released");
				Object.assign(batch, {
					keyId: lease.keyId,
					leaseId: lease.leaseId,
					status: "signed",
					finishedAt: tick(),
				});
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

// ---------------------------------------------------------------- the embedded store's files

/** Opens (creating) one of the store's files under `dataDir` with its real schema, as its owner does. */
export function openStoreFile(dataDir: string, owner: keyof typeof STORE_FILES): DatabaseSync {
	fs.mkdirSync(dataDir, { recursive: true });
	const db = new DatabaseSync(path.join(dataDir, STORE_FILES[owner]));
	db.exec("PRAGMA journal_mode = WAL");
	db.exec({ records: RECORDS_SCHEMA, batcher: BATCHER_SCHEMA, keyring: KEYRING_SCHEMA }[owner]);
	return db;
}

/** A stand-in for a sealed private key: it must never appear in an export or a report. */
export const SEALED = "SEALED-PRIVATE-KEY-NEVER-EXPORTED";

/** Writes `snapshot` as the three store files of `dataDir`, with the schema of src/store/schema.ts. */
export function writeStoreFiles(snapshot: AuditSnapshot, dataDir: string): void {
	const keyring = openStoreFile(dataDir, "keyring");
	const jwkOf = new Map(snapshot.jwks.keys.map((jwk) => [jwk.kid, jwk]));
	const key = keyring.prepare(
		"INSERT INTO keys (keyId, createdAt, publicJwk, sealedPrivateKey) VALUES (?, ?, ?, ?)",
	);
	for (const k of snapshot.keys)
		key.run(k.keyId, k.createdAt, JSON.stringify(jwkOf.get(k.keyId) ?? {}), SEALED);
	const lease = keyring.prepare(
		`INSERT INTO leases (leaseId, keyId, holder, grantSeq, grantedAt, expiresAt, endSeq, endedAt, "end") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	);
	for (const l of snapshot.leases)
		lease.run(
			l.leaseId,
			l.keyId,
			l.holder,
			l.grantSeq,
			l.grantedAt,
			l.expiresAt,
			l.endSeq,
			l.endedAt,
			l.end,
		);
	keyring.close();

	const batcher = openStoreFile(dataDir, "batcher");
	const run = batcher.prepare(
		"INSERT INTO runs (runId, batchSize, status, startedAt, finishedAt) VALUES (?, ?, ?, ?, ?)",
	);
	for (const r of snapshot.runs)
		run.run(r.runId, r.batchSize, r.status, r.startedAt, r.finishedAt);
	const batch = batcher.prepare(
		"INSERT INTO batches (batchId, runId, keyId, leaseId, recordIds, attempt, status, startedAt, finishedAt, signer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
	);
	for (const b of snapshot.batches)
		batch.run(
			b.batchId,
			b.runId,
			b.keyId,
			b.leaseId,
			JSON.stringify(b.recordIds),
			b.attempt,
			b.status,
			b.startedAt,
			b.finishedAt,
			"signer-1",
		);
	batcher.close();

	const records = openStoreFile(dataDir, "records");
	const record = records.prepare("INSERT INTO records (id, data) VALUES (?, ?)");
	for (const r of snapshot.records) record.run(r.id, r.data);
	const signature = records.prepare(
		"INSERT INTO signatures (recordId, keyId, batchId, leaseId, jws, signedAt) VALUES (?, ?, ?, ?, ?, ?)",
	);
	for (const s of snapshot.signatures)
		signature.run(s.recordId, s.keyId, s.batchId, s.leaseId, s.jws, s.signedAt);
	records.close();
}

export interface SignedStoreOptions {
	records: number;
	keys: number;
	batchSize: number;
	/** Bytes of random payload per record (hex, so twice as many characters). */
	dataBytes?: number;
}

/**
 * Writes a whole consistent signed store of any size into `dataDir` as one run would leave it:
 * batches in id order, each under its own lease of the least recently used key, every record
 * signed with node:crypto in the contract's format. Returns the private keys by keyId.
 */
export function writeSignedStore(
	dataDir: string,
	options: SignedStoreOptions,
): Map<string, KeyObject> {
	const { records: total, keys: keyCount, batchSize } = options;
	let clock = BASE;
	const at = () => new Date((clock += 1)).toISOString();
	const privateKeys = new Map<string, KeyObject>();

	const keyring = openStoreFile(dataDir, "keyring");
	const batcher = openStoreFile(dataDir, "batcher");
	const records = openStoreFile(dataDir, "records");
	for (const db of [keyring, batcher, records]) db.exec("BEGIN");
	const insertKey = keyring.prepare(
		"INSERT INTO keys (keyId, createdAt, publicJwk, sealedPrivateKey) VALUES (?, ?, ?, ?)",
	);
	const headers = new Map<string, string>();
	for (let i = 0; i < keyCount; i++) {
		const keyId = `key-${String(i).padStart(3, "0")}`;
		const { publicKey, privateKey } = generateKeyPairSync("ed25519");
		privateKeys.set(keyId, privateKey);
		headers.set(
			keyId,
			Buffer.from(JSON.stringify({ alg: "EdDSA", kid: keyId })).toString("base64url"),
		);
		insertKey.run(
			keyId,
			new Date(BASE).toISOString(),
			JSON.stringify({ ...publicKey.export({ format: "jwk" }), kid: keyId }),
			SEALED,
		);
	}
	const insertLease = keyring.prepare(
		`INSERT INTO leases (leaseId, keyId, holder, grantSeq, grantedAt, expiresAt, endSeq, endedAt, "end") VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'released')`,
	);
	const runId = "run-1";
	batcher
		.prepare(
			"INSERT INTO runs (runId, batchSize, status, startedAt, finishedAt) VALUES (?, ?, 'completed', ?, NULL)",
		)
		.run(runId, batchSize, at());
	const insertBatch = batcher.prepare(
		"INSERT INTO batches (batchId, runId, keyId, leaseId, recordIds, attempt, status, startedAt, finishedAt, signer) VALUES (?, ?, ?, ?, ?, 1, 'signed', ?, ?, 'signer-1')",
	);
	const insertRecord = records.prepare("INSERT INTO records (id, data) VALUES (?, ?)");
	const insertSignature = records.prepare(
		"INSERT INTO signatures (recordId, keyId, batchId, leaseId, jws, signedAt) VALUES (?, ?, ?, ?, ?, ?)",
	);

	const width = String(total).length;
	const freeQueue = [...privateKeys.keys()];
	let seq = 0;
	for (let first = 1, batchNo = 1; first <= total; first += batchSize, batchNo++) {
		const batchId = `batch-${String(batchNo).padStart(6, "0")}`;
		const leaseId = `lease-${String(batchNo).padStart(6, "0")}`;
		const keyId = freeQueue.shift()!;
		const grantSeq = ++seq;
		const grantedAt = at();
		const startedAt = at();
		const ids: string[] = [];
		for (let n = first; n < Math.min(first + batchSize, total + 1); n++) {
			const id = `r-${String(n).padStart(width, "0")}`;
			const data = randomBytes(options.dataBytes ?? 16).toString("hex");
			const payload = Buffer.from(JSON.stringify({ id, data })).toString("base64url");
			const signature = signBytes(
				null,
				Buffer.from(`${headers.get(keyId)}.${payload}`),
				privateKeys.get(keyId)!,
			).toString("base64url");
			insertRecord.run(id, data);
			insertSignature.run(
				id,
				keyId,
				batchId,
				leaseId,
				`${headers.get(keyId)}..${signature}`,
				at(),
			);
			ids.push(id);
		}
		const endedAt = at();
		insertLease.run(
			leaseId,
			keyId,
			"signer-1",
			grantSeq,
			grantedAt,
			new Date(Date.parse(grantedAt) + LEASE_TTL_MS).toISOString(),
			++seq,
			endedAt,
		);
		insertBatch.run(batchId, runId, keyId, leaseId, JSON.stringify(ids), startedAt, at());
		freeQueue.push(keyId);
	}
	for (const db of [keyring, batcher, records]) {
		db.exec("COMMIT");
		db.close();
	}
	return privateKeys;
}

/** The audit of the store files in `dataDir`, opened read-only for it and closed after. */
export async function auditStoreFiles(
	dataDir: string,
	options: Parameters<typeof audit>[1] = {},
): Promise<AuditReport> {
	const db = openStoreFiles(dataDir);
	try {
		return await audit(db, options);
	} finally {
		db.close();
	}
}
