/**
 * A batch's calls on the bus (src/signer/signer.ts `BatchCalls`): every one goes out under the
 * request that carries the batch, and `signal` gives it up (src/broker/lost-requests.ts). Lease
 * requests carry a proof made with this signer's credential, the acquire the batch's dispatch
 * ticket, and each stored piece the holder's store proof (docs/design.md §6).
 */
import type { CallingOptions } from "moleculer";
import type { JWK } from "jose";
import { Actions, call, type Caller } from "../contract";
import { busChecks } from "../identity/bus-checks";
import type { SignerCredential } from "../identity/credential";
import { makeStoreProof } from "../identity/lease-token";
import { makeProof } from "../identity/proof";
import type { BatchCalls } from "./signer";

export interface BatchOnBus {
	/** The request that carries the batch: its calls go out under it. */
	request: Caller;
	/** This signer's node id, which its proofs name. */
	node: string;
	/** The batch's dispatch ticket, handed on with the acquire. */
	ticket: string;
	/** The public half of this process's X25519 session key: the leased key is sealed to it. */
	sessionKey: JWK;
	credential: SignerCredential;
	/** Its request MAC key for the keyring (docs/design.md §6.9), or null: its proofs are then Ed25519. */
	macKey: Uint8Array | null;
}

export function batchCallsOnBus(batch: BatchOnBus): BatchCalls {
	const { request, node, ticket, credential, macKey } = batch;
	const proof = (claims: Parameters<typeof makeProof>[1]) =>
		makeProof(credential, claims, Date.now(), macKey);
	const options = (timeout: number, signal: AbortSignal) =>
		({ timeout, signal }) as CallingOptions;
	const sessionKey = { kty: "OKP", crv: "X25519", x: String(batch.sessionKey.x) } as const;
	return {
		storeSignatures: (piece, timeout, signal) =>
			call(
				request,
				Actions.records.storeSignatures,
				{ ...piece, proof: busChecks.on ? makeStoreProof(credential, piece) : "" },
				options(timeout, signal),
			),
		acquire: (waitMs, timeout, signal) =>
			call(
				request,
				Actions.keyring.acquire,
				{
					sessionKey,
					waitMs,
					ticket,
					proof: proof({ act: "acquire", node, sk: sessionKey.x }),
				},
				options(timeout, signal),
			),
		renew: (leaseId, token, timeout, signal) =>
			call(
				request,
				Actions.keyring.renew,
				{
					leaseId,
					token,
					proof: proof({ act: "renew", node, lid: leaseId }),
				},
				options(timeout, signal),
			),
		release: (leaseId, timeout, signal) =>
			call(
				request,
				Actions.keyring.release,
				{ leaseId, proof: proof({ act: "release", node, lid: leaseId }) },
				options(timeout, signal),
			),
	};
}
