/**
 * Lease requests as an enrolled signer makes them: each carries a proof signed with a signer
 * credential (src/identity/proof.ts). By default the credential of this process's in-memory
 * keyring (`DATA_DIR=""`), which that keyring enrols by itself.
 */
import type { JWK } from "jose";
import { localCredential, type SignerCredential } from "../../src/identity/credential";
import { makeProof } from "../../src/identity/proof";

export function signerRequests(credential: SignerCredential = localCredential("")) {
	return {
		acquire: (node: string, sessionKey: JWK, waitMs?: number) => ({
			sessionKey,
			proof: makeProof(credential, { act: "acquire", node, sk: sessionKey.x! }),
			...(waitMs === undefined ? {} : { waitMs })
		}),
		renew: (node: string, leaseId: string) => ({ leaseId, proof: makeProof(credential, { act: "renew", node, lid: leaseId }) }),
		release: (node: string, leaseId: string) => ({ leaseId, proof: makeProof(credential, { act: "release", node, lid: leaseId }) })
	};
}
