/**
 * What `npm run audit` and `npm run export` share: their command-line handling and access to
 * the configured store as an audit database. The embedded store's files are read directly,
 * read-only, with no service started (whether or not its owners run). Over NATS the running
 * services are paged. On MongoDB the owners' stores are paged over one connection that creates
 * nothing: no service, no keyring, no master key, no index (src/audit/mongo-pages.ts).
 */
import os from "node:os";
import { ServiceBroker } from "moleculer";
import { openStoreFiles, type AuditDb } from "../audit/audit-db";
import { importFromPages, NATS_DEFAULT_MAX_PAYLOAD, servicePages } from "../audit/collect";
import { MONGO_COLLECTIONS, openMongoPages } from "../audit/mongo-pages";
import { brokerOptions } from "../broker/broker-options";
import { assertNatsReachable } from "../broker/nats-reach";
import { redactUrl } from "../nats-tls";
import { ConfigError, loadConfig, type AppConfig } from "../config";
import type { LogKeys } from "../audit/export-files";
import { LOG_ORIGINS, readLogVerifier } from "../tlog/log-key";
import { UserError } from "../user-error";
import { UsageError, type CliOptions } from "./cli";

export const STORE_SERVICES = ["records", "keyring", "batcher"] as const;
const WAIT_MS = 10_000;

/** The store cannot be reached or is not there: one line, exit code 2. */
export class StoreError extends UserError {}

/** Flags that override the store's configuration (docs/design.md §10), shared by both commands. */
export const STORE_OPTIONS = {
	"data-dir": { type: "string" },
	"mongo-uri": { type: "string" },
	transporter: { type: "string" },
	namespace: { type: "string" },
} as const satisfies CliOptions;

export const STORE_USAGE = [
	"  --data-dir DIR            embedded store folder (DATA_DIR)",
	"  --mongo-uri URI           read MongoDB, creating nothing (MONGO_URI)",
	"  --transporter URL         ask the running services over NATS (TRANSPORTER)",
	"  --namespace NAME          Moleculer namespace of those services (NAMESPACE)",
].join("\n");

/** The configuration with the store flags applied; a bad value is a UsageError naming it. */
export function storeConfig(flags: Record<string, unknown>): AppConfig {
	const configFlags: Record<string, string> = {};
	for (const name of Object.keys(STORE_OPTIONS))
		if (typeof flags[name] === "string") configFlags[name] = flags[name] as string;
	try {
		return loadConfig(process.env, configFlags);
	} catch (err) {
		if (err instanceof ConfigError) throw new UsageError(err.message);
		throw err;
	}
}

export function describeStore(config: AppConfig): string {
	if (config.transporter)
		return `services ${STORE_SERVICES.join(", ")} over ${redactUrl(config.transporter)} (namespace ${config.namespace})`;
	if (config.mongoUri) return `MongoDB ${config.mongoUri.replace(/\/\/[^@/]*@/, "//***@")}`;
	return `embedded store in ${config.dataDir}`;
}

async function within<T>(ms: number, work: Promise<T>, onTimeout: () => Error): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	try {
		return await Promise.race([
			work,
			new Promise<never>((_, reject) => (timer = setTimeout(() => reject(onTimeout()), ms))),
		]);
	} finally {
		clearTimeout(timer);
	}
}

async function startRemote(config: AppConfig): Promise<ServiceBroker> {
	await assertNatsReachable(
		config.transporter!,
		"or leave TRANSPORTER out to read the embedded store (or MONGO_URI) here",
	);
	// Its own node id: a NODE_ID meant for a long-running node must not be taken twice.
	const broker = new ServiceBroker(
		brokerOptions(config, { logLevel: "warn", nodeID: `cli-${os.hostname()}-${process.pid}` }),
	);
	try {
		await within(
			WAIT_MS,
			broker.start(),
			() =>
				new StoreError(
					`Cannot reach NATS at ${redactUrl(config.transporter)} within ${WAIT_MS / 1000} s: is nats-server running?`,
				),
		);
		try {
			await broker.waitForServices([...STORE_SERVICES], WAIT_MS);
		} catch (err) {
			const statuses =
				(err as { data?: { statuses?: Array<{ name: string; available: boolean }> } }).data
					?.statuses ?? [];
			const missing = statuses.length
				? statuses.filter((s) => !s.available).map((s) => s.name)
				: [...STORE_SERVICES];
			throw new StoreError(
				`No ${missing.join(", ")} service answered over ${redactUrl(config.transporter)} (namespace ${config.namespace}) within ${WAIT_MS / 1000} s: ` +
					`start ${missing.length > 1 ? "them" : "it"} first (e.g. \`SERVICES=${missing.join(",")} npm run serve\` with the same TRANSPORTER), or audit the embedded store without TRANSPORTER`,
			);
		}
		return broker;
	} catch (err) {
		await stopQuietly(broker);
		throw err;
	}
}

async function stopQuietly(broker: ServiceBroker): Promise<void> {
	// A broker stuck reconnecting must not keep the command from exiting.
	await within(5_000, broker.stop(), () => new Error("stop timed out")).catch(() => undefined);
}

/** Runs `work` with a broker on which the running records, keyring and batcher services answer over NATS, then stops it. */
export async function withRemoteStore<T>(
	config: AppConfig,
	work: (broker: ServiceBroker) => Promise<T>,
): Promise<T> {
	const broker = await startRemote(config);
	try {
		return await work(broker);
	} finally {
		await stopQuietly(broker);
	}
}

/** MongoDB read as it is: a wrong database name is reported, never created. */
async function importFromMongo(config: AppConfig, uri: string): Promise<AuditDb> {
	let pages;
	try {
		pages = await openMongoPages(uri, { serverSelectionTimeoutMS: WAIT_MS });
	} catch (err) {
		throw new StoreError(
			`Cannot reach ${describeStore(config)} within ${WAIT_MS / 1000} s: is mongod running there? (${(err as Error).message})`,
		);
	}
	try {
		if ((await pages.present()).length === 0)
			throw new StoreError(
				`${describeStore(config)} has none of the store's collections (${MONGO_COLLECTIONS.join(", ")}): is the database name in MONGO_URI right? Nothing was created.`,
			);
		return await importFromPages(pages);
	} finally {
		await pages.close().catch(() => undefined);
	}
}

/** The configured store as an audit database; the caller closes it. */
export async function openAuditDb(config: AppConfig): Promise<AuditDb> {
	// Over a transporter each page must fit a default nats-server message.
	if (config.transporter)
		return withRemoteStore(config, (broker) =>
			importFromPages(servicePages(broker), { maxPayloadBytes: NATS_DEFAULT_MAX_PAYLOAD }),
		);
	if (config.mongoUri) return importFromMongo(config, config.mongoUri);
	return openStoreFiles(config.dataDir);
}

/** The logs' verifier keys from the configured log keys, read only: null where none is set or made yet. */
export function logVerifierKeys(config: Pick<AppConfig, "logKeys">): LogKeys {
	return {
		signatures: readLogVerifier({ ...config.logKeys.signatures, name: LOG_ORIGINS.signatures }),
		leases: readLogVerifier({ ...config.logKeys.leases, name: LOG_ORIGINS.leases }),
	};
}
