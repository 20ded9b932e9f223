/**
 * What `npm run audit` and `npm run export` share: their command-line handling and access to
 * the configured store as an audit database. The embedded store's files are read directly,
 * read-only, with no service started (whether or not its owners run). Over NATS the running
 * services are paged; on MongoDB the owning services are started in this process, read-only
 * (no seeding, no resume, no sweep), and paged.
 */
import os from "node:os";
import { ServiceBroker } from "moleculer";
import { openStoreFiles, type AuditDb } from "../audit/audit-db";
import { importFromPages, NATS_DEFAULT_MAX_PAYLOAD } from "../audit/collect";
import { brokerOptions } from "../broker-options";
import { ConfigError, loadConfig, type AppConfig } from "../config";
import { serviceSchema, settingsWith } from "../system";
import { UserError } from "../user-error";
import { UsageError, type CliOptions } from "./cli";

export const STORE_SERVICES = ["records", "keyring", "batcher"] as const;
const WAIT_MS = 10_000;

/** The store cannot be reached or is not there: one line, exit code 2. */
export class StoreError extends UserError {}

/** Flags that override the store's configuration (DESIGN.md section 6), shared by both commands. */
export const STORE_OPTIONS = {
	"data-dir": { type: "string" },
	"mongo-uri": { type: "string" },
	transporter: { type: "string" },
	namespace: { type: "string" }
} as const satisfies CliOptions;

export const STORE_USAGE = [
	"  --data-dir DIR            embedded store folder (DATA_DIR)",
	"  --mongo-uri URI           read MongoDB (MONGO_URI)",
	"  --transporter URL         ask the running services over NATS (TRANSPORTER)",
	"  --namespace NAME          Moleculer namespace of those services (NAMESPACE)"
].join("\n");


/** The configuration with the store flags applied; a bad value is a UsageError naming it. */
export function storeConfig(flags: Record<string, unknown>): AppConfig {
	const configFlags: Record<string, string> = {};
	for (const name of Object.keys(STORE_OPTIONS)) if (typeof flags[name] === "string") configFlags[name] = flags[name] as string;
	try {
		return loadConfig(process.env, configFlags);
	} catch (err) {
		if (err instanceof ConfigError) throw new UsageError(err.message);
		throw err;
	}
}

export function describeStore(config: AppConfig): string {
	if (config.transporter) return `services ${STORE_SERVICES.join(", ")} over ${config.transporter} (namespace ${config.namespace})`;
	if (config.mongoUri) return `MongoDB ${config.mongoUri.replace(/\/\/[^@/]*@/, "//***@")}`;
	return `embedded store in ${config.dataDir}`;
}

async function within<T>(ms: number, work: Promise<T>, onTimeout: () => Error): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	try {
		return await Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(onTimeout()), ms)))]);
	} finally {
		clearTimeout(timer);
	}
}

async function startRemote(config: AppConfig): Promise<ServiceBroker> {
	// Its own node id: a NODE_ID meant for a long-running node must not be taken twice.
	const broker = new ServiceBroker(brokerOptions(config, { logLevel: "warn", nodeID: `cli-${os.hostname()}-${process.pid}` }));
	try {
		await within(WAIT_MS, broker.start(), () => new StoreError(`Cannot reach NATS at ${config.transporter} within ${WAIT_MS / 1000} s: is nats-server running?`));
		try {
			await broker.waitForServices([...STORE_SERVICES], WAIT_MS);
		} catch (err) {
			const statuses = ((err as { data?: { statuses?: Array<{ name: string; available: boolean }> } }).data?.statuses) ?? [];
			const missing = statuses.length ? statuses.filter(s => !s.available).map(s => s.name) : [...STORE_SERVICES];
			throw new StoreError(
				`No ${missing.join(", ")} service answered over ${config.transporter} (namespace ${config.namespace}) within ${WAIT_MS / 1000} s: ` +
				`start ${missing.length > 1 ? "them" : "it"} first (e.g. \`SERVICES=${missing.join(",")} npm run serve\` with the same TRANSPORTER), or audit the embedded store without TRANSPORTER`
			);
		}
		return broker;
	} catch (err) {
		await stopQuietly(broker);
		throw err;
	}
}

async function startInProcess(config: AppConfig): Promise<ServiceBroker> {
	// Services started on the embedded default would create its files: those are read directly instead.
	if (!config.mongoUri) throw new StoreError("The embedded store is read from its files (openAuditDb), never through services started here");
	const broker = new ServiceBroker(brokerOptions(config, { logLevel: "warn" }));
	// Read-only: no seeding, no resumed run, no expiry sweep; the store as the flags name it.
	const settings = settingsWith(config, { records: { seedCount: 0 }, keyring: { sweepIntervalMs: 0 }, batcher: { resumeOnStart: false } });
	for (const name of STORE_SERVICES) broker.createService(serviceSchema(name, settings));
	try {
		await broker.start();
		return broker;
	} catch (err) {
		await stopQuietly(broker);
		throw new StoreError(`Cannot open ${describeStore(config)}: ${(err as Error).message}`);
	}
}

async function stopQuietly(broker: ServiceBroker): Promise<void> {
	// A broker stuck reconnecting must not keep the command from exiting.
	await within(5_000, broker.stop(), () => new Error("stop timed out")).catch(() => undefined);
}

/** Runs `work` with a broker on which the records, keyring and batcher actions answer (over NATS, or started here on MongoDB), then stops it. */
export async function withStore<T>(config: AppConfig, work: (broker: ServiceBroker) => Promise<T>): Promise<T> {
	const broker = config.transporter ? await startRemote(config) : await startInProcess(config);
	try {
		return await work(broker);
	} finally {
		await stopQuietly(broker);
	}
}

/** The configured store as an audit database; the caller closes it. */
export async function openAuditDb(config: AppConfig): Promise<AuditDb> {
	if (!config.transporter && !config.mongoUri) return openStoreFiles(config.dataDir);
	// Over a transporter each page must fit a default nats-server message.
	return withStore(config, broker => importFromPages(broker, config.transporter ? { maxPayloadBytes: NATS_DEFAULT_MAX_PAYLOAD } : {}));
}
