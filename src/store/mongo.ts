/**
 * MongoDB for the services that own data, through the official driver (`mongodb` 7.x) and its
 * own types: one MongoClient per store, whose collections the store uses directly.
 *
 * Writes are acknowledged by a majority of the replica set and journaled unless the URI says
 * otherwise: "written before the reply" must survive a failover (docs/deploy.md).
 *
 * Timeouts. Driver 7.9 still accepts `timeoutMS` but ignores it: its connection-string table
 * says "timeoutMS has no effect and will be removed in a future release", and no CSOT context is
 * ever created (lib/timeout.js). What bounds an operation on a half-open connection (a network
 * partition) is `socketTimeoutMS`: a send or a receive that waits longer fails with a
 * MongoNetworkTimeoutError and the connection is dropped, so the caller (the keyring's retry,
 * the readiness probe, a signer's store call) sees an error instead of waiting for TCP
 * keepalive, minutes later. It is longer than the write concern's `wtimeoutMS`, so a write
 * waiting for a majority ends with the server's write concern error, not with a cut
 * connection. No single operation of the stores runs long: every scan is paged (see
 * MongoRecordsStore.maxRecordBytes).
 */
import {
	MongoBulkWriteError,
	MongoClient,
	MongoError,
	MongoNetworkError,
	MongoOperationTimeoutError,
	MongoServerError,
	MongoWriteConcernError,
	type ClientSession,
	type Collection,
	type Db,
	type Document,
	type Filter,
	type MongoClientOptions,
	type OptionalUnlessRequiredId,
	type TransactionOptions,
	type WithId,
} from "mongodb";
import type { Page } from "../contract";

/** A collection of the driver, typed by its documents. */
export type MongoCollection<T extends Document = Document> = Collection<T>;

export interface MongoConnection {
	client: MongoClient;
	db: Db;
	/** Closes the client and its pools; resolves once they are closed. */
	close(): Promise<void>;
}

/** The write concern's own time limit: a majority wait longer than this is a write concern error. */
export const WRITE_CONCERN_TIMEOUT_MS = 10_000;
/** A send or receive on a connection that waits longer fails (see above): a partition surfaces as an error. */
export const SOCKET_TIMEOUT_MS = 20_000;
/** Opening a connection (TCP, TLS, handshake). */
export const CONNECT_TIMEOUT_MS = 10_000;
/** How long a transaction keeps retrying a transient error or an unknown commit result (runTransaction). */
export const TRANSACTION_BUDGET_MS = 20_000;

/** URI option names (case-insensitive), as the driver reads them. */
function uriOptionNames(uri: string): Set<string> {
	const query = uri.split("?")[1] ?? "";
	return new Set([...new URLSearchParams(query).keys()].map((key) => key.toLowerCase()));
}

const WRITE_CONCERN_KEYS = ["w", "journal", "j", "wtimeoutms", "wtimeout", "fsync"];

/**
 * The client's options: majority, journaled writes and the timeouts above, each unless the URI
 * sets its own (an option given here would win over the URI's), then `options` as given.
 */
export function clientOptions(
	uri: string,
	owner: string,
	options: MongoClientOptions = {},
): MongoClientOptions {
	const inUri = uriOptionNames(uri);
	const defaults: MongoClientOptions = {};
	if (!inUri.has("appname")) defaults.appName = `record-signer/${owner}`;
	if (!WRITE_CONCERN_KEYS.some((key) => inUri.has(key)))
		defaults.writeConcern = {
			w: "majority",
			journal: true,
			wtimeoutMS: WRITE_CONCERN_TIMEOUT_MS,
		};
	if (!inUri.has("sockettimeoutms")) defaults.socketTimeoutMS = SOCKET_TIMEOUT_MS;
	if (!inUri.has("connecttimeoutms")) defaults.connectTimeoutMS = CONNECT_TIMEOUT_MS;
	return { ...defaults, ...options };
}

/**
 * Connects a client of its own for `owner` (a service name, shown to the server as the appName);
 * `options` go to the driver (e.g. a shorter serverSelectionTimeoutMS). `service` is the owning
 * service, kept for the stores' signatures. Rejects when no server is selected in time.
 */
