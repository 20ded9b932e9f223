/**
 * One record checked offline (docs/design.md §9.3, `npm run verify`): its signature's leaf is in
 * the signature log under a checkpoint that opens with the log's verifier key. From a proof saved
 * from GET /api/records/:id/proof, or from an export, where the proof is computed from the
 * export's leaf hashes against its latest checkpoint or one kept elsewhere.
 */
import type { InclusionProofView } from "../contract";
import { openCheckpoint } from "../tlog/checkpoint";
import { signatureLeaf } from "../tlog/leaves";
import { inclusionProof, leafHash, nodeHash, verifyInclusion, type NodeId } from "../tlog/merkle";
import { parseVerifierKey } from "../tlog/note";
import { UserError } from "../user-error";
import type { AuditDb } from "./audit-db";
import { holdsLog, leafHashes, storedCheckpoints } from "./log-tables";

export interface RecordVerdict {
	ok: boolean;
	/** What was checked, or why it failed. */
	message: string;
}

/** Checks a proof as GET /api/records/:id/proof answers it, with the signature log's verifier key. */
export function verifyProof(proof: InclusionProofView, verifierKey: string): RecordVerdict {
	const fail = (why: string) => ({ ok: false, message: `Record ${proof.recordId}: ${why}` });
	if (!proof.checkpoint) return fail("the proof carries no checkpoint to check it against");
	let checkpoint;
	try {
		checkpoint = openCheckpoint(proof.checkpoint, parseVerifierKey(verifierKey));
	} catch (err) {
		return fail(`its checkpoint does not verify: ${(err as Error).message}`);
	}
	let leaf: unknown[];
	try {
		leaf = JSON.parse(proof.leaf);
	} catch {
		return fail("its leaf is not JSON");
	}
	if (!Array.isArray(leaf) || leaf[1] !== proof.recordId)
		return fail("its leaf is not the signature of this record");
	if (checkpoint.size !== proof.treeSize)
		return fail(
			`the proof is for ${proof.treeSize} leaves, its checkpoint has ${checkpoint.size}`,
		);
	const path = proof.proof.map((hash) => Buffer.from(hash, "base64"));
	if (
		!verifyInclusion(
			leafHash(proof.leaf),
			proof.logIndex,
			proof.treeSize,
			path,
			checkpoint.root,
		)
	)
		return fail(
			`its leaf is not leaf ${proof.logIndex} of the log under the checkpoint of ${checkpoint.size}`,
		);
	return {
		ok: true,
		message: `Record ${proof.recordId}: its signature is leaf ${proof.logIndex} of ${checkpoint.origin}, under the checkpoint of ${checkpoint.size} leaves signed by ${verifierKey}`,
	};
}

/** The subtree hashes of the first leaves, computed from them (offline: no stored nodes). */
function fromLeaves(leaves: Buffer[]) {
	const hash = ({ level, index }: NodeId): Buffer => {
		if (level === 0) return leaves[index];
		return nodeHash(
			hash({ level: level - 1, index: 2 * index }),
			hash({ level: level - 1, index: 2 * index + 1 }),
		);
	};
	return (nodes: NodeId[]) => nodes.map(hash);
}

/**
 * The proof of `recordId` from an export's audit database: against `checkpointNote` when given,
 * else the largest checkpoint the export holds that opens with the key.
 */
export async function proofFromExport(
	db: AuditDb,
	recordId: string,
	verifierKey: string,
	checkpointNote?: string,
): Promise<InclusionProofView> {
	if (!holdsLog(db.sql, "signatures"))
		throw new UserError("This export holds no signature log (it predates the logs)");
	const row = db.sql
		.prepare(
			"SELECT recordId, keyId, batchId, leaseId, jws, signedAt, logIndex FROM rec.signatures WHERE recordId = ?",
		)
		.get(recordId) as (Parameters<typeof signatureLeaf>[0] & { logIndex: unknown }) | undefined;
	if (!row) throw new UserError(`The export holds no signature of record ${recordId}`);
	const verifier = parseVerifierKey(verifierKey);
	const notes = checkpointNote
		? [checkpointNote]
		: storedCheckpoints(db.sql, "signatures")
				.map((c) => c.note)
				.reverse();
	const note = notes.find((candidate) => {
		try {
			openCheckpoint(candidate, verifier);
			return true;
		} catch {
			return false;
		}
	});
	const logIndex = typeof row.logIndex === "number" ? row.logIndex : -1;
	const size = note ? openCheckpoint(note, verifier).size : 0;
	const leaves: Buffer[] = [];
	for (const hash of leafHashes(db.sql, "signatures")) {
		if (leaves.length >= size) break;
		leaves.push(Buffer.from(hash));
	}
	const inTree = logIndex >= 0 && logIndex < Math.min(size, leaves.length);
	return {
		recordId,
		origin: verifier.name,
		logIndex,
		treeSize: size,
		leaf: signatureLeaf(row),
		proof: inTree
			? (await inclusionProof(logIndex, size, fromLeaves(leaves))).map((h) =>
					h.toString("base64"),
				)
			: [],
		checkpoint: note ?? null,
	};
}
