/**
 * The embedded store's files and tables (docs/design.md §4.2): one SQLite database in WAL
 * mode per owning service under DATA_DIR. Only the owner writes its file; readers (the
 * audit, the export) may open any of them read-only while the owner runs.
 *
 * The unique keys are the guards: one signature per record (`signatures.recordId`), one
 * lease per `grantSeq`, and at most one open lease per key.
 */

export const STORE_FILES = {
	records: "records.sqlite",
	keyring: "keyring.sqlite",
	batcher: "batcher.sqlite",
} as const;

export type StoreOwner = keyof typeof STORE_FILES;

/**
 * Records and their signatures. An unsigned record is one with no row in `signatures`: paging
 * them is one query per page that probes the signatures' primary key for each candidate.
 * `seq` is a record's place in arrival order (seeded records in id order, then each submission's
 * in request order), what a follow run pages by; `submittedBy` and `submittedAt` are null for
 * seeded records. A file from before submissions gets the three columns, and its records their
 * `seq` in id order, once (src/records/sqlite-store.ts), and then the index on `seq`.
 */
export const RECORDS_SCHEMA = `
CREATE TABLE IF NOT EXISTS records (
	id TEXT PRIMARY KEY,
	data TEXT NOT NULL,
	seq INTEGER,
	submittedBy TEXT,
	submittedAt TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signatures (
	recordId TEXT PRIMARY KEY,
	keyId TEXT NOT NULL,
	batchId TEXT NOT NULL,
	leaseId TEXT NOT NULL,
	jws TEXT NOT NULL,
	signedAt TEXT NOT NULL,
	-- Its leaf's index in the signature log (docs/design.md §8.4); the records store adds it to older files.
	logIndex INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS signatures_batch ON signatures (batchId, recordId);
-- Batches that ended without their signer's reply: no signature is stored under them any more.
CREATE TABLE IF NOT EXISTS closed_batches (
	batchId TEXT PRIMARY KEY,
	closedAt TEXT NOT NULL
) WITHOUT ROWID;
`;

/** Runs and batches; `batches.recordIds` is a JSON array of ids, ascending. */
export const BATCHER_SCHEMA = `
CREATE TABLE IF NOT EXISTS runs (
	runId TEXT PRIMARY KEY,
	batchSize INTEGER NOT NULL,
	status TEXT NOT NULL,
	startedAt TEXT NOT NULL,
	finishedAt TEXT,
	report TEXT,
	error TEXT,
	idempotencyKey TEXT UNIQUE,
	requestFingerprint TEXT,
	cancelRequestedAt TEXT,
	follow INTEGER
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS batches (
	batchId TEXT PRIMARY KEY,
	runId TEXT NOT NULL,
	keyId TEXT,
	leaseId TEXT,
	recordIds TEXT NOT NULL,
	attempt INTEGER NOT NULL,
	status TEXT NOT NULL,
	startedAt TEXT NOT NULL,
	finishedAt TEXT,
	signer TEXT,
	error TEXT,
	stored INTEGER,
	duplicates INTEGER,
	unsigned INTEGER,
	short TEXT
);
CREATE INDEX IF NOT EXISTS batches_run ON batches (runId, status);
`;

/**
 * Keys (private keys sealed, or named in a PKCS#11 token), the lease log (`publicJwk` is JSON),
 * and the keyring role: a store-level lease on being the keyring, with an increasing fencing
 * number (`epoch`) on which every grant and end is conditional, so a stale keyring's writes are
 * refused by the store.
 */
export const KEYRING_SCHEMA = `
CREATE TABLE IF NOT EXISTS keyring_role (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	epoch INTEGER NOT NULL,
	holder TEXT NOT NULL,
	host TEXT NOT NULL,
	pid INTEGER NOT NULL,
	since TEXT NOT NULL,
	expiresAt TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
	keyId TEXT PRIMARY KEY,
	createdAt TEXT NOT NULL,
	publicJwk TEXT NOT NULL,
	sealedPrivateKey TEXT NOT NULL,
	-- KEY_STORE=pkcs11: JSON of the key's label and CKA_ID in the token ('' sealed, above)
	tokenKey TEXT
);
-- The keyring's authority key, sealed under the master key (name 'authority'; docs/design.md §5.1).
CREATE TABLE IF NOT EXISTS keyring_secrets (
	name TEXT PRIMARY KEY,
	sealed TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
	leaseId TEXT PRIMARY KEY,
	keyId TEXT NOT NULL,
	holder TEXT NOT NULL,
	grantSeq INTEGER NOT NULL UNIQUE,
	grantedAt TEXT NOT NULL,
	expiresAt TEXT NOT NULL,
	endSeq INTEGER UNIQUE,
	endedAt TEXT,
	"end" TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS leases_open_per_key ON leases (keyId) WHERE "end" IS NULL;

-- The signer credentials the keyring grants keys to (only their public halves).
CREATE TABLE IF NOT EXISTS signers (
	name TEXT PRIMARY KEY,
	publicJwk TEXT NOT NULL,
	enrolledAt TEXT NOT NULL,
	revokedAt TEXT
);
-- The batcher credentials whose dispatch tickets the keyring takes (only their public halves).
CREATE TABLE IF NOT EXISTS batchers (
	name TEXT PRIMARY KEY,
	publicJwk TEXT NOT NULL,
	enrolledAt TEXT NOT NULL,
	revokedAt TEXT
);
`;

/**
 * The keys' lifecycle columns (docs/design.md §5.8), each a seq of the lease log with its time
 * and why: added after the first start, retired, revoked. Added by `ALTER TABLE` to a store an
 * earlier version wrote (src/keyring/sqlite-store.ts), so they are not in KEYRING_SCHEMA.
 */
export const KEY_LIFECYCLE_COLUMNS = {
	addedSeq: "INTEGER",
	retiredSeq: "INTEGER",
	retiredAt: "TEXT",
	retiredBy: "TEXT",
	revokedSeq: "INTEGER",
	revokedAt: "TEXT",
	revokedReason: "TEXT",
} as const;