export async function connectMongo(
	uri: string,
	_service: { broker?: unknown; logger?: unknown },
	owner: string,
	options: MongoClientOptions = {},
): Promise<MongoConnection> {
	const client = new MongoClient(uri, clientOptions(uri, owner, options));
	try {
		await client.connect();
	} catch (err) {
		await client.close().catch(() => undefined);
		throw err;
	}
	return { client, db: client.db(), close: () => client.close() };
}

/**
 * Opens an owner's store: connects, builds the store over the connection (`over`), lets
 * `prepare` create what the owner needs (indexes, collections), and closes the connection again
 * when any of it fails.
 */
export async function openMongoStore<S>(
	uri: string,
	service: { broker: unknown; logger: unknown },
	owner: string,
	over: (connection: MongoConnection) => S,
	prepare: (store: S, connection: MongoConnection) => Promise<void>,
): Promise<S> {
	const connection = await connectMongo(uri, service, owner);
	try {
		const store = over(connection);
		await prepare(store, connection);
		return store;
	} catch (err) {
		await connection.close();
		throw err;
	}
}

/**
 * Whether the server is a replica set member or a mongos: the stores need transactions and
 * majority writes, which a standalone server has neither of.
 */
export async function assertReplicaSet(connection: MongoConnection, where: string): Promise<void> {
	const hello = await connection.db.admin().command({ hello: 1 });
	if (hello.setName || hello.msg === "isdbgrid") return;
	throw new Error(
		`${where} is a standalone MongoDB server: the keyring needs a replica set (transactions, majority writes). ` +
			'Start mongod with --replSet rs0, run rs.initiate() once, and add ?replicaSet=rs0 to MONGO_URI (docs/deploy.md, "Which MongoDB, and why")',
	);
}

/** Drops an index the store no longer uses; an index or a collection that is not there is fine. */
export async function dropIndexIfPresent<T extends Document>(
	collection: Collection<T>,
	name: string,
): Promise<void> {
	try {
		await collection.dropIndex(name);
	} catch (err) {
		const code = (err as MongoServerError)?.code;
		if (code !== INDEX_NOT_FOUND && code !== NAMESPACE_NOT_FOUND) throw err;
	}
}

/**
 * One page of a store's `page`: up to `limit` documents of `collection` after `after` in `_id`
 * order, less the fields `projection` leaves out; `next` is the last `_id` when the page is full.
 */
export async function pageById<T extends { _id: string }>(
	collection: Collection<T>,
	after: string | undefined,
	limit: number,
	projection?: Document,
): Promise<Page<WithId<T>>> {
	const range = (after === undefined ? {} : { _id: { $gt: after } }) as Filter<T>;
	const docs = await collection
		.find(range, projection ? { projection } : undefined)
		.sort({ _id: 1 })
		.limit(limit)
		.toArray();
	return { docs, next: docs.length === limit ? String(docs[docs.length - 1]._id) : null };
}

/**
 * Creates a collection unless it exists. A transaction should not be the first to write to a
 * collection: creating one inside a transaction is restricted (no cross-shard writes, and not
 * before MongoDB 4.4), so the stores create theirs when they open.
 */
export async function ensureCollection(db: Db, name: string): Promise<void> {
	try {
		await db.createCollection(name);
	} catch (err) {
		if ((err as MongoServerError)?.code !== NAMESPACE_EXISTS) throw err;
	}
}

// ------------------------------------------------------------------ the driver's errors

/** E11000: the write was refused by a unique index. */
export const DUPLICATE_KEY = 11000;
const INDEX_NOT_FOUND = 27;
const NAMESPACE_NOT_FOUND = 26;
const NAMESPACE_EXISTS = 48;
const MAX_TIME_MS_EXPIRED = 50;

/** One write error of a bulk write: the document at `index` of the call was refused with `code`. */
export interface BulkWriteFailure {
	index: number;
	code: number;
}

