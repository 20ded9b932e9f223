/**
 * An audit thread: checks one range of record ids at a time (rules 1 and 2, and the signature
 * half of no-key-overlap) or, for the verification floor, only verifies. It opens the records
 * and keyring files read-only itself. Erasable TypeScript with `.ts` imports, so Node 22 loads
 * it from the sources under jest and from dist/ as JavaScript otherwise.
 *
 * Signatures are verified with libsodium (`crypto_sign_verify_detached`). Ed25519 is one
 * algorithm whoever computes it: signatures node:crypto made before the signer moved to
 * libsodium verify the same. libsodium is the stricter verifier: it also refuses signatures
 * whose R, or public keys, are of small order, which no honest Ed25519 signer produces. The
 * floor can verify with node:crypto instead, for the benchmark's comparison.
 */
import { createPublicKey, verify as nodeCryptoVerify, type KeyObject } from "node:crypto";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import {
	FindingList,
	HeaderCache,
	checkSignature,
	checkSignatureInLease,
	ed25519PublicKeyBytes,
	signatureRef,
	signingInput,
	type FindingsData,
	type LeaseRow,
	type SignatureRow,
	type Verifier,
} from "./checks.ts";
import { BUSY_TIMEOUT_MS, attachReadOnly } from "./read-only.ts";
import { SIGNATURE_BYTES, importSodium, type Sodium } from "../sodium.ts";
import { hashLeaf } from "../tlog/merkle.ts";
import { signatureLeaf } from "../tlog/leaves.ts";
import { LeafSum, type LeafSumData } from "./leaf-sums.ts";
import type { SignatureDoc } from "../contract.ts";

/** Who verifies: libsodium always in the audit; the floor also measures node:crypto. */
export type VerifyLibrary = "libsodium" | "node:crypto";

export interface RangeTask {
	kind: "audit" | "floor";
	/** One audit's id: a thread keeps its connection and imported keys for the audit's ranges. */
	session: string;
	files: { records: string; keyring: string };
	/** True on the store's own files (unique keys); false on an import, where rowids break ties. */
	unique: boolean;
	/** [kid, x] of every public key that imported; others cannot verify anything. */
	keys: Array<[string, string]>;
	/** The range: ids after `after` (exclusive) up to `upto` (inclusive); null is open. */
	after: string | null;
	upto: string | null;
	clockToleranceMs: number;
	maxListed: number;
	/** A record with no signature is unfinished work (the last run did not complete), counted, not a violation. */
	unsignedIsUnfinished?: boolean;
	/** A follow run is running: a record with no signature waits for it (pending), it is no finding. */
	unsignedPending?: boolean;
	/** The floor's verifier (default libsodium); the audit always verifies with libsodium. */
	library?: VerifyLibrary;
	/**
	 * Sum the signatures' leaves in the signature log (src/audit/leaf-sums.ts): the audit's key
	 * (base64), and the log's size when the audit began; a row whose `logIndex` is at or past it
	 * is left to the main thread.
	 */
	signatureLog?: { key: string; size: number };
}

export interface RangeResult {
	/** Record and signature documents the range holds. */
	records: number;
	signatures: number;
	/** Signatures that verified (the floor's count). */
	valid: number;
	/** Records with no signature, when the task counts them as unfinished work. */
	unsigned?: number;
	/** Records with no signature that a running follow run will sign (docs/design.md §7.7). */
	pending?: number;
	findings: FindingsData | null;
	/** The keyed sum of the range's signatures below the log's size, each as its leaf, when asked. */
	logged?: LeafSumData;
}

interface Session {
	id: string;
	sql: DatabaseSync;
	statements: Map<string, StatementSync>;
	verifier: Verifier;
	/** The same keys as node:crypto keys, for a node:crypto floor only. */
	nodeCryptoKeys: Map<string, KeyObject> | null;
}

let session: Session | null = null;
let sodium: Sodium | null = null;

function open(task: RangeTask, sodium: Sodium): Session {
	if (session?.id === task.session) return session;
	session?.sql.close();
	const sql = new DatabaseSync(":memory:");
	sql.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
	// One statement joins both files, so each range reads them at one moment (see CAUSAL_ORDER in audit-db.ts).
	attachReadOnly(sql, task.files.records, "rec");
	attachReadOnly(sql, task.files.keyring, "kr");
	const keys = new Map<string, Uint8Array>();
	for (const [kid, x] of task.keys) keys.set(kid, ed25519PublicKeyBytes(x));
	const verify = (signature: Buffer, message: Buffer, publicKey: Uint8Array) =>
		signature.length === SIGNATURE_BYTES &&
		sodium.crypto_sign_verify_detached(signature, message, publicKey as Buffer);
	const nodeCryptoKeys =
		task.library === "node:crypto"
			? new Map(
					task.keys.map(([kid, x]) => [
						kid,
						createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" }),
					]),
				)
			: null;
	session = {
		id: task.session,
		sql,
		statements: new Map(),
		verifier: { keys, headers: new HeaderCache(), verify },
		nodeCryptoKeys,
	};
	return session;
}

