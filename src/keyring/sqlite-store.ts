/**
 * The keyring's store on the embedded SQLite file `keyring.sqlite` (WAL, synchronous = NORMAL:
 * docs/design.md §4.2): a grant is committed before the reply and survives a killed process.
 *
 * Group commit (docs/design.md §5.4): the lease writes of one turn of the event loop share one
 * transaction, begun (with the role's epoch checked) by the first of them and committed when the
 * turn ends. Each write is applied at once, in a savepoint of its own, so it fails or succeeds
 * alone and later reads see it; the keyring tells nobody of it before `durable()` resolves. A
 * commit was most of a lease's cost (two per lease, about 100 µs together); sixteen signers
 * asking at once now share a few.
 *
 * The lease log (docs/design.md §8.4): a grant's or an end's leaf is taken by its group when its
 * lease write succeeds, and the group appends its leaves, in the order of its writes, in the
 * transaction just before it commits: one tree append, one tile write and one entry write for
 * the group, not one per lease (a lease log append cost about as much as the lease row). A write
 * rolled back to its savepoint leaves no leaf; a group that fails to commit reads the log's edge
 * back from the file. A checkpoint waits for the group's commit.
 */
import { keyEventsOf, type KeyDoc, type KeyEvent, type LeaseDoc, type Page } from "../contract";
import { KEY_LIFECYCLE_COLUMNS, KEYRING_SCHEMA } from "../store/schema";
import {
	closeStore,
	ensureColumn,
	isUniqueViolation,
	openStore,
	Statements,
	transaction,
	type DatabaseSync,
} from "../store/sqlite";
import { beginImmediate } from "../store/begin-immediate";
import type { JWK } from "jose";
import { endEntry, leaseEndLeaf, leaseLeaves } from "../tlog/leaves";
import { SqliteLog } from "../tlog/sqlite-log";
import { transparencyLogs } from "../tlog/log-switch";
import type { CredentialRole } from "../identity/credential";
import { enrolment, type EnrolledSigner, type Enrolment, type RevokedKey } from "./store";

/** Where each role's enrolled credentials are (the table names are fixed, never input). */
const ENROLMENT_TABLES: Record<CredentialRole, string> = { signer: "signers", batcher: "batchers" };
import {
	DuplicateLeaseError,
	endedFields,
	FencedError,
	publicKeyDoc,
	type KeyringStore,
	type LeaseEnding,
	type LeaseLogSummary,
	type ResealedKey,
	type RoleClaim,
	type RoleHolder,
} from "./store";

const LEASE_COLUMNS = `leaseId, keyId, holder, grantSeq, grantedAt, expiresAt, endSeq, endedAt, "end"`;

type KeyRow = Omit<KeyDoc, "publicJwk" | "tokenKey"> & {
	publicJwk: string;
	tokenKey: string | null;
};

function keyDoc(row: KeyRow): KeyDoc {
	const doc: KeyDoc = {
		_id: row.keyId,
		keyId: row.keyId,
		createdAt: row.createdAt,
		publicJwk: JSON.parse(row.publicJwk),
		sealedPrivateKey: row.sealedPrivateKey,
		...(row.tokenKey ? { tokenKey: JSON.parse(row.tokenKey) } : {}),
	};
	for (const column of Object.keys(KEY_LIFECYCLE_COLUMNS) as Array<keyof KeyDoc>) {
		const value = row[column as keyof KeyRow];
		if (value !== null && value !== undefined)
			(doc as unknown as Record<string, unknown>)[column] =
				KEY_LIFECYCLE_COLUMNS[column as keyof typeof KEY_LIFECYCLE_COLUMNS] === "INTEGER"
					? Number(value)
					: value;
	}
	return doc;
}

function leaseDoc(row: Record<string, unknown>): LeaseDoc {
	return {
		_id: row.leaseId as string,
		...row,
		grantSeq: Number(row.grantSeq),
		endSeq: row.endSeq === null ? null : Number(row.endSeq),
	} as LeaseDoc;
}

type LeaseLeaf = { entry: string; leaf: string };