/**
 * The write concern error a failed write carries, if any: the write was applied on the primary
 * but not confirmed as asked (majority, journal), so a failover may roll it back.
 *
 * Where the driver puts it: a single write throws MongoWriteConcernError (its `result` is the
 * server's reply, which also holds any write errors). An insertMany with duplicate keys and a
 * write concern error in the same reply throws MongoBulkWriteError whose `code` is the write
 * concern's and whose top-level `writeErrors` is empty: the duplicates and the write concern
 * error are only in `result` (BulkWriteResult.getWriteErrors(), getWriteConcernError()); one
 * built from a WriteConcernError keeps it in `err`.
 */
export function writeConcernErrorOf(err: unknown): { code?: number; errmsg?: string } | null {
	if (err instanceof MongoBulkWriteError) {
		const wce = err.result?.getWriteConcernError() ?? err.err;
		return wce ? { code: wce.code, errmsg: wce.errmsg } : null;
	}
	if (err instanceof MongoWriteConcernError) {
		const wce = err.result?.writeConcernError as { code?: number; errmsg?: string } | undefined;
		return {
			code: wce?.code ?? (err.code as number | undefined),
			errmsg: wce?.errmsg ?? err.message,
		};
	}
	if (err instanceof MongoServerError && err.writeConcernError)
		return { code: err.writeConcernError.code, errmsg: err.writeConcernError.errmsg };
	return null;
}

/** Every write error of a bulk write, wherever the driver put them (see writeConcernErrorOf). */
export function bulkWriteFailures(err: unknown): BulkWriteFailure[] {
	if (!(err instanceof MongoBulkWriteError)) return [];
	const inResult = err.result?.getWriteErrors() ?? [];
	const all = inResult.length
		? inResult
		: Array.isArray(err.writeErrors)
			? err.writeErrors
			: err.writeErrors
				? [err.writeErrors]
				: [];
	return all.map((w) => ({ index: w.index, code: w.code }));
}

/**
 * Whether a write was refused by a unique index and nothing else went wrong. A write concern
 * error is never a plain refusal, even when the reply also holds the duplicate (its outcome is
 * unknown: see isUnknownOutcome).
 */
export function isDuplicateKey(err: unknown): boolean {
	if (!(err instanceof MongoServerError) || writeConcernErrorOf(err)) return false;
	if (err instanceof MongoBulkWriteError) {
		const failures = bulkWriteFailures(err);
		return failures.length > 0 && failures.every((f) => f.code === DUPLICATE_KEY);
	}
	return err.code === DUPLICATE_KEY;
}

/**
 * For an unordered insertMany that failed: how many documents it inserted and which (by index
 * in the call) a unique index refused, when that is all that happened; null when anything
 * else went wrong (another write error, a write concern error, no reply at all), which the
 * caller must throw: a majority timeout is not a success.
 */
export function duplicatesOfUnorderedInsert(
	err: unknown,
): { inserted: number; duplicateIndexes: number[] } | null {
	if (!(err instanceof MongoBulkWriteError) || !isDuplicateKey(err)) return null;
	return {
		inserted: err.result.insertedCount,
		duplicateIndexes: bulkWriteFailures(err).map((f) => f.index),
	};
}

/**
 * Inserts `docs` unordered and counts what a unique index refused: every document is tried,
 * the stored ones stay. Resolves with how many this call inserted; the rest were duplicates
 * (already stored, or repeated within `docs`). Throws anything else, a write concern error
 * included.
 *
 * The driver stops after the first command (a batch of up to maxWriteBatchSize documents or
 * 16 MiB) that had write errors, even unordered, so the documents of later batches may not have
 * been sent: those are sent again. What a round inserted is counted from the server's `n`
 * (insertedCount), never from insertedIds, which lists unsent documents too.
 */
export async function insertUnordered<T extends Document>(
	collection: Collection<T>,
	docs: OptionalUnlessRequiredId<T>[],
): Promise<{ inserted: number; duplicates: number }> {
	let pending = docs;
	let inserted = 0;
	while (pending.length) {
		try {
			inserted += (await collection.insertMany(pending, { ordered: false })).insertedCount;
			break;
		} catch (err) {
			const outcome = duplicatesOfUnorderedInsert(err);
			if (!outcome) throw err;
			inserted += outcome.inserted;
			if (outcome.inserted + outcome.duplicateIndexes.length >= pending.length) break;
			// Not all were tried: send again all but the refused ones (this round's inserts come back as duplicates).
			const refused = new Set(outcome.duplicateIndexes);
			pending = pending.filter((_, index) => !refused.has(index));
		}
	}
	return { inserted, duplicates: docs.length - inserted };
}

