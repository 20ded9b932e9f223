/**
 * Lease requests as an enrolled signer makes them: each carries a proof signed with a signer
 * credential (src/identity/proof.ts), and an acquire the dispatch ticket of a batch naming the
 * node (src/identity/ticket.ts). By default the credentials of this process's in-memory keyring
 * (`DATA_DIR=""`), which that keyring enrols by itself.
 */
import { randomUUID } from "node:crypto";
import type { JWK } from "jose";
import type { RecordPayload } from "../../src/contract";
import { localCredential, type SignerCredential } from "../../src/identity/credential";
import { makeProof, operatorOp } from "../../src/identity/proof";
import { makeTicket } from "../../src/identity/ticket";

/** A dispatch ticket for `records` (one made-up record by default), sent to `node`. */
export function ticketFor(
	node: string,
	records: RecordPayload[] = [{ id: "rec-x", data: "x" }],
	batchId = `test-batch-${randomUUID()}`,
	batcher: SignerCredential = localCredential("", "batcher"),
): string {
	return makeTicket(batcher, {
		runId: "test-run",
		batchId,
		records,
		signer: node,
		ttlMs: 60_000,
	});
}

export function signerRequests(
	credential: SignerCredential = localCredential(""),
	batcher: SignerCredential = localCredential("", "batcher"),
) {
	return {
		acquire: (node: string, sessionKey: JWK, waitMs?: number) => ({
			sessionKey,
			proof: makeProof(credential, { act: "acquire", node, sk: sessionKey.x! }),
			ticket: ticketFor(node, undefined, undefined, batcher),
			...(waitMs === undefined ? {} : { waitMs }),
		}),
		renew: (node: string, leaseId: string) => ({
			leaseId,
			proof: makeProof(credential, { act: "renew", node, lid: leaseId }),
		}),
		release: (node: string, leaseId: string) => ({
			leaseId,
			proof: makeProof(credential, { act: "release", node, lid: leaseId }),
		}),
	};
}

/** An operator's key changes (docs/design.md §5.8), each with an operator proof made with a batcher credential. */
export function operatorRequests(
	batcher: SignerCredential = localCredential("", "batcher"),
	node = "operator-node",
) {
	const proof = (op: string) => makeProof(batcher, { act: "keys", node, op });
	return {
		add: (count: number) => ({ count, proof: proof(operatorOp("add", count)) }),
		retire: (keyId: string, reason?: string) => ({
			keyId,
			...(reason ? { reason } : {}),
			proof: proof(operatorOp("retire", keyId)),
		}),
		revoke: (keyId: string, reason: string) => ({
			keyId,
			reason,
			proof: proof(operatorOp("revoke", keyId)),
		}),
	};
}
