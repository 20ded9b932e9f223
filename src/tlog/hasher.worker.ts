/**
 * The signature log's hashing thread (src/tlog/signature-hasher.ts): takes the pieces records
 * stored, in commit order, makes their leaves (src/tlog/leaves.ts) or takes the leaf hashes the
 * signing threads made, and continues the tree from the state it was started with; answers each
 * piece's tiles and nodes for records to write.
 */
import { parentPort, workerData } from "node:worker_threads";
import { signatureLeaf } from "./leaves.ts";
import { TreeBuilder, type TreeState } from "./tree-builder.ts";

/**
 * A stored piece: its rows as `[[recordId, jws, signedAt], ...]` (JSON), in log order; or, for
 * one the signing threads of this process hashed, its leaf hashes (src/tlog/piece-leaves.ts).
 */
export type HashPiece =
	{ keyId: string; batchId: string; leaseId: string; rows: string } | { leafHashes: Uint8Array };

const builder = new TreeBuilder((workerData as { state: TreeState }).state);

parentPort!.on("message", (piece: HashPiece) => {
	if ("leafHashes" in piece) {
		parentPort!.postMessage(builder.appendLeafHashes(piece.leafHashes));
		return;
	}
	const { keyId, batchId, leaseId, rows } = piece;
	const leaves = (JSON.parse(rows) as Array<[string, string, string]>).map(
		([recordId, jws, signedAt]) =>
			signatureLeaf({ recordId, keyId, batchId, leaseId, jws, signedAt }),
	);
	parentPort!.postMessage(builder.append(leaves));
});
