/**
 * The keyring's store on MongoDB. Open leases carry `open: true` (removed at their end): a
 * unique index over the open leases' keyIds is how MongoDB refuses a second open lease of a
 * key, since a partial index cannot select "end is null".
 */
import type { KeyDoc, LeaseDoc, LeaseEnd, Page } from "../contract";
import { connectMongo, isDuplicateKey, type MongoCollection, type MongoConnection } from "../store/mongo";
import { DuplicateLeaseError, publicKeyDoc, type KeyringStore, type LeaseLogSummary } from "./store";

function leaseDoc(row: LeaseDoc & { open?: boolean }): LeaseDoc {
	const { open: _open, ...lease } = row;
	return lease;
}

export class MongoKeyringStore implements KeyringStore {
	private constructor(private readonly connection: MongoConnection, private readonly keysOf: MongoCollection, private readonly leasesOf: MongoCollection) {}

	static async open(uri: string, service: { broker: unknown; logger: unknown }): Promise<MongoKeyringStore> {
		const connection = await connectMongo(uri, service, "keys");
		const keys = connection.db.collection("keys");
		const leases = connection.db.collection("leases");
		await keys.createIndex({ keyId: 1 }, { unique: true, name: "keys_key" });
		await leases.createIndex({ leaseId: 1 }, { unique: true, name: "leases_lease" });
		await leases.createIndex({ grantSeq: 1 }, { unique: true, name: "leases_grant_seq" });
		await leases.createIndex({ endSeq: 1 }, { unique: true, name: "leases_end_seq", partialFilterExpression: { endSeq: { $type: "number" } } });
		await leases.createIndex({ keyId: 1 }, { unique: true, name: "leases_open_per_key", partialFilterExpression: { open: true } });
		return new MongoKeyringStore(connection, keys, leases);
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

	async insertLease(lease: LeaseDoc): Promise<void> {
		try {
			await this.leasesOf.insertOne({ ...lease, _id: lease.leaseId, ...(lease.end === null ? { open: true } : {}) });
		} catch (err) {
			throw isDuplicateKey(err) ? new DuplicateLeaseError(lease, err) : err;
		}
	}

	async renewLease(leaseId: string, expiresAt: string): Promise<number> {
		return (await this.leasesOf.updateOne({ leaseId, open: true }, { $set: { expiresAt } })).matchedCount;
	}

	async endLease(leaseId: string, { end, endSeq, endedAt }: { end: LeaseEnd; endSeq: number; endedAt: string }): Promise<number> {
		return (await this.leasesOf.updateOne({ leaseId, open: true }, { $set: { end, endSeq, endedAt }, $unset: { open: "" } })).matchedCount;
	}

	async lease(leaseId: string): Promise<LeaseDoc | null> {
		const row = await this.leasesOf.findOne({ leaseId });
		return row ? leaseDoc(row) : null;
	}

	async page(collection: "keys" | "leases", after: string | undefined, limit: number): Promise<Page> {
		const of = collection === "keys" ? this.keysOf : this.leasesOf;
		const rows = await of.find(after === undefined ? {} : { _id: { $gt: after } }).sort({ _id: 1 }).limit(limit).toArray();
		const docs = collection === "keys" ? rows.map((row: KeyDoc) => publicKeyDoc(row)) : rows.map(leaseDoc);
		return { docs, next: rows.length === limit ? String(rows[rows.length - 1]._id) : null };
	}

	async close(): Promise<void> {
		await this.connection.close();
	}
}