/** Appends leaves with their entry names (unique: nothing is logged twice). */
function appendLeaves(log: SqliteLog, leaves: LeaseLeaf[]): void {
	if (!transparencyLogs.on) return;
	log.append(
		leaves.map((l) => l.leaf),
		leaves.map((l) => l.entry),
	);
}

/**
 * Every credential of `role` enrolled in a keyring store's file: the store's own read, and what
 * another service reads through a read-only connection of its own (src/keyring/enrolments.ts).
 */
export function enrolledIn(db: DatabaseSync, role: CredentialRole): EnrolledSigner[] {
	return (
		db
			.prepare(
				`SELECT name, publicJwk, enrolledAt, revokedAt FROM ${ENROLMENT_TABLES[role]} ORDER BY name`,
			)
			.all() as Array<Record<string, string | null>>
	).map((row) => ({
		name: row.name!,
		publicJwk: JSON.parse(row.publicJwk!) as JWK,
		enrolledAt: row.enrolledAt!,
		revokedAt: row.revokedAt ?? null,
	}));
}

/**
 * The revoked keys of a keyring store and since when, as records reads them at start and then
 * every few seconds (src/keyring/enrolments.ts): none in a store an earlier version wrote,
 * which has no lifecycle columns until its keyring starts.
 */
export function revokedKeysIn(db: DatabaseSync): RevokedKey[] {
	try {
		return db
			.prepare("SELECT keyId AS key, revokedAt AS at FROM keys WHERE revokedAt IS NOT NULL")
			.all() as unknown as RevokedKey[];
	} catch (err) {
		if (/no such column/.test((err as Error).message)) return [];
		throw err;
	}
}

/** The open transaction of this turn's lease writes: its epoch, and its commit's outcome. */
interface WriteGroup {
	epoch: number;
	/** The leaves of its writes so far, in their order: appended to the lease log at its commit. */
	leaves: LeaseLeaf[];
	committed: Promise<void>;
	settle(err?: Error): void;
}

export class SqliteKeyringStore implements KeyringStore {
	private readonly statements: Statements;
	/** Every lease grant and end, in commit order (docs/design.md §8.4). */
	readonly leaseLog: SqliteLog;
	private group: WriteGroup | null = null;

	private constructor(
		private readonly db: DatabaseSync,
		private readonly dataDir: string,
		log?: (line: string) => void,
	) {
		this.statements = new Statements(db);
		this.leaseLog = new SqliteLog(db, "lease_log", { entries: true });
		// A checkpoint covers committed leaves only: it waits for this turn's group.
		this.leaseLog.settleWith = () => this.durable();
		this.logEarlierLeases(log);
	}

	/** Once, when the log is new: the grants and ends stored before it existed enter it in seq order. */
	private logEarlierLeases(log?: (line: string) => void): void {
		if (this.leaseLog.isMigrated()) return;
		const count = this.appendLogged(() => {
			const leases = (
				this.statements.get(`SELECT ${LEASE_COLUMNS} FROM leases`).all() as Array<
					Record<string, unknown>
				>
			).map(leaseDoc);
			const leaves = leases.flatMap(leaseLeaves).sort((a, b) => a.seq - b.seq);
			appendLeaves(this.leaseLog, leaves);
			this.leaseLog.markMigrated(leaves.length, new Date().toISOString());
			return leaves.length;
		});
		if (count) log?.(`The lease log took in ${count} grants and ends stored before it existed`);
	}

	/** Runs `work` in one write transaction; a rollback takes the log's memory back too. */
	private appendLogged<T>(work: () => T): T {
		try {
			return transaction(this.db, work);
		} catch (err) {
			this.leaseLog.reload();
			throw err;
		}
	}

	static open(dataDir: string, log?: (line: string) => void): SqliteKeyringStore {
		const db = openStore({ dataDir, owner: "keyring", schema: KEYRING_SCHEMA, log });
		// A file from before keys could live in a token, or come and go (§5.8).
		ensureColumn(db, "keys", "tokenKey", "TEXT");
		for (const [column, type] of Object.entries(KEY_LIFECYCLE_COLUMNS))
			ensureColumn(db, "keys", column, type);
		return new SqliteKeyringStore(db, dataDir, log);
	}

