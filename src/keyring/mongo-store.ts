/**
 * The keyring's store on MongoDB (a replica set: it needs transactions). Open leases carry
 * `open: true` (removed at their end): a unique index over the open leases' keyIds is how
 * MongoDB refuses a second open lease of a key, since a partial index cannot select "end is
 * null". Every document's `_id` is its natural key (a key's keyId, a lease's leaseId).
 *
 * The keyring role is one document (`keyring`, `_id: "role"`) taken by compare-and-set on its
 * epoch. Every grant, renewal and end runs in one transaction with the fence: an update of the
 * role conditional on the writer's epoch that always writes (`writes` is incremented, `seq`
 * raised). The fence and the lease write commit together or not at all, and a takeover that
 * commits while such a transaction runs conflicts with its fence (a WriteConflict, a
 * TransientTransactionError): the transaction runs again and is refused. A fence that changed
 * nothing (`$max` with a lower seq) would not conflict, hence the increment.
 *
 * Whether a claim has expired is decided by the server's clock (`$$NOW`), never by comparing
 * times that other hosts' clocks wrote: a claim is valid until `validUntil`, which the server
 * sets to its own time plus the claim's lifetime at each claim and renewal. `expiresAt` stays
 * what the holder's clock said, for people.
 *
 * Per key, the leases ever granted and the seq of the last end (what a restarted keyring needs)
 * are kept in `lease_stats`, in the same transactions as the lease writes, so `summary()` reads
 * one document per key instead of every lease. A store written before they were kept (no
 * `leaseStats` mark on the role) has them computed once from the leases.
 *
 * The lease log (docs/design.md §8.4, src/tlog/mongo-log.ts): a grant's and an end's leaves are
 * written in the transaction that writes the lease, so a lease change and its leaf commit
 * together or not at all; the tree's state in memory moves on only once the transaction
 * committed, and is read back from the database after any failed one. The keyring's lease
 * changes run one at a time (the log's `exclusive`). The leases stored before the log existed
 * enter it once, grants and ends in seq order, in one transaction with the mark that says so.
 */
import type { ClientSession, Collection, Filter } from "mongodb";
import type { TreeUpdate } from "../tlog/tree-builder";
import { keyEventsOf, type KeyDoc, type KeyEvent, type LeaseDoc, type Page } from "../contract";
import type { CredentialRole } from "../identity/credential";
import {
	assertReplicaSet,
	dropIndexIfPresent,
	ensureCollection,
	isDuplicateKey,
	openMongoStore,
	pageById,
	runTransaction,
	type MongoConnection,
} from "../store/mongo";
import { endEntry, leaseEndLeaf, leaseLeaves } from "../tlog/leaves";
import { MongoLog, mongoLogCollections } from "../tlog/mongo-log";
import {
	DuplicateLeaseError,
	FencedError,
	endedFields,
	enrolment,
	publicKeyDoc,
	type EnrolledSigner,
	type Enrolment,
	type KeyringStore,
	type LeaseEnding,
	type LeaseLogSummary,
	type ResealedKey,
	type RevokedKey,
	type RoleClaim,
	type RoleHolder,
} from "./store";

type KeyRow = KeyDoc & { _id: string };
type LeaseRow = LeaseDoc & { _id: string; open?: true };
type EnrolmentRow = EnrolledSigner & { _id: string };
/** `keyring_secrets`: the authority key sealed under the master key (`_id` "authority"). */
type SecretRow = { _id: string; sealed: string };

interface RoleRow extends RoleHolder {
	_id: string;
	/** The highest seq a fenced write carried. */
	seq: number;
	/** Fenced writes so far: incremented by each, so that each writes the role document. */
	writes?: number;
	/** Until when the claim holds, by the server's clock. Absent on a role written before it was kept. */
	validUntil?: Date;
	/** Set once `lease_stats` is kept for every lease of the store. */
	leaseStats?: boolean;
}

interface LeaseStatsRow {
	/** The key's id. */
	_id: string;
	uses?: number;
	lastEnd?: number;
}

const ROLE = "role";

/** Ended leases, as leases_end_seq's partial filter selects them (the server's "number" type alias, which the driver's types lack). */
const ENDED = { endSeq: { $type: "number" } } as unknown as Filter<LeaseRow>;