/** The server or the driver says the whole transaction may be run again: nothing of it was committed. */
export function isTransientTransactionError(err: unknown): boolean {
	return err instanceof MongoError && err.hasErrorLabel("TransientTransactionError");
}

/** A commit whose result is unknown: it may have committed. Committing again is safe (the driver uses w: majority then). */
export function isUnknownCommitResult(err: unknown): boolean {
	return (
		err instanceof MongoError &&
		err.hasErrorLabel("UnknownTransactionCommitResult") &&
		err.code !== MAX_TIME_MS_EXPIRED
	);
}

/**
 * A write whose outcome the client cannot know: it may have been applied or not. No reply (a
 * network error or timeout, including one the driver's single retry of a retryable write ran
 * into), a commit whose result is unknown, or a write concern error (applied on the primary,
 * not confirmed by a majority). The caller must look before writing again, as the keyring does.
 * A NoWritesPerformed label says no attempt wrote anything.
 */
export function isUnknownOutcome(err: unknown): boolean {
	if (!(err instanceof MongoError) || err.hasErrorLabel("NoWritesPerformed")) return false;
	if (err.hasErrorLabel("UnknownTransactionCommitResult") || writeConcernErrorOf(err))
		return true;
	if (err instanceof MongoNetworkError || err instanceof MongoOperationTimeoutError) return true;
	return err.hasErrorLabel("RetryableWriteError");
}

/** Transactions: snapshot reads, majority journaled commit (unless the URI set a write concern), on the primary. */
const TRANSACTION_OPTIONS: TransactionOptions = {
	readConcern: { level: "snapshot" },
	readPreference: "primary",
};

/**
 * Runs `work` in a transaction on the replica set and commits it: the loop of the driver's
 * session.withTransaction (the transactions spec): the whole transaction again on a
 * TransientTransactionError, the commit again on an UnknownTransactionCommitResult; anything
 * else is thrown, and a transaction that did not commit is aborted. Unlike withTransaction,
 * which keeps trying for 120 s (its timeoutMS bound is one of the options driver 7.9 ignores),
 * it gives up after `budgetMs` and throws the last error: a store call never hangs for minutes.
 * `work` must use `session` for every operation and must not swallow their errors.
 */
export async function runTransaction<T>(
	client: MongoClient,
	work: (session: ClientSession) => Promise<T>,
	budgetMs = TRANSACTION_BUDGET_MS,
): Promise<T> {
	const deadline = Date.now() + budgetMs;
	const session = client.startSession();
	try {
		for (let attempt = 0; ; attempt++) {
			if (attempt > 0) await backoff(attempt);
			session.startTransaction(TRANSACTION_OPTIONS);
			let result: T;
			try {
				result = await work(session);
			} catch (err) {
				if (session.inTransaction()) await session.abortTransaction();
				if (isTransientTransactionError(err) && Date.now() < deadline) continue;
				throw err;
			}
			const committed = await commit(session, deadline);
			if (committed) return result;
			// A transient commit error: nothing was committed; run the whole transaction again.
		}
	} finally {
		await session.endSession();
	}
}

/** Commits; true once committed, false when the whole transaction must run again; throws otherwise. */
async function commit(session: ClientSession, deadline: number): Promise<boolean> {
	for (;;) {
		try {
			await session.commitTransaction();
			return true;
		} catch (err) {
			if (Date.now() >= deadline) throw err;
			if (isUnknownCommitResult(err)) continue;
			if (isTransientTransactionError(err)) return false;
			throw err;
		}
	}
}

/** 5 ms growing by half each attempt, at most 500 ms, with full jitter (as withTransaction waits). */
function backoff(attempt: number): Promise<void> {
	const ms = Math.random() * Math.min(5 * 1.5 ** attempt, 500);
	return new Promise((resolve) => setTimeout(resolve, ms));
}