	async claimRole(claim: RoleClaim): Promise<{ claimed: RoleHolder } | { heldBy: RoleHolder }> {
		this.commitGroup();
		return transaction(this.db, () => {
			const current = this.statements
				.get(
					"SELECT epoch, holder, host, pid, since, expiresAt FROM keyring_role WHERE id = 1",
				)
				.get() as RoleHolder | undefined;
			if (current && !claim.mayTakeOver({ ...current })) return { heldBy: { ...current } };
			const claimed: RoleHolder = {
				epoch: (current?.epoch ?? 0) + 1,
				holder: claim.holder,
				host: claim.host,
				pid: claim.pid,
				since: claim.now,
				expiresAt: claim.expiresAt,
			};
			this.statements
				.get(
					"INSERT INTO keyring_role (id, epoch, holder, host, pid, since, expiresAt) VALUES (1, :epoch, :holder, :host, :pid, :since, :expiresAt) " +
						"ON CONFLICT (id) DO UPDATE SET epoch = :epoch, holder = :holder, host = :host, pid = :pid, since = :since, expiresAt = :expiresAt",
				)
				.run({ ...claimed });
			return { claimed };
		});
	}

	async renewRole(epoch: number, expiresAt: string): Promise<boolean> {
		this.commitGroup();
		return (
			Number(
				this.statements
					.get("UPDATE keyring_role SET expiresAt = ? WHERE id = 1 AND epoch = ?")
					.run(expiresAt, epoch).changes,
			) === 1
		);
	}

	async releaseRole(epoch: number, now: string): Promise<void> {
		this.commitGroup();
		this.statements
			.get("UPDATE keyring_role SET expiresAt = ? WHERE id = 1 AND epoch = ?")
			.run(now, epoch);
	}

	/**
	 * Applies `write` in this turn's transaction (begun here, with the role's epoch checked: a
	 * stale keyring writes nothing), in a savepoint: a write that throws leaves the others be.
	 */
	private fenced<T>(epoch: number, write: () => T): T {
		if (this.group && this.group.epoch !== epoch) this.commitGroup();
		if (!this.group) this.beginGroup(epoch);
		const leaves = this.group!.leaves;
		const logged = leaves.length;
		this.db.exec("SAVEPOINT lease_write");
		try {
			const result = write();
			this.db.exec("RELEASE lease_write");
			return result;
		} catch (err) {
			this.db.exec("ROLLBACK TO lease_write");
			this.db.exec("RELEASE lease_write");
			// Its leaves, if it took any, go with it.
			leaves.length = logged;
			throw err;
		}
	}

	/** Gives a lease write's leaves to its group (inside fenced()): the group appends them at its commit. */
	private logLeaves(leaves: LeaseLeaf[]): void {
		this.group!.leaves.push(...leaves);
	}

	private beginGroup(epoch: number): void {
		beginImmediate(this.db);
		const role = this.statements.get("SELECT epoch FROM keyring_role WHERE id = 1").get() as
			{ epoch: number } | undefined;
		if (Number(role?.epoch) !== epoch) {
			this.db.exec("ROLLBACK");
			throw new FencedError(epoch);
		}
		let settle!: WriteGroup["settle"];
		const committed = new Promise<void>((resolve, reject) => {
			settle = (err) => (err ? reject(err) : resolve());
		});
		// Told through `durable()`; a failed commit nobody waits for is not an unhandled rejection.
		committed.catch(() => undefined);
		this.group = { epoch, leaves: [], committed, settle };
		setImmediate(() => this.commitGroup());
	}

	/** Commits this turn's lease writes, if any (before any other write, and at the turn's end). */
	private commitGroup(): void {
		const group = this.group;
		if (!group) return;
		this.group = null;
		try {
			appendLeaves(this.leaseLog, group.leaves);
			this.db.exec("COMMIT");
			group.settle();
		} catch (err) {
			if (this.db.isTransaction) this.db.exec("ROLLBACK");
			this.leaseLog.reload();
			group.settle(err as Error);
		}
	}

	async durable(): Promise<void> {
		await this.group?.committed;
	}

	async keys(): Promise<KeyDoc[]> {
		return (
			this.statements.get("SELECT * FROM keys ORDER BY keyId").all() as unknown as KeyRow[]
		).map(keyDoc);
	}