/**
 * Until when a role holds, by the server's clock. A role written before `validUntil` was kept
 * has only its holder's `expiresAt`: read as a date by the server, once, until its next claim.
 */
const VALID_UNTIL = {
	$ifNull: [
		"$validUntil",
		{ $dateFromString: { dateString: "$expiresAt", onError: "$$NOW", onNull: "$$NOW" } },
	],
};

function leaseDoc(row: LeaseRow): LeaseDoc {
	const { open: _open, ...lease } = row;
	return lease;
}

/** A URI for messages: no credentials, no options. */
function where(uri: string): string {
	return `MongoDB ${uri.replace(/\/\/[^@/]*@/, "//***@").replace(/\?.*$/, "")}`;
}

export class MongoKeyringStore implements KeyringStore {
	/** The lifetime of this store's claim of the role (the claim's expiresAt minus its now): what a renewal extends it by. */
	private roleTtlMs: number | null = null;
	/** Set when a transaction that logged failed: it may have committed, so the tree is read back first. */
	private logUnsure = false;

	private constructor(
		private readonly connection: MongoConnection,
		private readonly keysOf: Collection<KeyRow>,
		private readonly leasesOf: Collection<LeaseRow>,
		private readonly roleOf: Collection<RoleRow>,
		private readonly statsOf: Collection<LeaseStatsRow>,
		/** Each role's enrolled credentials: `signers`, `batchers`. */
		private readonly enrolmentsOf: Record<CredentialRole, Collection<EnrolmentRow>>,
		/** Every lease grant and end, in commit order (docs/design.md §8.4). */
		readonly leaseLog: MongoLog,
	) {}

	/** Connects and creates the indexes: for the owning service (and the signer CLI). */
	static async open(
		uri: string,
		service: { broker: unknown; logger: unknown },
	): Promise<MongoKeyringStore> {
		return openMongoStore(
			uri,
			service,
			"keyring",
			MongoKeyringStore.over,
			async (store, connection) => {
				const { keysOf: keys, leasesOf: leases } = store;
				await assertReplicaSet(connection, where(uri));
				await leases.createIndex(
					{ grantSeq: 1 },
					{ unique: true, name: "leases_grant_seq" },
				);
				await leases.createIndex(
					{ endSeq: 1 },
					{
						unique: true,
						name: "leases_end_seq",
						partialFilterExpression: { endSeq: { $type: "number" } },
					},
				);
				await leases.createIndex(
					{ keyId: 1 },
					{
						unique: true,
						name: "leases_open_per_key",
						partialFilterExpression: { open: true },
					},
				);
				// Earlier versions repeated `_id` in a unique index: one more index write per document, for nothing.
				await dropIndexIfPresent(keys, "keys_key");
				await dropIndexIfPresent(leases, "leases_lease");
				// The collections the transactions write to exist before any transaction runs.
				for (const name of [
					"keyring",
					"leases",
					"lease_stats",
					"keys",
					"keyring_secrets",
					...mongoLogCollections("lease_log", true),
				])
					await ensureCollection(connection.db, name);
				await store.leaseLog.createIndexes();
				await store.startLog((line) =>
					(service.logger as { info?(line: string): void }).info?.(line),
				);
			},
		);
	}

	/** Reads the tree back and, the first time the log is kept, takes in the leases stored before it. */
	private async startLog(log: (line: string) => void): Promise<void> {
		await this.leaseLog.reload();
		if (await this.leaseLog.isMigrated()) return;
		const count = await this.logged(async (session) => {
			const leases = (await this.leasesOf.find({}, { session }).toArray()).map(leaseDoc);
			const leaves = leases.flatMap(leaseLeaves).sort((a, b) => a.seq - b.seq);
			const update = this.leaseLog.prepare(leaves.map((l) => l.leaf));
			await this.leaseLog.write(
				update,
				leaves.map((l) => l.entry),
				session,
			);
			await this.leaseLog.markMigrated(leaves.length, new Date().toISOString(), session);
			return { result: leaves.length, update };
		});
		if (count) log(`The lease log took in ${count} grants and ends stored before it existed`);
	}

