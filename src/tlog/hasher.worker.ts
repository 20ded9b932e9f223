/**
 * The signature log's hashing thread (src/tlog/signature-hasher.ts): takes the pieces records
 * stored and did not append itself, in commit order, makes their leaves (src/tlog/leaves.ts) or
 * takes the leaf hashes the signing threads made, and continues the tree from the state it was
 * last told; answers each piece's tiles and nodes for records to write.
 */
import { parentPort } from "node:worker_threads";
import { signatureLeaf } from "./leaves.ts";
import { TreeBuilder, type TreeState } from "./tree-builder.ts";

/**
 * A stored piece: its rows as `[[recordId, jws, signedAt], ...]` (JSON), in log order; or the
 * leaf hashes the signing threads of this process made (src/tlog/piece-leaves.ts), of a piece
 * stored while others were in flight here.
 */
export type HashPiece =
	{ keyId: string; batchId: string; leaseId: string; rows: string } | { leafHashes: Uint8Array };

let builder: TreeBuilder | null = null;

parentPort!.on("message", ({ piece, state }: { piece: HashPiece; state?: TreeState }) => {
	// The tree as stored, when records appended to it since this thread's last piece.
	if (state) builder = new TreeBuilder(state);
	if ("leafHashes" in piece) {
		parentPort!.postMessage(builder!.appendLeafHashes(piece.leafHashes));
		return;
	}
	const { keyId, batchId, leaseId, rows } = piece;
	const leaves = (JSON.parse(rows) as Array<[string, string, string]>).map(
		([recordId, jws, signedAt]) =>
			signatureLeaf({ recordId, keyId, batchId, leaseId, jws, signedAt }),
	);
	parentPort!.postMessage(builder!.append(leaves));
});