	async insertKeys(docs: KeyDoc[]): Promise<void> {
		this.commitGroup();
		transaction(this.db, () => {
			for (const doc of docs) this.insertKey(doc);
		});
	}

	private insertKey(doc: KeyDoc): void {
		this.statements
			.get(
				"INSERT INTO keys (keyId, createdAt, publicJwk, sealedPrivateKey, tokenKey, addedSeq) VALUES (?, ?, ?, ?, ?, ?)",
			)
			.run(
				doc.keyId,
				doc.createdAt,
				JSON.stringify(doc.publicJwk),
				doc.sealedPrivateKey,
				doc.tokenKey ? JSON.stringify(doc.tokenKey) : null,
				doc.addedSeq ?? null,
			);
	}

	async keyEvents(): Promise<KeyEvent[]> {
		return keyEventsOf(await this.keys());
	}

	async writeKeyEvents(events: KeyEvent[], added: KeyDoc[], epoch: number): Promise<void> {
		this.fenced(epoch, () => {
			for (const doc of added) this.insertKey(doc);
			for (const event of events) {
				if (event.event === "added") continue;
				const fields = Object.entries(endedFields(event));
				this.statements
					.get(
						`UPDATE keys SET ${fields.map(([f]) => `${f} = ?`).join(", ")} WHERE keyId = ?`,
					)
					.run(...fields.map(([, v]) => v as string | number | null), event.keyId);
			}
		});
	}

	async summary(): Promise<LeaseLogSummary> {
		const open = (
			this.statements
				.get(`SELECT ${LEASE_COLUMNS} FROM leases WHERE "end" IS NULL ORDER BY grantSeq`)
				.all() as Array<Record<string, unknown>>
		).map(leaseDoc);
		const lastEnd = new Map<string, number>();
		const uses = new Map<string, number>();
		for (const row of this.statements
			.get(
				"SELECT keyId, count(*) AS uses, max(endSeq) AS lastEnd FROM leases GROUP BY keyId",
			)
			.all() as Array<{ keyId: string; uses: number; lastEnd: number | null }>) {
			uses.set(row.keyId, Number(row.uses));
			if (row.lastEnd !== null) lastEnd.set(row.keyId, Number(row.lastEnd));
		}
		const { lastSeq } = this.statements
			.get(
				"SELECT max(coalesce((SELECT max(grantSeq) FROM leases), 0), coalesce((SELECT max(endSeq) FROM leases), 0), coalesce((SELECT max(max(coalesce(addedSeq, 0), coalesce(retiredSeq, 0), coalesce(revokedSeq, 0))) FROM keys), 0)) AS lastSeq",
			)
			.get() as { lastSeq: number };
		return { open, lastEnd, uses, lastSeq: Number(lastSeq) };
	}

	async sealedAuthority(): Promise<string | null> {
		const row = this.statements
			.get("SELECT sealed FROM keyring_secrets WHERE name = 'authority'")
			.get() as { sealed: string } | undefined;
		return row?.sealed ?? null;
	}

	async keepSealedAuthority(sealed: string): Promise<void> {
		this.commitGroup();
		this.statements
			.get(
				"INSERT INTO keyring_secrets (name, sealed) VALUES ('authority', ?) ON CONFLICT(name) DO NOTHING",
			)
			.run(sealed);
	}

	async reseal(keys: ResealedKey[], sealedAuthority: string, epoch: number): Promise<void> {
		this.fenced(epoch, () => {
			const update = this.statements.get(
				"UPDATE keys SET sealedPrivateKey = ? WHERE keyId = ? AND sealedPrivateKey <> ''",
			);
			for (const key of keys) update.run(key.sealedPrivateKey, key.keyId);
			this.statements
				.get("UPDATE keyring_secrets SET sealed = ? WHERE name = 'authority'")
				.run(sealedAuthority);
		});
	}

