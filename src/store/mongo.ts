/**
 * MongoDB for the services that own data, connected through moleculer-db-adapter-mongo (the
 * user's adapter, driver 3.7) and used through the driver's documented collection API.
 *
 * Writes are acknowledged by a majority of the replica set and journaled unless the URI says
 * otherwise: "written before the reply" must survive a failover (docs/deploy.md).
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const MongoDbAdapter = require("moleculer-db-adapter-mongo");

/** The parts of the driver's Collection these stores use (mongodb 3.7). */
export interface MongoCollection {
	insertOne(doc: object): Promise<unknown>;
	insertMany(docs: object[], options?: object): Promise<{ insertedCount: number }>;
	find(query: object, options?: object): MongoCursor;
	findOne(query: object, options?: object): Promise<any>;
	findOneAndUpdate(query: object, update: object, options?: object): Promise<{ value: any }>;
	updateOne(query: object, update: object, options?: object): Promise<{ matchedCount: number; modifiedCount: number; upsertedCount?: number }>;
	updateMany(query: object, update: object, options?: object): Promise<{ matchedCount: number; modifiedCount: number }>;
	deleteMany(query: object): Promise<unknown>;
	estimatedDocumentCount(): Promise<number>;
	countDocuments(query: object, options?: object): Promise<number>;
	createIndex(spec: object, options?: object): Promise<unknown>;
	aggregate(pipeline: object[], options?: object): MongoCursor;
}

export interface MongoCursor extends AsyncIterable<any> {
	sort(spec: object): MongoCursor;
	limit(n: number): MongoCursor;
	project(spec: object): MongoCursor;
	hint(index: object | string): MongoCursor;
	toArray(): Promise<any[]>;
}

export interface MongoDb {
	collection(name: string): MongoCollection;
	command(command: object): Promise<any>;
}

export interface MongoConnection {
	db: MongoDb;
	close(): Promise<void>;
}

/** E11000: the write was refused by a unique index. */
export const DUPLICATE_KEY = 11000;

export function isDuplicateKey(err: unknown): boolean {
	return (err as { code?: number })?.code === DUPLICATE_KEY;
}

/** Majority, journaled writes, unless the URI sets its own write concern. */
export function writeConcernOptions(uri: string): object {
	const query = uri.split("?")[1] ?? "";
	const params = new URLSearchParams(query);
	if (params.has("w") || params.has("journal") || params.has("j")) return {};
	// The driver's writeConcern option: top-level w/j/wtimeout are deprecated in 3.7.
	return { writeConcern: { w: "majority", j: true, wtimeout: 10_000 } };
}

interface Adapter {
	init(broker: unknown, service: unknown): void;
	connect(): Promise<void>;
	disconnect(): Promise<void>;
	db: MongoDb;
}

/** Connects through the adapter; `service` is the owning service (its broker and logger); `options` go to the driver. */
export async function connectMongo(uri: string, service: { broker: unknown; logger: unknown }, collection: string, options: object = {}): Promise<MongoConnection> {
	const adapter: Adapter = new MongoDbAdapter(uri, { useUnifiedTopology: true, ...writeConcernOptions(uri), ...options });
	adapter.init(service.broker, { schema: { collection }, logger: service.logger });
	await adapter.connect();
	return { db: adapter.db, close: () => adapter.disconnect() };
}
