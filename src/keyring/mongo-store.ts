/**
 * The keyring's store on MongoDB. Open leases carry `open: true` (removed at their end): a
 * unique index over the open leases' keyIds is how MongoDB refuses a second open lease of a
 * key, since a partial index cannot select "end is null".
 *
 * The keyring role is one document (`keyring`, `_id: "role"`) taken by compare-and-set on its
 * epoch. Without multi-document transactions, a grant or an end first advances the role's
 * `seq` conditionally on the epoch, then writes the lease: a stale keyring is refused at that
 * first step. One whose check passed just before a takeover can still land that one write; the
 * unique open-lease index then refuses the new keyring's grant of the same key, and a reclaim
 * is conditional on the stored expiry, so neither can end up with two holders of a key.
 */
import type { KeyDoc, LeaseDoc, Page } from "../contract";
import type { CredentialRole } from "../identity/credential";
import { connectMongo, isDuplicateKey, type MongoCollection, type MongoConnection } from "../store/mongo";
import { DuplicateLeaseError, FencedError, publicKeyDoc, sameSignerKey, type EnrolledSigner, type Enrolment, type KeyringStore, type LeaseEnding, type LeaseLogSummary, type RoleClaim, type RoleHolder } from "./store";

function leaseDoc(row: LeaseDoc & { open?: boolean }): LeaseDoc {
	const { open: _open, ...lease } = row;
	return lease;
}

export class MongoKeyringStore implements KeyringStore {
	private constructor(
		private readonly connection: MongoConnection,
		private readonly keysOf: MongoCollection,
		private readonly leasesOf: MongoCollection,
		private readonly roleOf: MongoCollection,
		/** Each role's enrolled credentials: `signers`, `batchers`. */
		private readonly enrolmentsOf: Record<CredentialRole, MongoCollection>
	) {}

	/** Connects and creates the indexes: for the owning service. */
	static async open(uri: string, service: { broker: unknown; logger: unknown }): Promise<MongoKeyringStore> {
		const store = MongoKeyringStore.over(await connectMongo(uri, service, "keys"));
		const { keysOf: keys, leasesOf: leases } = store;
		await keys.createIndex({ keyId: 1 }, { unique: true, name: "keys_key" });
		await leases.createIndex({ leaseId: 1 }, { unique: true, name: "leases_lease" });
		await leases.createIndex({ grantSeq: 1 }, { unique: true, name: "leases_grant_seq" });
		await leases.createIndex({ endSeq: 1 }, { unique: true, name: "leases_end_seq", partialFilterExpression: { endSeq: { $type: "number" } } });
		await leases.createIndex({ keyId: 1 }, { unique: true, name: "leases_open_per_key", partialFilterExpression: { open: true } });
		return store;
	}

	/** Over an open connection, creating nothing: what the read-only audit pages through. */
	static over(connection: MongoConnection): MongoKeyringStore {
		return new MongoKeyringStore(connection, connection.db.collection("keys"), connection.db.collection("leases"), connection.db.collection("keyring"), {
			signer: connection.db.collection("signers"),
			batcher: connection.db.collection("batchers")
		});
	}

	async claimRole(claim: RoleClaim): Promise<{ claimed: RoleHolder } | { heldBy: RoleHolder }> {
		const fields = { holder: claim.holder, host: claim.host, pid: claim.pid, since: claim.now, expiresAt: claim.expiresAt };
		for (let attempt = 0; attempt < 5; attempt++) {
			const current: (RoleHolder & { _id: string }) | null = await this.roleOf.findOne({ _id: "role" });
			if (!current) {
				try {
					await this.roleOf.insertOne({ _id: "role", epoch: 1, seq: 0, ...fields });
					return { claimed: { epoch: 1, ...fields } };
				} catch (err) {
					if (!isDuplicateKey(err)) throw err;
					continue; // another keyring created it first: look again
				}
			}
			const { _id, ...holder } = current;
			if (!claim.mayTakeOver(holder)) return { heldBy: holder };
			const taken = await this.roleOf.updateOne({ _id: "role", epoch: current.epoch }, { $set: { epoch: current.epoch + 1, ...fields } });
			if (taken.matchedCount === 1) return { claimed: { epoch: current.epoch + 1, ...fields } };
		}
		throw new Error("the keyring role kept changing hands while this keyring claimed it; start it again");
	}

	async renewRole(epoch: number, expiresAt: string): Promise<boolean> {
		return (await this.roleOf.updateOne({ _id: "role", epoch }, { $set: { expiresAt } })).matchedCount === 1;
	}

	async releaseRole(epoch: number, now: string): Promise<void> {
		await this.roleOf.updateOne({ _id: "role", epoch }, { $set: { expiresAt: now } });
	}

	/** Advances the role's seq while `epoch` holds it; a stale keyring is refused here, before it writes. */
	private async fence(epoch: number, seq: number): Promise<void> {
		const held = await this.roleOf.updateOne({ _id: "role", epoch }, { $max: { seq } });
		if (held.matchedCount !== 1) throw new FencedError(epoch);
	}