	/**
	 * Runs `work` in a transaction, one at a time, and moves the log on to the update it wrote
	 * once that committed (work may run again: it prepares from the state last adopted).
	 */
	private logged<T>(
		work: (session: ClientSession) => Promise<{ result: T; update: TreeUpdate | null }>,
	): Promise<T> {
		return this.leaseLog.exclusive(async () => {
			if (this.logUnsure) {
				await this.leaseLog.reload();
				this.logUnsure = false;
			}
			try {
				const { result, update } = await runTransaction(this.connection.client, work);
				if (update) this.leaseLog.adopt(update);
				return result;
			} catch (err) {
				this.logUnsure = true;
				throw err;
			}
		});
	}

	/** Over an open connection, creating nothing: what the read-only audit pages through. */
	static over(connection: MongoConnection): MongoKeyringStore {
		const { db } = connection;
		return new MongoKeyringStore(
			connection,
			db.collection<KeyRow>("keys"),
			db.collection<LeaseRow>("leases"),
			db.collection<RoleRow>("keyring"),
			db.collection<LeaseStatsRow>("lease_stats"),
			{
				signer: db.collection<EnrolmentRow>("signers"),
				batcher: db.collection<EnrolmentRow>("batchers"),
			},
			new MongoLog(db, "lease_log", { entries: true }),
		);
	}

	async claimRole(claim: RoleClaim): Promise<{ claimed: RoleHolder } | { heldBy: RoleHolder }> {
		const ttlMs = Math.max(0, Date.parse(claim.expiresAt) - Date.parse(claim.now));
		const fields = {
			holder: claim.holder,
			host: claim.host,
			pid: claim.pid,
			since: claim.now,
			expiresAt: claim.expiresAt,
		};
		// An update pipeline: `$$NOW` is the server's time; strings are literals, never field paths.
		const claimed = (epoch: number) => ({
			epoch,
			holder: { $literal: fields.holder },
			host: { $literal: fields.host },
			pid: { $literal: fields.pid },
			since: { $literal: fields.since },
			expiresAt: { $literal: fields.expiresAt },
			validUntil: { $add: ["$$NOW", ttlMs] },
		});
		for (let attempt = 0; attempt < 5; attempt++) {
			const [current] = await this.roleOf
				.aggregate<RoleRow & { remainingMs: number }>([
					{ $match: { _id: ROLE } },
					{ $set: { remainingMs: { $subtract: [VALID_UNTIL, "$$NOW"] } } },
				])
				.toArray();
			if (!current) {
				try {
					// An upsert that can only insert: an existing role (it has an epoch) is not matched, and its `_id` refuses a second one.
					await this.roleOf.updateOne(
						{ _id: ROLE, epoch: { $exists: false } },
						[{ $set: { ...claimed(1), seq: 0, writes: 0 } }],
						{ upsert: true },
					);
					this.claimed(ttlMs);
					return { claimed: { epoch: 1, ...fields } };
				} catch (err) {
					if (!isDuplicateKey(err)) throw err;
					continue; // another keyring created it first: look again
				}
			}
			const holder: RoleHolder = {
				epoch: current.epoch,
				holder: current.holder,
				host: current.host,
				pid: current.pid,
				since: current.since,
				expiresAt: current.expiresAt,
			};
			// The server's verdict on its expiry, put on the claimant's own timeline (its `now` plus what is left), so that
			// mayTakeOver's comparison with its `now` is the server's comparison; the process check is the claimant's own.
			if (
				!claim.mayTakeOver({
					...holder,
					expiresAt: new Date(
						Date.parse(claim.now) + Number(current.remainingMs),
					).toISOString(),
				})
			)
				return { heldBy: holder };
			// Taken only if nobody renewed or took it since it was read.
			const unchanged = current.validUntil
				? { validUntil: current.validUntil }
				: { validUntil: { $exists: false }, expiresAt: current.expiresAt };
			const taken = await this.roleOf.updateOne(
				{ _id: ROLE, epoch: current.epoch, ...unchanged },
				[{ $set: claimed(current.epoch + 1) }],
			);
			if (taken.matchedCount === 1) {
				this.claimed(ttlMs);
				return { claimed: { epoch: current.epoch + 1, ...fields } };
			}
		}
		throw new Error(
			"the keyring role kept changing hands while this keyring claimed it; start it again",
		);
	}

