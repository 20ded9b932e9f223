/**
 * Dispatch tickets: the batcher's signed word that a batch is one it recorded. A compact JWS
 * (typ `dispatch-ticket`) made with the batcher's enrolled credential, binding the run, the
 * batch id, a digest of its records (ids and data), the ids of each piece its signatures are
 * stored in, the signer node it is sent to, and an expiry.
 *
 * The signer checks that the ticket is for itself and for exactly the records it was handed,
 * then hands it to the keyring with its lease request; the keyring checks the signature
 * against the enrolled batchers, that the proven signer is the node it names, and takes each
 * ticket once. A ticket read off the bus is worth nothing: it names one signer node, one
 * batch's exact records, and it is spent at its first use.
 *
 * The batcher's credential also closes batches at records (a close proof, below): records
 * settles a batch whose signer is gone only when the batcher asks.
 */
import type { KeyObject } from "node:crypto";
import { DomainError, type ErrorType } from "../errors";
import type { RecordPayload } from "../contract";
import { idChunkDigests, recordsDigest, sealRecords } from "./batch-digest";
import { parseJws, signDetached, verifyDetached } from "./compact-jws";
import { signForKeyring } from "./request-mac";
import type { SignerCredential } from "./credential";

export const TICKET_TYPE = "dispatch-ticket";

export interface TicketClaims {
	run: string;
	/** The batch: also the ticket's id, taken once. */
	bid: string;
	/** The signer node it is sent to: the only holder it lets lease a key. */
	node: string;
	/** recordsDigest of the batch's records. */
	rd: string;
	/** idChunkDigests of its record ids: what records takes signatures for. */
	ids: string[];
	iat: number;
	exp: number;
}

export interface TicketRequest {
	runId: string;
	batchId: string;
	records: RecordPayload[];
	signer: string;
	/** How long the ticket may be used for (the batch's sign timeout). */
	ttlMs: number;
}

/**
 * A ticket for the batch; its records' digest is remembered for the checks of this process.
 * Under the batcher's request MAC key for the keyring when given (HS256, request-mac.ts), else
 * signed with its Ed25519 key.
 */
export function makeTicket(
	credential: SignerCredential,
	request: TicketRequest,
	now = Date.now(),
	macKey: Uint8Array | null = null,
): string {
	const claims: TicketClaims = {
		run: request.runId,
		bid: request.batchId,
		node: request.signer,
		rd: sealRecords(request.records),
		ids: idChunkDigests(request.records.map((record) => record.id)),
		iat: now,
		exp: now + request.ttlMs,
	};
	return signForKeyring(credential, TICKET_TYPE, claims, macKey);
}

/** A request to act on a batch the batcher did not send: 403, logged with the caller's node. */
export class BatchRefusedError extends DomainError {
	constructor(reason: string, type: ErrorType, data: Record<string, unknown> = {}) {
		super(
			type,
			`Refused: ${reason}. A signer signs only a batch the batcher recorded and sent to it`,
			data,
		);
	}
}

/**
 * The signer's side: the ticket is for this node, this batch and exactly these records (its
 * signature is the keyring's to check). Returns the ticket's claims.
 */
export function checkTicketForBatch(
	ticket: unknown,
	batch: { batchId: string; runId: string; records: RecordPayload[] },
	nodeID: string,
): TicketClaims {
	if (ticket === undefined || ticket === null || ticket === "")
		throw new BatchRefusedError(
			"signer.signBatch carries no dispatch ticket",
			"DISPATCH_TICKET_MISSING",
		);
	const parsed = parseJws<TicketClaims>(ticket);
	if (!parsed || parsed.header.typ !== TICKET_TYPE)
		throw new BatchRefusedError("the dispatch ticket is not one", "DISPATCH_TICKET_INVALID");
	const { claims } = parsed;
	const invalid = (reason: string) =>
		new BatchRefusedError(reason, "DISPATCH_TICKET_INVALID", { batchId: batch.batchId });
	if (claims.node !== nodeID)
		throw invalid(`the dispatch ticket is for node ${String(claims.node)}, not ${nodeID}`);
	if (claims.bid !== batch.batchId || claims.run !== batch.runId)
		throw invalid(
			`the dispatch ticket is for batch ${String(claims.bid)} of ${String(claims.run)}, not ${batch.batchId} of ${batch.runId}`,
		);
	if (claims.rd !== recordsDigest(batch.records))
		throw invalid("the records are not the ones the dispatch ticket names");
	if (typeof claims.exp !== "number" || claims.exp < Date.now())
		throw invalid("the dispatch ticket has expired");
	return claims;
}

const closeStatement = (batchId: string) => `record-signer close v1\n${batchId}`;

/** The batcher's proof for closing a batch at records: its credential's signature over the batch id. */
export function makeCloseProof(credential: SignerCredential, batchId: string): string {
	return signDetached(credential.privateKey, closeStatement(batchId));
}

/** Whether `proof` closes `batchId` with the batcher key `publicKey`. */
export function checkCloseProof(publicKey: KeyObject, batchId: string, proof: unknown): boolean {
	return verifyDetached(publicKey, closeStatement(batchId), proof);
}
