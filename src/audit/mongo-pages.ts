/**
 * How the audit and the export read MongoDB: the owners' own stores over one connection,
 * opened without creating anything (no index, no keyring, no key, whatever the database name),
 * and paged exactly as their `page` actions page them. No service starts and no master key is
 * needed: only public fields leave the keys collection.
 */
import type { JWK } from "jose";
import type { Page } from "../contract";
import { MongoBatcherStore } from "../batcher/mongo-store";
import { publicJwkOf } from "../keyring/keys";
import { MongoKeyringStore } from "../keyring/mongo-store";
import { MongoRecordsStore } from "../records/mongo-store";
import type { MongoClientOptions } from "mongodb";
import { connectMongo, type MongoConnection } from "../store/mongo";
import type { LogName } from "../contract";
import { UserError } from "../user-error";
import { mongoCheckpoints, mongoLeafHashes, MongoLog } from "../tlog/mongo-log";
import type { OwningService, PageSource } from "./collect";

/** The collections a record-signing store has in its database. */
export const MONGO_COLLECTIONS = [
	"records",
	"signatures",
	"runs",
	"batches",
	"keys",
	"leases",
] as const;

export interface MongoPages extends PageSource {
	/** Which of MONGO_COLLECTIONS the database has (none: a wrong database name, most likely). */
	present(): Promise<string[]>;
	close(): Promise<void>;
}

const quiet = { info() {}, warn() {}, error() {}, debug() {} };

/** What each owner's store pages (its own collections, as its `page` action does). */
interface Pager {
	page(collection: string, after: string | undefined, limit: number): Promise<Page>;
}

/** Connects (with the driver `options` given, e.g. a shorter server selection timeout); creates nothing. */
export async function openMongoPages(
	uri: string,
	options: MongoClientOptions = {},
): Promise<MongoPages> {
	const connection: MongoConnection = await connectMongo(
		uri,
		{ broker: null, logger: quiet },
		"audit",
		options,
	);
	const keyring = MongoKeyringStore.over(connection);
	const owners: Record<OwningService, Pager> = {
		records: MongoRecordsStore.over(connection),
		batcher: MongoBatcherStore.over(connection),
		keyring,
	};
	return {
		page: (service, collection, after, limit) => owners[service].page(collection, after, limit),
		jwks: async (): Promise<JWK[]> =>
			(await keyring.keys()).map((key) => publicJwkOf(key.keyId, key.publicJwk)),
		present: async () => {
			// The driver's cursor reads every batch: the command's first batch alone may leave collections out.
			const listed = await connection.db
				.listCollections({}, { nameOnly: true, authorizedCollections: true })
				.toArray();
			const names = new Set(listed.map((c) => c.name));
			return MONGO_COLLECTIONS.filter((name) => names.has(name));
		},
		logs: (log) => ({
			leaves: () => mongoLeaves(connection, log),
			checkpoints: () => mongoCheckpoints(connection.db, LOG_COLLECTIONS[log]),
		}),
		close: () => connection.close(),
	};
}

/** Each log's collections' prefix (src/tlog/mongo-log.ts), in its owner's database. */
const LOG_COLLECTIONS: Record<LogName, string> = {
	signatures: "signature_log",
	leases: "lease_log",
};

/** Entry names read per command for the lease log's leaves. */
const ENTRY_PAGE = 5_000;

/** A log's leaf hashes in log order; the lease log's with their entry names. */
async function* mongoLeaves(
	connection: MongoConnection,
	log: LogName,
): AsyncGenerator<{ hash: Buffer; entry?: string }> {
	const names = log === "leases" ? new MongoLog(connection.db, LOG_COLLECTIONS[log]) : null;
	let entries = new Map<number, string>();
	let index = 0;
	for await (const hash of mongoLeafHashes(connection.db, LOG_COLLECTIONS[log])) {
		if (!names) {
			yield { hash };
			continue;
		}
		if (index % ENTRY_PAGE === 0) entries = await names.entryNames(index, index + ENTRY_PAGE);
		const entry = entries.get(index);
		if (entry === undefined)
			throw new UserError(
				`lease_log_entries names no entry for leaf ${index} of the lease log: the store was altered`,
			);
		yield { hash, entry };
		index++;
	}
}
