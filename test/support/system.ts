/** A whole system in one test process: real broker, real services, in-memory stores. */
import type { ServiceBroker } from "moleculer";
import { createKeyringService, type KeyringServiceDeps } from "../../services/keyring.service";
import { createSignerService } from "../../services/signer.service";
import { auditServices } from "../../src/audit/collect";
import { loadConfig } from "../../src/config";
import { Events, type RunCompletedEvent, type RunDoc } from "../../src/contract";
import { serviceSettings, type KeyringSettings } from "../../src/settings";
import { createSystem, type BrokerSchema, type SystemOptions } from "../../src/system";

export interface TestSystemOptions extends SystemOptions {
	records: number;
	keys: number;
	batchSize?: number;
	window?: number;
	dataDir?: string;
	env?: Record<string, string>;
}

export interface TestSystem {
	broker: ServiceBroker;
	/** Resolves with the next run.completed event. */
	nextCompletion(): Promise<RunCompletedEvent & { status: string; error?: string }>;
}

/** The configuration a test system runs with: in-memory stores unless `dataDir` is given. */
export function testConfig(options: TestSystemOptions) {
	return loadConfig({
		RECORDS: String(options.records),
		KEYS: String(options.keys),
		BATCH_SIZE: String(options.batchSize ?? 300),
		WINDOW: String(options.window ?? 0),
		DATA_DIR: options.dataDir ?? "",
		...options.env,
	});
}

/** A service on `broker` that hands each run.completed event to whoever waits for the next one. */
export function watchCompletions(broker: ServiceBroker): TestSystem["nextCompletion"] {
	const waiters: Array<(event: any) => void> = [];
	broker.createService({
		name: "test-watch",
		events: {
			[Events.runCompleted]: (ctx: { params: unknown }) =>
				waiters.splice(0).forEach((w) => w(ctx.params)),
		},
	});
	return () => new Promise((resolve) => waiters.push(resolve));
}

export async function startSystem(options: TestSystemOptions): Promise<TestSystem> {
	const broker = createSystem(testConfig(options), { logLevel: false, ...options });
	const nextCompletion = watchCompletions(broker);
	await broker.start();
	return { broker, nextCompletion };
}

/** Starts a run and waits for it to end; returns the run and the completion event. */
export async function runToCompletion(system: TestSystem, batchSize?: number) {
	const completion = system.nextCompletion();
	const run = await system.broker.call<RunDoc, object>(
		"batcher.start",
		batchSize === undefined ? {} : { batchSize },
	);
	return { run, completion: await completion };
}

export async function auditSystem(broker: ServiceBroker) {
	return auditServices(broker);
}

/** The keyring service with the defaults of an in-memory test configuration, and `overrides`. */
export function keyringService(
	overrides: Partial<KeyringSettings> = {},
	deps: KeyringServiceDeps = {},
): BrokerSchema {
	return createKeyringService(
		{ ...serviceSettings(loadConfig({ DATA_DIR: "" })).keyring, ...overrides },
		deps,
	);
}

/** The signer service with the defaults of an in-memory test configuration (to join a running system). */
export function signerService(): BrokerSchema {
	return createSignerService(serviceSettings(loadConfig({ DATA_DIR: "" })).signer);
}
