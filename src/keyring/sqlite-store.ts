/**
 * The keyring's store on the embedded SQLite file `keyring.sqlite` (WAL, synchronous = NORMAL:
 * docs/design.md §4.2): a grant is written before the reply and survives a killed process.
 */
import type { KeyDoc, LeaseDoc, Page } from "../contract";
import { KEYRING_SCHEMA } from "../store/schema";
import {
	closeStore,
	ensureColumn,
	isUniqueViolation,
	openStore,
	Statements,
	transaction,
	type DatabaseSync,
} from "../store/sqlite";
import type { JWK } from "jose";
import type { CredentialRole } from "../identity/credential";
import { enrolment, type EnrolledSigner, type Enrolment } from "./store";

/** Where each role's enrolled credentials are (the table names are fixed, never input). */
const ENROLMENT_TABLES: Record<CredentialRole, string> = { signer: "signers", batcher: "batchers" };
import {
	DuplicateLeaseError,
	FencedError,
	publicKeyDoc,
	type KeyringStore,
	type LeaseEnding,
	type LeaseLogSummary,
	type RoleClaim,
	type RoleHolder,
} from "./store";

const LEASE_COLUMNS = `leaseId, keyId, holder, grantSeq, grantedAt, expiresAt, endSeq, endedAt, "end"`;

type KeyRow = Omit<KeyDoc, "publicJwk" | "tokenKey"> & {
	publicJwk: string;
	tokenKey: string | null;
};

function keyDoc(row: KeyRow): KeyDoc {
	return {
		_id: row.keyId,
		keyId: row.keyId,
		createdAt: row.createdAt,
		publicJwk: JSON.parse(row.publicJwk),
		sealedPrivateKey: row.sealedPrivateKey,
		...(row.tokenKey ? { tokenKey: JSON.parse(row.tokenKey) } : {}),
	};
}

function leaseDoc(row: Record<string, unknown>): LeaseDoc {
	return {
		_id: row.leaseId as string,
		...row,
		grantSeq: Number(row.grantSeq),
		endSeq: row.endSeq === null ? null : Number(row.endSeq),
	} as LeaseDoc;
}

export class SqliteKeyringStore implements KeyringStore {
	private readonly statements: Statements;

	private constructor(
		private readonly db: DatabaseSync,
		private readonly dataDir: string,
	) {
		this.statements = new Statements(db);
	}

	static open(dataDir: string, log?: (line: string) => void): SqliteKeyringStore {
		const db = openStore({ dataDir, owner: "keyring", schema: KEYRING_SCHEMA, log });
		// A file from before keys could live in a token.
		ensureColumn(db, "keys", "tokenKey", "TEXT");
		return new SqliteKeyringStore(db, dataDir);
	}

	async claimRole(claim: RoleClaim): Promise<{ claimed: RoleHolder } | { heldBy: RoleHolder }> {
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
		return (
			Number(
				this.statements
					.get("UPDATE keyring_role SET expiresAt = ? WHERE id = 1 AND epoch = ?")
					.run(expiresAt, epoch).changes,
			) === 1
		);
	}

	async releaseRole(epoch: number, now: string): Promise<void> {
		this.statements
			.get("UPDATE keyring_role SET expiresAt = ? WHERE id = 1 AND epoch = ?")
			.run(now, epoch);
	}

	/** Runs `write` in one transaction with the role's epoch checked first: a stale keyring writes nothing. */
	private fenced<T>(epoch: number, write: () => T): T {
		return transaction(this.db, () => {
			const role = this.statements
				.get("SELECT epoch FROM keyring_role WHERE id = 1")
				.get() as { epoch: number } | undefined;
			if (Number(role?.epoch) !== epoch) throw new FencedError(epoch);
			return write();
		});
	}

	async keys(): Promise<KeyDoc[]> {
		return (
			this.statements.get("SELECT * FROM keys ORDER BY keyId").all() as unknown as KeyRow[]
		).map(keyDoc);
	}

	async insertKeys(docs: KeyDoc[]): Promise<void> {
		const insert = this.statements.get(
			"INSERT INTO keys (keyId, createdAt, publicJwk, sealedPrivateKey, tokenKey) VALUES (?, ?, ?, ?, ?)",
		);
		transaction(this.db, () => {
			for (const doc of docs)
				insert.run(
					doc.keyId,
					doc.createdAt,
					JSON.stringify(doc.publicJwk),
					doc.sealedPrivateKey,
					doc.tokenKey ? JSON.stringify(doc.tokenKey) : null,
				);
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
				"SELECT max(coalesce((SELECT max(grantSeq) FROM leases), 0), coalesce((SELECT max(endSeq) FROM leases), 0)) AS lastSeq",
			)
			.get() as { lastSeq: number };
		return { open, lastEnd, uses, lastSeq: Number(lastSeq) };
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
		return this.fenced(epoch, () =>
			Number(
				this.statements
					.get(
						`UPDATE leases SET "end" = ?, endSeq = ?, endedAt = ? WHERE leaseId = ? AND "end" IS NULL AND expiresAt <= ?`,
					)
					// A release ends the lease whatever its expiry; a reclaim only one expired by `expiredBy`.
					.run(end, endSeq, endedAt, leaseId, expiredBy ?? "9999").changes,
			),
		);
	}

	async lease(leaseId: string): Promise<LeaseDoc | null> {
		const row = this.statements
			.get(`SELECT ${LEASE_COLUMNS} FROM leases WHERE leaseId = ?`)
			.get(leaseId) as Record<string, unknown> | undefined;
		return row ? leaseDoc(row) : null;
	}

	async enrolled(role: CredentialRole): Promise<EnrolledSigner[]> {
		return (
			this.statements
				.get(
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

	async enrol(role: CredentialRole, credential: EnrolledSigner): Promise<Enrolment> {
		const inserted = this.statements
			.get(
				`INSERT INTO ${ENROLMENT_TABLES[role]} (name, publicJwk, enrolledAt, revokedAt) VALUES (?, ?, ?, NULL) ON CONFLICT(name) DO NOTHING`,
			)
			.run(credential.name, JSON.stringify(credential.publicJwk), credential.enrolledAt);
		return enrolment(this, role, credential, Number(inserted.changes) === 1);
	}

	async revoke(role: CredentialRole, name: string, at: string): Promise<boolean> {
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
		await closeStore(this.db, this.dataDir, "keyring");
	}
}