	keys(): Promise<KeyDoc[]> {
		return this.keysOf.find({}).sort({ keyId: 1 }).toArray();
	}

	async insertKeys(docs: KeyDoc[]): Promise<void> {
		await this.keysOf.insertMany(docs.map(doc => ({ ...doc, _id: doc.keyId })), { ordered: true });
	}

	async summary(): Promise<LeaseLogSummary> {
		const open = (await this.leasesOf.find({ open: true }).sort({ grantSeq: 1 }).toArray()).map(leaseDoc);
		const lastEnd = new Map<string, number>();
		const uses = new Map<string, number>();
		for await (const row of this.leasesOf.aggregate([{ $group: { _id: "$keyId", uses: { $sum: 1 }, lastEnd: { $max: "$endSeq" } } }])) {
			uses.set(row._id, row.uses);
			if (typeof row.lastEnd === "number") lastEnd.set(row._id, row.lastEnd);
		}
		const [lastGrant] = await this.leasesOf.find({}, { projection: { grantSeq: 1 } }).sort({ grantSeq: -1 }).limit(1).toArray();
		const [lastEnded] = await this.leasesOf.find({ endSeq: { $type: "number" } }, { projection: { endSeq: 1 } }).sort({ endSeq: -1 }).limit(1).toArray();
		return { open, lastEnd, uses, lastSeq: Math.max(lastGrant?.grantSeq ?? 0, lastEnded?.endSeq ?? 0) };
	}

	async insertLease(lease: LeaseDoc, epoch: number): Promise<void> {
		await this.fence(epoch, lease.grantSeq);
		try {
			await this.leasesOf.insertOne({ ...lease, _id: lease.leaseId, ...(lease.end === null ? { open: true } : {}) });
		} catch (err) {
			throw isDuplicateKey(err) ? new DuplicateLeaseError(lease, err) : err;
		}
	}

	async renewLease(leaseId: string, expiresAt: string, epoch: number): Promise<number> {
		await this.fence(epoch, 0);
		return (await this.leasesOf.updateOne({ leaseId, open: true }, { $set: { expiresAt } })).matchedCount;
	}

	async endLease(leaseId: string, { end, endSeq, endedAt, expiredBy }: LeaseEnding, epoch: number): Promise<number> {
		await this.fence(epoch, endSeq);
		// A release ends the lease whatever its expiry; a reclaim only one whose stored expiry (renewals included) has passed.
		const query = expiredBy === undefined ? { leaseId, open: true } : { leaseId, open: true, expiresAt: { $lte: expiredBy } };
		return (await this.leasesOf.updateOne(query, { $set: { end, endSeq, endedAt }, $unset: { open: "" } })).matchedCount;
	}

	async lease(leaseId: string): Promise<LeaseDoc | null> {
		const row = await this.leasesOf.findOne({ leaseId });
		return row ? leaseDoc(row) : null;
	}

	async enrolled(role: CredentialRole): Promise<EnrolledSigner[]> {
		const rows: Array<EnrolledSigner & { _id: string }> = await this.enrolmentsOf[role].find({}).sort({ _id: 1 }).toArray();
		return rows.map(({ name, publicJwk, enrolledAt, revokedAt }) => ({ name, publicJwk, enrolledAt, revokedAt: revokedAt ?? null }));
	}

	async enrol(role: CredentialRole, credential: EnrolledSigner): Promise<Enrolment> {
		const { upsertedCount } = await this.enrolmentsOf[role].updateOne({ _id: credential.name }, { $setOnInsert: { ...credential, revokedAt: null } }, { upsert: true });
		if (upsertedCount) return "enrolled";
		const existing = (await this.enrolled(role)).find(s => s.name === credential.name)!;
		return sameSignerKey(existing, credential) && !existing.revokedAt ? "already" : "name-taken";
	}

	async revoke(role: CredentialRole, name: string, at: string): Promise<boolean> {
		return (await this.enrolmentsOf[role].updateOne({ _id: name, revokedAt: null }, { $set: { revokedAt: at } })).modifiedCount === 1;
	}

	async page(collection: "keys" | "leases", after: string | undefined, limit: number): Promise<Page> {
		const of = collection === "keys" ? this.keysOf : this.leasesOf;
		const rows = await of.find(after === undefined ? {} : { _id: { $gt: after } }).sort({ _id: 1 }).limit(limit).toArray();
		const docs = collection === "keys" ? rows.map((row: KeyDoc) => publicKeyDoc(row)) : rows.map(leaseDoc);
		return { docs, next: rows.length === limit ? String(rows[rows.length - 1]._id) : null };
	}

	async ping(): Promise<void> {
		await this.connection.db.command({ ping: 1 });
	}

	async close(): Promise<void> {
		await this.connection.close();
	}
}
