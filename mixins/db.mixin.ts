/**
 * Storage for data-owning services through moleculer-db adapters. `MONGO_URI` set selects
 * MongoDB (moleculer-db-adapter-mongo); otherwise moleculer-db's MemoryAdapter (NeDB), one
 * file per collection under `DATA_DIR`, or purely in memory when `dataDir` is "".
 *
 * A service may own several collections (records owns `records` and `signatures`), so the
 * mixin gives one small typed `Store` per collection on `this.stores` instead of
 * moleculer-db's one-collection-per-service CRUD actions.
 */
import fs from "node:fs";
import path from "node:path";
import type { ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import { pageParams, type PageParams } from "../src/contract";

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { MemoryAdapter } = require("moleculer-db");
// eslint-disable-next-line @typescript-eslint/no-require-imports
const MongoDbAdapter = require("moleculer-db-adapter-mongo");

export type Query = Record<string, unknown>;
export interface FindOptions {
	sort?: Record<string, 1 | -1>;
	limit?: number;
	projection?: Record<string, 0 | 1>;
}

export interface Store<T extends object> {
	readonly name: string;
	insert(doc: T): Promise<void>;
	insertMany(docs: T[]): Promise<void>;
	/**
	 * Inserts every document whose `field` value is not stored yet; the rest are duplicates.
	 * The unique index on `field` is the guard: a concurrent writer can make the first try
	 * fail, never store a second document.
	 */
	insertManyUnique(docs: T[], field: keyof T & string): Promise<{ inserted: number; duplicates: number }>;
	find(query: Query, options?: FindOptions): Promise<T[]>;
	findOne(query: Query): Promise<T | null>;
	count(query?: Query): Promise<number>;
	/** `$set` on every matching document; returns how many matched. */
	update(query: Query, set: Partial<T>, options?: { multi?: boolean }): Promise<number>;
	ensureIndex(field: string, unique: boolean): Promise<void>;
}

const DUPLICATE_KEY = 11000;

/** A write refused by a unique index: the store already holds a document with that key. */
export class DuplicateKeyError extends Error {
	constructor(readonly collection: string, cause: unknown) {
		super(`${collection}: a document with the same unique key is already stored (${(cause as Error)?.message ?? cause})`);
		this.name = "DuplicateKeyError";
	}
}

function isUniqueViolation(err: unknown): boolean {
	const e = err as { errorType?: string; code?: number };
	return err instanceof DuplicateKeyError || e?.errorType === "uniqueViolated" || e?.code === DUPLICATE_KEY;
}

/** Runs a write, turning a unique-index refusal into a DuplicateKeyError. */
async function guarded<T>(collection: string, write: () => Promise<T>): Promise<T> {
	try {
		return await write();
	} catch (err) {
		throw isUniqueViolation(err) && !(err instanceof DuplicateKeyError) ? new DuplicateKeyError(collection, err) : err;
	}
}

/** Keeps the first document per value of `field`, and splits off those already stored. */
async function withoutStored<T extends object>(store: Store<T>, docs: T[], field: keyof T & string): Promise<T[]> {
	const firstPerValue = new Map<unknown, T>();
	for (const doc of docs) if (!firstPerValue.has(doc[field])) firstPerValue.set(doc[field], doc);
	const values = [...firstPerValue.keys()];
	const stored = await store.find({ [field]: { $in: values } }, { projection: { [field]: 1 } });
	for (const doc of stored) firstPerValue.delete(doc[field]);
	return [...firstPerValue.values()];
}

interface NedbCursor<T> {
	sort(s: object): NedbCursor<T>;
	limit(n: number): NedbCursor<T>;
	projection(p: object): NedbCursor<T>;
	exec(cb: (err: Error | null, docs: T[]) => void): void;
}
interface NedbDatastore {
	insert(docs: unknown): Promise<unknown>;
	findOne(query: Query): Promise<unknown>;
	count(query: Query): Promise<number>;
	update(query: Query, update: object, options: object): Promise<[number]>;
	ensureIndex(options: object): Promise<void>;
	find(query: Query): NedbCursor<unknown>;
}

class NedbStore<T extends object> implements Store<T> {
	constructor(readonly name: string, private readonly db: NedbDatastore) {}

	async insert(doc: T): Promise<void> {
		await guarded(this.name, () => this.db.insert(doc));
	}

	async insertMany(docs: T[]): Promise<void> {
		if (docs.length) await guarded(this.name, () => this.db.insert(docs));
	}

	async insertManyUnique(docs: T[], field: keyof T & string): Promise<{ inserted: number; duplicates: number }> {
		// NeDB's bulk insert is all-or-nothing. Duplicates are rare (a retry after a crash, a
		// duplicate delivery), so try the whole bulk first and filter only when it is refused.
		try {
			await this.insertMany(docs);
			return { inserted: docs.length, duplicates: 0 };
		} catch (err) {
			if (!isUniqueViolation(err)) throw err;
		}
		// Only another writer in this process can race the filtered retry; it shows as a violation.
		for (let attempt = 0; ; attempt++) {
			const fresh = await withoutStored(this, docs, field);
			try {
				await this.insertMany(fresh);
				return { inserted: fresh.length, duplicates: docs.length - fresh.length };
			} catch (err) {
				if (!isUniqueViolation(err) || attempt >= 5) throw err;
			}
		}
	}

	find(query: Query, options: FindOptions = {}): Promise<T[]> {
		let cursor = this.db.find(query) as NedbCursor<T>;
		if (options.sort) cursor = cursor.sort(options.sort);
		if (options.limit) cursor = cursor.limit(options.limit);
		if (options.projection) cursor = cursor.projection(options.projection);
		return new Promise((resolve, reject) => cursor.exec((err, docs) => (err ? reject(err) : resolve(docs))));
	}

	async findOne(query: Query): Promise<T | null> {
		return ((await this.db.findOne(query)) as T | null) ?? null;
	}

	count(query: Query = {}): Promise<number> {
		return this.db.count(query);
	}

	async update(query: Query, set: Partial<T>, options: { multi?: boolean } = {}): Promise<number> {
		const [matched] = await this.db.update(query, { $set: set }, { multi: !!options.multi });
		return matched;
	}

	ensureIndex(field: string, unique: boolean): Promise<void> {
		return this.db.ensureIndex({ fieldName: field, unique });
	}
}

interface MongoCollection {
	insertOne(doc: object): Promise<unknown>;
	insertMany(docs: object[], options: object): Promise<{ insertedCount: number }>;
	find(query: Query, options?: object): { toArray(): Promise<unknown[]> };
	findOne(query: Query): Promise<unknown>;
	countDocuments(query: Query): Promise<number>;
	updateOne(query: Query, update: object): Promise<{ matchedCount: number }>;
	updateMany(query: Query, update: object): Promise<{ matchedCount: number }>;
	createIndex(spec: object, options: object): Promise<unknown>;
}

/** MongoDB through the driver moleculer-db-adapter-mongo connects (its documented API). */
class MongoStore<T extends object> implements Store<T> {
	constructor(readonly name: string, private readonly collection: MongoCollection) {}

	async insert(doc: T): Promise<void> {
		await guarded(this.name, () => this.collection.insertOne(doc));
	}

	async insertMany(docs: T[]): Promise<void> {
		if (docs.length) await guarded(this.name, () => this.collection.insertMany(docs, { ordered: true }));
	}

	async insertManyUnique(docs: T[], field: keyof T & string): Promise<{ inserted: number; duplicates: number }> {
		if (!docs.length) return { inserted: 0, duplicates: 0 };
		try {
			// Unordered: every document is tried; the unique index rejects the stored ones.
			const result = await this.collection.insertMany(docs, { ordered: false });
			return { inserted: result.insertedCount, duplicates: docs.length - result.insertedCount };
		} catch (err) {
			const bulk = err as { writeErrors?: Array<{ code: number }> | { code: number }; result?: { nInserted?: number; insertedCount?: number } };
			const writeErrors = Array.isArray(bulk.writeErrors) ? bulk.writeErrors : bulk.writeErrors ? [bulk.writeErrors] : [];
			if (!writeErrors.length || writeErrors.some(w => w.code !== DUPLICATE_KEY)) throw err;
			const duplicates = writeErrors.length;
			return { inserted: docs.length - duplicates, duplicates };
		}
	}

	find(query: Query, options: FindOptions = {}): Promise<T[]> {
		return this.collection.find(query, options).toArray() as Promise<T[]>;
	}

	async findOne(query: Query): Promise<T | null> {
		return ((await this.collection.findOne(query)) as T | null) ?? null;
	}

	count(query: Query = {}): Promise<number> {
		return this.collection.countDocuments(query);
	}

	async update(query: Query, set: Partial<T>, options: { multi?: boolean } = {}): Promise<number> {
		const result = options.multi
			? await this.collection.updateMany(query, { $set: set })
			: await this.collection.updateOne(query, { $set: set });
		return result.matchedCount;
	}

	async ensureIndex(field: string, unique: boolean): Promise<void> {
		await this.collection.createIndex({ [field]: 1 }, { unique });
	}
}

interface Adapter {
	init(broker: unknown, service: unknown): void;
	connect(): Promise<void>;
	disconnect(): Promise<void>;
	db?: unknown;
	collection?: unknown;
}

export interface DbSettings {
	/** Embedded store folder, "" for memory only. */
	dataDir: string;
	mongoUri: string | null;
}

/**
 * `DbMixin({ records: {} as RecordDoc, ... })`: connects one store per collection before
 * the service's own `started` runs, and closes them after its `stopped`.
 */
export function DbMixin<C extends Record<string, object>>(collections: { [K in keyof C]: { uniqueIndexes?: string[]; indexes?: string[] } }): Partial<ServiceSchema<any>> {
	return {
		actions: {
			/** Pages one owned collection by `_id` (ascending): the audit and the export read through it. */
			page: {
				visibility: "public",
				params: pageParams,
				async handler(this: any, ctx: any) {
					const { collection, after, limit = 1000 } = ctx.params as PageParams;
					const store: Store<{ _id: string }> | undefined = this.stores[collection];
					if (!store) throw new Errors.MoleculerClientError(`Unknown collection "${collection}"; ${this.name} owns: ${Object.keys(collections).join(", ")}`, 404, "UNKNOWN_COLLECTION", { collection });
					const docs = await store.find(after === undefined ? {} : { _id: { $gt: after } }, { sort: { _id: 1 }, limit });
					return { docs, next: docs.length === limit ? docs[docs.length - 1]._id : null };
				}
			}
		},
		async started(this: any) {
			const settings = this.settings as DbSettings;
			this.adapters = [];
			this.stores = {};
			if (!settings.mongoUri && settings.dataDir) fs.mkdirSync(settings.dataDir, { recursive: true });
			for (const [name, spec] of Object.entries(collections)) {
				const adapter: Adapter = settings.mongoUri
					? new MongoDbAdapter(settings.mongoUri, { useUnifiedTopology: true })
					: new MemoryAdapter(settings.dataDir ? { filename: path.join(settings.dataDir, `${name}.db`) } : {});
				adapter.init(this.broker, { schema: { collection: name }, logger: this.logger });
				await adapter.connect();
				this.adapters.push(adapter);
				const store: Store<object> = settings.mongoUri
					? new MongoStore(name, adapter.collection as MongoCollection)
					: new NedbStore(name, adapter.db as NedbDatastore);
				// Unique indexes first: they are what makes double signatures impossible.
				for (const field of spec.uniqueIndexes ?? []) await store.ensureIndex(field, true);
				for (const field of spec.indexes ?? []) await store.ensureIndex(field, false);
				this.stores[name] = store;
			}
			this.logger.info(`Stores ready: ${Object.keys(collections).join(", ")} on ${settings.mongoUri ? "MongoDB" : settings.dataDir ? `NeDB files in ${settings.dataDir}` : "memory"}`);
		},
		async stopped(this: any) {
			for (const adapter of this.adapters ?? []) await adapter.disconnect();
		}
	};
}