function statement(current: Session, text: string): StatementSync {
	let prepared = current.statements.get(text);
	if (!prepared) {
		prepared = current.sql.prepare(text);
		prepared.setReturnArrays(true);
		current.statements.set(text, prepared);
	}
	return prepared;
}

function range(column: string, task: RangeTask): { where: string; args: string[] } {
	const where: string[] = [];
	const args: string[] = [];
	if (task.after !== null) {
		where.push(`${column} > ?`);
		args.push(task.after);
	}
	if (task.upto !== null) {
		where.push(`${column} <= ?`);
		args.push(task.upto);
	}
	return { where: where.join(" AND ") || "1", args };
}

/** The lease a signature names: the store's one, or an import's first document of that id. */
function leaseJoin(task: RangeTask): string {
	return task.unique
		? "LEFT JOIN kr.leases l ON l.leaseId = s.leaseId"
		: "LEFT JOIN kr.leases l ON l.rowid = (SELECT min(x.rowid) FROM kr.leases x WHERE x.leaseId = s.leaseId)";
}

const SIGNATURE_COLUMNS =
	"s.recordId, s.keyId, s.batchId, s.leaseId, s.jws, s.signedAt, l.leaseId, l.keyId, l.grantedAt, l.expiresAt, l.endedAt";
/** With the signature's place in the log, last: only asked of a store that has a log (older ones lack the column). */
const LOGGED_COLUMNS = `${SIGNATURE_COLUMNS}, s.logIndex`;
/** Where `s.logIndex` is in LOGGED_COLUMNS: after SIGNATURE_COLUMNS' eleven. */
const LOG_INDEX_AT = 11;

/** A signature with the lease it names, if that lease exists. */
interface Signed {
	signature: SignatureRow;
	lease: LeaseRow | null;
}

function signatureAt(row: unknown[], at: number): Signed {
	const signature = {
		recordId: row[at],
		keyId: row[at + 1],
		batchId: row[at + 2],
		leaseId: row[at + 3],
		jws: row[at + 4],
		signedAt: row[at + 5],
	} as SignatureRow;
	const lease =
		row[at + 6] == null
			? null
			: ({
					leaseId: row[at + 6],
					keyId: row[at + 7],
					grantedAt: row[at + 8],
					expiresAt: row[at + 9],
					endedAt: row[at + 10],
				} as LeaseRow);
	return { signature, lease };
}