	/**
	 * This store holds the role now. Whoever held it before may have written leases (and their
	 * leaves) since the log was read at open, and can write none from now on: the tree is read
	 * back before the next logged write.
	 */
	private claimed(ttlMs: number): void {
		this.roleTtlMs = ttlMs;
		this.logUnsure = true;
	}

	async renewRole(epoch: number, expiresAt: string): Promise<boolean> {
		// Extended by the claim's lifetime from the server's now; `expiresAt` (this host's clock) is kept for people.
		const ttlMs = this.roleTtlMs ?? Math.max(0, Date.parse(expiresAt) - Date.now());
		const renewed = await this.roleOf.updateOne({ _id: ROLE, epoch }, [
			{
				$set: {
					expiresAt: { $literal: expiresAt },
					validUntil: { $add: ["$$NOW", ttlMs] },
				},
			},
		]);
		return renewed.matchedCount === 1;
	}

	async releaseRole(epoch: number, now: string): Promise<void> {
		await this.roleOf.updateOne({ _id: ROLE, epoch }, [
			{ $set: { expiresAt: { $literal: now }, validUntil: "$$NOW" } },
		]);
	}

	/**
	 * Runs `write` in one transaction with the fence: refused (FencedError) unless `epoch` holds
	 * the role. The fence always writes the role document, so it conflicts with a concurrent
	 * takeover (see the top of this file); `seq` is raised to the write's seq.
	 */
	private fenced<T>(
		epoch: number,
		seq: number,
		write: (session: ClientSession) => Promise<T>,
	): Promise<T> {
		return runTransaction(this.connection.client, async (session) => {
			await this.fence(epoch, seq, session);
			return write(session);
		});
	}

	/** The fence of a fenced write, in its transaction. */
	private async fence(epoch: number, seq: number, session: ClientSession): Promise<void> {
		const held = await this.roleOf.updateOne(
			{ _id: ROLE, epoch },
			{ $max: { seq }, $inc: { writes: 1 } },
			{ session },
		);
		if (held.matchedCount !== 1) throw new FencedError(epoch);
	}

	/** A fenced write that also appends the leaves it answers to the lease log, in its transaction. */
	private fencedAndLogged<T>(
		epoch: number,
		seq: number,
		write: (
			session: ClientSession,
		) => Promise<{ result: T; leaves: Array<{ entry: string; leaf: string }> }>,
	): Promise<T> {
		return this.logged(async (session) => {
			await this.fence(epoch, seq, session);
			const { result, leaves } = await write(session);
			if (!leaves.length) return { result, update: null };
			const update = this.leaseLog.prepare(leaves.map((l) => l.leaf));
			await this.leaseLog.write(
				update,
				leaves.map((l) => l.entry),
				session,
			);
			return { result, update };
		});
	}

	keys(): Promise<KeyDoc[]> {
		return this.keysOf.find({}).sort({ _id: 1 }).toArray();
	}

	/** The revoked keys and since when, without reading any key's sealed half (records reads them). */
	async revokedKeys(): Promise<RevokedKey[]> {
		const rows = await this.keysOf
			.find({ revokedAt: { $type: "string" } }, { projection: { _id: 1, revokedAt: 1 } })
			.toArray();
		return rows.map((row) => ({ key: String(row._id), at: row.revokedAt as string }));
	}

	async insertKeys(docs: KeyDoc[]): Promise<void> {
		await this.keysOf.insertMany(
			docs.map((doc) => ({ ...doc, _id: doc.keyId })),
			{ ordered: true },
		);
	}

	async keyEvents(): Promise<KeyEvent[]> {
		return keyEventsOf(await this.keys());
	}

	async writeKeyEvents(events: KeyEvent[], added: KeyDoc[], epoch: number): Promise<void> {
		const seq = Math.max(0, ...events.map((e) => e.seq));
		await this.fenced(epoch, seq, async (session) => {
			if (added.length)
				await this.keysOf.insertMany(
					added.map((doc) => ({ ...doc, _id: doc.keyId })),
					{ ordered: true, session },
				);
			for (const event of events)
				if (event.event !== "added")
					await this.keysOf.updateOne(
						{ _id: event.keyId },
						{ $set: endedFields(event) },
						{ session },
					);
		});
	}

