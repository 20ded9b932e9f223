/**
 * Builds a broker carrying some or all of the services with their settings taken from one
 * validated configuration: `npm start`, the benchmark, the CLIs and the tests share it.
 */
import { ServiceBroker, type ServiceSchema } from "moleculer";
import BatcherService from "../services/batcher.service";
import KeyringService from "../services/keyring.service";
import MetricsService from "../services/metrics.service";
import RecordsService from "../services/records.service";
import SignerService from "../services/signer.service";
import { brokerOptions, type BrokerOverrides } from "./broker-options";
import type { AppConfig } from "./config";

export type ServiceName = "records" | "keyring" | "batcher" | "signer" | "metrics";
export const ALL_SERVICES: ServiceName[] = ["records", "keyring", "batcher", "signer", "metrics"];

const SCHEMAS: Record<ServiceName, ServiceSchema<any, any, any, any>> = {
	records: RecordsService,
	keyring: KeyringService,
	batcher: BatcherService,
	signer: SignerService,
	metrics: MetricsService
};

/** Each service's settings, from the configuration (flags already applied). */
export function serviceSettings(config: AppConfig): Record<ServiceName, Record<string, unknown>> {
	const store = { dataDir: config.dataDir, mongoUri: config.mongoUri };
	return {
		records: { ...store, seedCount: config.records },
		keyring: { ...store, keys: config.keys, masterKey: config.masterKey, leaseTtlMs: config.leaseTtlMs, leaseGraceMs: config.leaseGraceMs, acquireWaitMs: config.acquireWaitMs },
		batcher: { ...store, batchSize: config.batchSize, window: config.window, signTimeoutMs: config.acquireWaitMs + config.leaseTtlMs + 10_000 },
		signer: { leaseTtlMs: config.leaseTtlMs, leaseMarginMs: config.leaseMarginMs, acquireWaitMs: config.acquireWaitMs },
		metrics: {}
	};
}

export interface SystemOptions extends BrokerOverrides {
	services?: ServiceName[];
	/** Per-service setting overrides on top of the configuration's (tests). */
	settings?: Partial<Record<ServiceName, Record<string, unknown>>>;
}

export function createSystem(config: AppConfig, options: SystemOptions = {}): ServiceBroker {
	const broker = new ServiceBroker(brokerOptions(config, options));
	const settings = serviceSettings(config);
	for (const name of options.services ?? ALL_SERVICES)
		broker.createService({ name, mixins: [SCHEMAS[name]], settings: { ...settings[name], ...options.settings?.[name] } } as ServiceSchema);
	return broker;
}
