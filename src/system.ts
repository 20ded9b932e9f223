/**
 * Builds a broker carrying some or all of the services, their settings assembled from one
 * validated configuration (src/settings.ts): `npm start`, the benchmark, the CLIs and the
 * tests share it.
 */
import { ServiceBroker } from "moleculer";
import { createBatcherService } from "../services/batcher.service";
import { createKeyringService } from "../services/keyring.service";
import { createMetricsService } from "../services/metrics.service";
import { createRecordsService } from "../services/records.service";
import { createSignerService } from "../services/signer.service";
import { brokerOptions, type BrokerOverrides } from "./broker/broker-options";
import type { AppConfig } from "./config";
import type { BrokerSchema } from "./service-schema";
import { serviceSettings, type ServiceSettings } from "./settings";

export type SystemService = Exclude<keyof ServiceSettings, "api">;
export const ALL_SERVICES: SystemService[] = ["records", "keyring", "batcher", "signer", "metrics"];

export type { BrokerSchema } from "./service-schema";

/** Each service's schema from its settings. */
export function serviceSchema(name: SystemService, settings: ServiceSettings): BrokerSchema {
	switch (name) {
		case "records":
			return createRecordsService(settings.records);
		case "keyring":
			return createKeyringService(settings.keyring);
		case "batcher":
			return createBatcherService(settings.batcher);
		case "signer":
			return createSignerService(settings.signer);
		case "metrics":
			return createMetricsService();
	}
}

export interface SystemOptions extends BrokerOverrides {
	services?: SystemService[];
	/** Setting overrides on top of the configuration's (tests, read-only tools). */
	settings?: { [S in SystemService]?: Partial<ServiceSettings[S]> };
}

/** The settings of `config` with `overrides` applied per service. */
export function settingsWith(
	config: AppConfig,
	overrides: SystemOptions["settings"] = {},
): ServiceSettings {
	const settings = serviceSettings(config);
	for (const name of ALL_SERVICES) Object.assign(settings[name], overrides[name]);
	return settings;
}

export function createSystem(config: AppConfig, options: SystemOptions = {}): ServiceBroker {
	const broker = new ServiceBroker(brokerOptions(config, options));
	const settings = settingsWith(config, options.settings);
	for (const name of options.services ?? ALL_SERVICES)
		broker.createService(serviceSchema(name, settings));
	return broker;
}