	private get secretsOf(): Collection<SecretRow> {
		return this.connection.db.collection<SecretRow>("keyring_secrets");
	}

	async sealedAuthority(): Promise<string | null> {
		return (await this.secretsOf.findOne({ _id: "authority" }))?.sealed ?? null;
	}

	async keepSealedAuthority(sealed: string): Promise<void> {
		await this.secretsOf.updateOne(
			{ _id: "authority" },
			{ $setOnInsert: { sealed } },
			{ upsert: true },
		);
	}

	async reseal(keys: ResealedKey[], sealedAuthority: string, epoch: number): Promise<void> {
		await this.fenced(epoch, 0, async (session) => {
			for (const key of keys)
				await this.keysOf.updateOne(
					{ _id: key.keyId },
					{ $set: { sealedPrivateKey: key.sealedPrivateKey } },
					{ session },
				);
			await this.secretsOf.updateOne(
				{ _id: "authority" },
				{ $set: { sealed: sealedAuthority } },
				{ session },
			);
		});
	}

	async summary(): Promise<LeaseLogSummary> {
		// The open leases: at most one per key (leases_open_per_key).
		const open = (await this.leasesOf.find({ open: true }).sort({ grantSeq: 1 }).toArray()).map(
			leaseDoc,
		);
		await this.keepLeaseStats();
		const lastEnd = new Map<string, number>();
		const uses = new Map<string, number>();
		for await (const row of this.statsOf.find({})) {
			if (row.uses) uses.set(row._id, row.uses);
			if (typeof row.lastEnd === "number") lastEnd.set(row._id, row.lastEnd);
		}
		// The highest seqs: one index entry each (leases_grant_seq, leases_end_seq).
		const [lastGrant] = await this.leasesOf
			.find({}, { projection: { grantSeq: 1 } })
			.sort({ grantSeq: -1 })
			.limit(1)
			.toArray();
		const [lastEnded] = await this.leasesOf
			.find(ENDED, { projection: { endSeq: 1 } })
			.sort({ endSeq: -1 })
			.limit(1)
			.toArray();
		// Key events: a handful of keys, read whole.
		const lastKeyEvent = (await this.keyEvents()).at(-1);
		return {
			open,
			lastEnd,
			uses,
			lastSeq: Math.max(
				lastGrant?.grantSeq ?? 0,
				lastEnded?.endSeq ?? 0,
				lastKeyEvent?.seq ?? 0,
			),
		};
	}

	/**
	 * Computes `lease_stats` from the leases, once, for a store written before they were kept:
	 * in one transaction that also marks the role, so a fenced write meanwhile conflicts with it.
	 */
	private async keepLeaseStats(): Promise<void> {
		if (
			(await this.roleOf.findOne({ _id: ROLE }, { projection: { leaseStats: 1 } }))
				?.leaseStats
		)
			return;
		await runTransaction(this.connection.client, async (session) => {
			const perKey = await this.leasesOf
				.aggregate<{ _id: string; uses: number; lastEnd: number | null }>(
					[
						{
							$group: {
								_id: "$keyId",
								uses: { $sum: 1 },
								lastEnd: { $max: "$endSeq" },
							},
						},
					],
					{ session },
				)
				.toArray();
			await this.statsOf.deleteMany({}, { session });
			if (perKey.length)
				await this.statsOf.insertMany(
					perKey.map((k) => ({
						_id: k._id,
						uses: k.uses,
						...(typeof k.lastEnd === "number" ? { lastEnd: k.lastEnd } : {}),
					})),
					{ session },
				);
			await this.roleOf.updateOne({ _id: ROLE }, { $set: { leaseStats: true } }, { session });
		});
	}