function auditRange(task: RangeTask, current: Session): RangeResult {
	const findings = new FindingList(task.maxListed);
	const log = task.signatureLog;
	const sum = log ? new LeafSum(Buffer.from(log.key, "base64")) : null;
	const columns = log ? LOGGED_COLUMNS : SIGNATURE_COLUMNS;
	/** Each signature row once: its leaf into the sum, if it claims a place the log had when the audit began. */
	const sumLeaf = (row: unknown[], at: number, signature: SignatureRow) => {
		const index = row[at + LOG_INDEX_AT];
		if (!sum || index == null) return;
		if (typeof index !== "number" && typeof index !== "bigint") {
			// Text where a number belongs: only an altered store has it, and the rows are compared one by one.
			sum.irregular = true;
			return;
		}
		const place = Number(index);
		// The comparison one by one rebuilds the leaf from the same values (src/audit/check-logs.ts).
		if (place < log!.size)
			sum.add(place, hashLeaf(signatureLeaf(signature as unknown as SignatureDoc)));
	};
	let records = 0;
	let signatures = 0;
	let pending = 0;
	let recordId: string | null = null;
	let recordRow: unknown = null;
	let data: unknown = null;
	let extraDoc = false;
	let signed: Signed[] = [];
	let unsigned = 0;

	const finishRecord = () => {
		if (recordId === null) return;
		signatures += signed.length;
		if (signed.length === 0) {
			if (task.unsignedPending) pending++;
			else if (task.unsignedIsUnfinished) unsigned++;
			else
				findings.add("one-signature-per-record", `record ${recordId} has no signature`, {
					recordId,
				});
		} else if (signed.length > 1)
			findings.add(
				"one-signature-per-record",
				`record ${recordId} has ${signed.length} signatures: ${signed.map((s) => `(${signatureRef(s.signature)})`).join(", ")}`,
				{
					recordId,
					batchIds: signed.map((s) => s.signature.batchId).join(","),
					leaseIds: signed.map((s) => s.signature.leaseId).join(","),
				},
			);
		for (const { signature, lease } of signed) {
			checkSignature(signature, data, current.verifier, findings);
			checkSignatureInLease(signature, lease, task.clockToleranceMs, findings);
		}
	};

	// [id, data, the record's rowid (0 in the store), ...columns], one row per signature.
	const recordRange = range("r.id", task);
	const rows = statement(
		current,
		task.unique
			? `SELECT r.id, r.data, 0, ${columns} FROM rec.records r LEFT JOIN rec.signatures s ON s.recordId = r.id ${leaseJoin(task)} WHERE ${recordRange.where} ORDER BY r.id`
			: `SELECT r.id, r.data, r.rowid, ${columns} FROM rec.records r LEFT JOIN rec.signatures s ON s.recordId = r.id ${leaseJoin(task)} WHERE ${recordRange.where} ORDER BY r.id, r.rowid, s.rowid`,
	);
	for (const row of rows.iterate(...recordRange.args) as Iterable<unknown[]>) {
		if (row[0] !== recordId) {
			finishRecord();
			recordId = row[0] as string;
			recordRow = row[2];
			data = row[1];
			extraDoc = false;
			signed = [];
			records++;
		} else if (row[2] !== recordRow) {
			// A second document of one record (imports only): named once, its rows not checked again.
			recordRow = row[2];
			extraDoc = true;
			records++;
			const id = row[0] as string;
			findings.add("one-signature-per-record", `record ${id} is stored twice`, {
				recordId: id,
			});
			continue;
		}
		if (extraDoc || row[3] == null) continue;
		const one = signatureAt(row, 3);
		sumLeaf(row, 3, one.signature);
		signed.push(one);
	}
	finishRecord();

	// Signatures of records that do not exist: rule 1 names them, their leases are still checked.
	const orphanRange = range("s.recordId", task);
	const orphans = statement(
		current,
		`SELECT ${columns} FROM rec.signatures s ${leaseJoin(task)} WHERE ${orphanRange.where} AND NOT EXISTS (SELECT 1 FROM rec.records r WHERE r.id = s.recordId) ORDER BY s.recordId${task.unique ? "" : ", s.rowid"}`,
	);
	let orphaned: Signed[] = [];
	const finishOrphans = () => {
		if (!orphaned.length) return;
		const [first] = orphaned;
		findings.add(
			"one-signature-per-record",
			`${orphaned.length} signature(s) for unknown record ${first.signature.recordId} (${signatureRef(first.signature)})`,
			{
				recordId: first.signature.recordId,
				batchId: first.signature.batchId,
			},
		);
		for (const { signature, lease } of orphaned)
			checkSignatureInLease(signature, lease, task.clockToleranceMs, findings);
		signatures += orphaned.length;
		orphaned = [];
	};
	for (const row of orphans.iterate(...orphanRange.args) as Iterable<unknown[]>) {
		if (orphaned.length && orphaned[0].signature.recordId !== row[0]) finishOrphans();
		const one = signatureAt(row, 0);
		sumLeaf(row, 0, one.signature);
		orphaned.push(one);
	}
	finishOrphans();
	return {
		records,
		signatures,
		valid: 0,
		unsigned,
		pending,
		findings: findings.data(),
		...(sum ? { logged: sum.data() } : {}),
	};
}

/** The verification floor: each signature of the range verified, nothing else checked. */
function verifyRange(task: RangeTask, current: Session): RangeResult {
	const { keys, verify } = current.verifier;
	const nodeCryptoKeys = current.nodeCryptoKeys;
	const recordRange = range("r.id", task);
	const rows = statement(
		current,
		`SELECT r.id, r.data, s.keyId, s.jws FROM rec.records r JOIN rec.signatures s ON s.recordId = r.id WHERE ${recordRange.where}`,
	);
	let signatures = 0;
	let valid = 0;
	for (const [id, data, keyId, jws] of rows.iterate(...recordRange.args) as Iterable<
		[string, string, string, string]
	>) {
		signatures++;
		const [header, , signature] = jws.split(".");
		if (!signature) continue;
		if (nodeCryptoKeys) {
			const key = nodeCryptoKeys.get(keyId);
			if (
				key &&
				nodeCryptoVerify(
					null,
					signingInput(header, id, data),
					key,
					Buffer.from(signature, "base64url"),
				)
			)
				valid++;
		} else {
			const key = keys.get(keyId);
			if (
				key &&
				verify(Buffer.from(signature, "base64url"), signingInput(header, id, data), key)
			)
				valid++;
		}
	}
	return { records: signatures, signatures, valid, findings: null };
}

export default async function checkRange(task: RangeTask): Promise<RangeResult> {
	sodium ??= await importSodium();
	const current = open(task, sodium);
	return task.kind === "audit" ? auditRange(task, current) : verifyRange(task, current);
}
