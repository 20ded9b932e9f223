/**
 * A record's inclusion proof in the signature log (docs/design.md §8.4, GET
 * /api/records/:id/proof): its signature's leaf, the leaf's index, and the audit path to the root
 * of a signed checkpoint, which anyone can check with the log's verifier key alone.
 */
import type { InclusionProofView } from "../contract";
import { DomainError } from "../errors";
import { signatureLeaf } from "../tlog/leaves";
import type { LogReads } from "../tlog/log-reads";
import type { RecordsStore } from "./store";

export async function signatureInclusion(
	store: RecordsStore,
	reads: LogReads,
	recordId: string,
	size?: number,
): Promise<InclusionProofView> {
	const logged = await store.loggedSignature(recordId);
	if (!logged) {
		if (!(await store.record(recordId)))
			throw new DomainError("RECORD_NOT_FOUND", `Record "${recordId}" not found`, {
				id: recordId,
			});
		throw new DomainError("SIGNATURE_NOT_FOUND", `Record "${recordId}" is not signed`, {
			id: recordId,
		});
	}
	if (logged.logIndex === null)
		throw new DomainError(
			"NOT_IN_LOG",
			`The signature of record "${recordId}" is not in the signature log`,
			{ id: recordId },
		);
	const inclusion = await reads.inclusion(logged.logIndex, size);
	return { recordId, ...inclusion, leaf: signatureLeaf(logged) };
}