	async insertLease(lease: LeaseDoc, epoch: number): Promise<void> {
		this.fenced(epoch, () => {
			try {
				this.statements
					.get(`INSERT INTO leases (${LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
					.run(
						lease.leaseId,
						lease.keyId,
						lease.holder,
						lease.grantSeq,
						lease.grantedAt,
						lease.expiresAt,
						lease.endSeq,
						lease.endedAt,
						lease.end,
					);
				this.logLeaves(leaseLeaves(lease));
			} catch (err) {
				throw isUniqueViolation(err) ? new DuplicateLeaseError(lease, err) : err;
			}
		});
	}

	async renewLease(leaseId: string, expiresAt: string, epoch: number): Promise<number> {
		return this.fenced(epoch, () =>
			Number(
				this.statements
					.get(`UPDATE leases SET expiresAt = ? WHERE leaseId = ? AND "end" IS NULL`)
					.run(expiresAt, leaseId).changes,
			),
		);
	}

	async endLease(
		leaseId: string,
		{ end, endSeq, endedAt, expiredBy }: LeaseEnding,
		epoch: number,
	): Promise<number> {
		return this.fenced(epoch, () => {
			const ended = this.statements
				.get(
					`UPDATE leases SET "end" = ?, endSeq = ?, endedAt = ? WHERE leaseId = ? AND "end" IS NULL AND expiresAt <= ? RETURNING keyId, expiresAt`,
				)
				// A release ends the lease whatever its expiry; a reclaim only one expired by `expiredBy`.
				.all(end, endSeq, endedAt, leaseId, expiredBy ?? "9999") as Array<{
				keyId: string;
				expiresAt: string;
			}>;
			for (const { keyId, expiresAt } of ended)
				this.logLeaves([
					{
						entry: endEntry(leaseId),
						leaf: leaseEndLeaf({ leaseId, keyId, endSeq, endedAt, end, expiresAt }),
					},
				]);
			return ended.length;
		});
	}

	async lease(leaseId: string): Promise<LeaseDoc | null> {
		const row = this.statements
			.get(`SELECT ${LEASE_COLUMNS} FROM leases WHERE leaseId = ?`)
			.get(leaseId) as Record<string, unknown> | undefined;
		return row ? leaseDoc(row) : null;
	}

	async enrolled(role: CredentialRole): Promise<EnrolledSigner[]> {
		return enrolledIn(this.db, role);
	}

	async enrol(role: CredentialRole, credential: EnrolledSigner): Promise<Enrolment> {
		this.commitGroup();
		const inserted = this.statements
			.get(
				`INSERT INTO ${ENROLMENT_TABLES[role]} (name, publicJwk, enrolledAt, revokedAt) VALUES (?, ?, ?, NULL) ON CONFLICT(name) DO NOTHING`,
			)
			.run(credential.name, JSON.stringify(credential.publicJwk), credential.enrolledAt);
		return enrolment(this, role, credential, Number(inserted.changes) === 1);
	}

	async revoke(role: CredentialRole, name: string, at: string): Promise<boolean> {
		this.commitGroup();
		return (
			Number(
				this.statements
					.get(
						`UPDATE ${ENROLMENT_TABLES[role]} SET revokedAt = ? WHERE name = ? AND revokedAt IS NULL`,
					)
					.run(at, name).changes,
			) === 1
		);
	}

	async page(
		collection: "keys" | "leases",
		after: string | undefined,
		limit: number,
	): Promise<Page> {
		if (collection === "keys") {
			const rows = this.statements
				.get("SELECT * FROM keys WHERE keyId > ? ORDER BY keyId LIMIT ?")
				.all(after ?? "", limit) as unknown as KeyRow[];
			return {
				docs: rows.map((row) => publicKeyDoc(keyDoc(row))),
				next: rows.length === limit ? rows[rows.length - 1].keyId : null,
			};
		}
		const rows = this.statements
			.get(`SELECT ${LEASE_COLUMNS} FROM leases WHERE leaseId > ? ORDER BY leaseId LIMIT ?`)
			.all(after ?? "", limit) as Array<Record<string, unknown>>;
		return {
			docs: rows.map(leaseDoc),
			next: rows.length === limit ? String(rows[rows.length - 1].leaseId) : null,
		};
	}

	async ping(): Promise<void> {
		this.db.prepare("SELECT 1").get();
	}

	async close(): Promise<void> {
		this.commitGroup();
		await closeStore(this.db, this.dataDir, "keyring");
	}
}