	async insertLease(lease: LeaseDoc, epoch: number): Promise<void> {
		try {
			await this.fencedAndLogged(epoch, lease.grantSeq, async (session) => {
				await this.leasesOf.insertOne(
					{
						...lease,
						_id: lease.leaseId,
						...(lease.end === null ? { open: true as const } : {}),
					},
					{ session },
				);
				const ended =
					typeof lease.endSeq === "number" ? { $max: { lastEnd: lease.endSeq } } : {};
				await this.statsOf.updateOne(
					{ _id: lease.keyId },
					{ $inc: { uses: 1 }, ...ended },
					{ upsert: true, session },
				);
				return { result: undefined, leaves: leaseLeaves(lease) };
			});
		} catch (err) {
			// Refused by `_id` (its leaseId), leases_grant_seq or leases_open_per_key; nothing of the transaction was written.
			throw isDuplicateKey(err) ? new DuplicateLeaseError(lease, err) : err;
		}
	}

	async renewLease(leaseId: string, expiresAt: string, epoch: number): Promise<number> {
		return this.fenced(
			epoch,
			0,
			async (session) =>
				(
					await this.leasesOf.updateOne(
						{ _id: leaseId, open: true },
						{ $set: { expiresAt } },
						{ session },
					)
				).matchedCount,
		);
	}

	async endLease(
		leaseId: string,
		{ end, endSeq, endedAt, expiredBy }: LeaseEnding,
		epoch: number,
	): Promise<number> {
		return this.fencedAndLogged(epoch, endSeq, async (session) => {
			// A release ends the lease whatever its expiry; a reclaim only one whose stored expiry (renewals included) has passed.
			const query =
				expiredBy === undefined
					? { _id: leaseId, open: true as const }
					: { _id: leaseId, open: true as const, expiresAt: { $lte: expiredBy } };
			const ended = await this.leasesOf.findOneAndUpdate(
				query,
				{ $set: { end, endSeq, endedAt }, $unset: { open: "" } },
				{ session, projection: { keyId: 1, expiresAt: 1 } },
			);
			if (!ended) return { result: 0, leaves: [] };
			await this.statsOf.updateOne(
				{ _id: ended.keyId },
				{ $max: { lastEnd: endSeq } },
				{ upsert: true, session },
			);
			const leaf = leaseEndLeaf({
				leaseId,
				keyId: ended.keyId,
				endSeq,
				endedAt,
				end,
				expiresAt: ended.expiresAt,
			});
			return { result: 1, leaves: [{ entry: endEntry(leaseId), leaf }] };
		});
	}

	/** Each lease write is acknowledged (majority, journaled: src/store/mongo.ts) before it returns: nothing waits. */
	async durable(): Promise<void> {}

	async lease(leaseId: string): Promise<LeaseDoc | null> {
		const row = await this.leasesOf.findOne({ _id: leaseId });
		return row ? leaseDoc(row) : null;
	}

	async enrolled(role: CredentialRole): Promise<EnrolledSigner[]> {
		const rows = await this.enrolmentsOf[role].find({}).sort({ _id: 1 }).toArray();
		return rows.map(({ name, publicJwk, enrolledAt, revokedAt }) => ({
			name,
			publicJwk,
			enrolledAt,
			revokedAt: revokedAt ?? null,
		}));
	}

	async enrol(role: CredentialRole, credential: EnrolledSigner): Promise<Enrolment> {
		const { upsertedCount } = await this.enrolmentsOf[role].updateOne(
			{ _id: credential.name },
			{ $setOnInsert: { ...credential, revokedAt: null } },
			{ upsert: true },
		);
		return enrolment(this, role, credential, upsertedCount > 0);
	}

	async revoke(role: CredentialRole, name: string, at: string): Promise<boolean> {
		return (
			(
				await this.enrolmentsOf[role].updateOne(
					{ _id: name, revokedAt: null },
					{ $set: { revokedAt: at } },
				)
			).modifiedCount === 1
		);
	}

	async page(
		collection: "keys" | "leases",
		after: string | undefined,
		limit: number,
	): Promise<Page> {
		if (collection === "keys") {
			const keys = await pageById(this.keysOf, after, limit);
			return { docs: keys.docs.map((row) => publicKeyDoc(row)), next: keys.next };
		}
		const leases = await pageById(this.leasesOf, after, limit);
		return { docs: leases.docs.map(leaseDoc), next: leases.next };
	}

	async ping(): Promise<void> {
		await this.connection.db.command({ ping: 1 });
	}

	async close(): Promise<void> {
		await this.connection.close();
	}
}
