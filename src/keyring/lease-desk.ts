/**
 * The keyring's counter for lease requests over the bus: it admits each request (a signer
 * proof from an enrolled signer, and for an acquire the batch's dispatch ticket from an enrolled
 * batcher, naming the proven node), hands it to the keyring, and answers a grant or a renewal
 * with a lease token for records. It admits an operator's key change (docs/design.md §5.8) on
 * an operator proof made with an enrolled batcher credential. A refusal is a 403, logged with
 * the caller's node id.
 */
import type {
	AcquireParams,
	AddKeysParams,
	KeyChangeParams,
	KeyInfo,
	Lease,
	LeaseChange,
	LeaseRef,
	MasterKeyRotation,
	RotateMasterKeyParams,
} from "../contract";
import { busChecks } from "../identity/bus-checks";
import { issueLeaseToken, ownLeaseToken } from "../identity/lease-token";
import { operatorOp, type ProofAction } from "../identity/proof";
import type { Clock } from "../clock";
import { loggedRefusal } from "../errors";
import { CredentialGate, type ProofContext, type ProvenSigner } from "./credential-gate";
import type { Keyring } from "./keyring";
import type { KeyringStore } from "./store";

/** Who sent a request: its node as the transport says, and whether it came from this process. */
export interface Caller {
	nodeID: string;
	local: boolean;
}

export class LeaseDesk {
	/** Enrolled signers: lease requests' proofs. */
	private readonly signers: CredentialGate;
	/** Enrolled batchers: dispatch tickets. */
	private readonly batchers: CredentialGate;

	/** `clock`: the wall clock proofs are dated by (the signers'), whatever clock the leases run on. */
	constructor(
		private readonly keyring: Keyring,
		store: KeyringStore,
		clock: Clock,
		private readonly leaseGraceMs: number,
		private readonly logger: { warn(line: string): void },
	) {
		const authority = keyring.authority.privateKey;
		this.signers = new CredentialGate(store, "signer", clock, authority);
		this.batchers = new CredentialGate(store, "batcher", clock, authority);
	}

	/** Grants the least recently used free key to the proven signer, for the batch its ticket names, with the lease token records takes. */
	async acquire(
		{ sessionKey, waitMs, proof, ticket }: AcquireParams,
		caller: Caller,
	): Promise<Lease> {
		const signer = await this.admit("acquire", proof, { sessionKey: sessionKey.x }, caller);
		const batch = busChecks.on
			? await this.refusalsLogged("acquire", caller, () =>
					this.batchers.checkTicket(ticket, signer.node),
				)
			: null;
		const lease = await this.keyring.acquire({
			holder: signer.node,
			sessionKey,
			...(waitMs === undefined ? {} : { waitMs }),
		});
		const until = Date.parse(lease.expiresAt) + this.leaseGraceMs;
		const token = batch
			? issueLeaseToken(this.keyring.authority, {
					lid: lease.leaseId,
					key: lease.keyId,
					node: signer.node,
					cnf: signer.x,
					bid: batch.bid,
					ids: batch.ids,
					exp: until,
				})
			: "";
		return { ...lease, token };
	}

	/** Extends the proven holder's lease; with its current token, answers a fresh one for the new expiry. */
	async renew({ leaseId, proof, token }: LeaseRef, caller: Caller): Promise<LeaseChange> {
		await this.admit(
			"renew",
			proof,
			{ leaseId, holder: this.keyring.holderOf(leaseId) },
			caller,
		);
		const change = await this.keyring.renew(leaseId);
		const current =
			change.changed && change.expiresAt
				? ownLeaseToken(this.keyring.authority, token)
				: null;
		if (!current || current.lid !== leaseId) return change;
		const { iat: _issued, ...claims } = current;
		return {
			...change,
			token: issueLeaseToken(this.keyring.authority, {
				...claims,
				exp: Date.parse(change.expiresAt!) + this.leaseGraceMs,
			}),
		};
	}

	async release({ leaseId, proof }: LeaseRef, caller: Caller): Promise<LeaseChange> {
		await this.admit(
			"release",
			proof,
			{ leaseId, holder: this.keyring.holderOf(leaseId) },
			caller,
		);
		return this.keyring.release(leaseId);
	}

	/** Adds keys, for an operator proof of "add <count>". */
	async addKeys({ count, proof }: AddKeysParams, caller: Caller): Promise<KeyInfo[]> {
		await this.admitOperator(operatorOp("add", count), proof, caller);
		return this.keyring.addKeys(count);
	}

	/** Retires or revokes a key, for an operator proof of "retire <keyId>" or "revoke <keyId>". */
	async endKey(
		op: "retire" | "revoke",
		{ keyId, reason, proof }: KeyChangeParams,
		caller: Caller,
	): Promise<KeyInfo> {
		await this.admitOperator(operatorOp(op, keyId), proof, caller);
		return this.keyring.endKey(keyId, op === "retire" ? "retired" : "revoked", reason ?? null);
	}

	/** Rotates the master key, for an operator proof of "rotate master-key" (docs/design.md §5.8). */
	async rotateMasterKey(
		{ proof }: RotateMasterKeyParams,
		caller: Caller,
	): Promise<MasterKeyRotation> {
		await this.admitOperator(operatorOp("rotate", "master-key"), proof, caller);
		return this.keyring.rotateMasterKey();
	}

	private admitOperator(keyOp: string, proof: string, caller: Caller): Promise<ProvenSigner> {
		return this.refusalsLogged("keys", caller, () =>
			this.batchers.check("keys", proof, {
				keyOp,
				callerNode: caller.local ? null : caller.nodeID,
			}),
		);
	}

	/** The signer a lease request proves, or a 403. */
	private admit(
		action: ProofAction,
		proof: string,
		context: Omit<ProofContext, "callerNode">,
		caller: Caller,
	): Promise<ProvenSigner> {
		return this.refusalsLogged(action, caller, () =>
			this.signers.check(action, proof, {
				...context,
				callerNode: caller.local ? null : caller.nodeID,
			}),
		);
	}

	private async refusalsLogged<T>(
		action: ProofAction,
		caller: Caller,
		check: () => Promise<T>,
	): Promise<T> {
		try {
			return await check();
		} catch (err) {
			throw loggedRefusal(err, this.logger, `keyring.${action}`, caller.nodeID);
		}
	}
}
