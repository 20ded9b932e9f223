/**
 * The one place that turns the validated configuration into each service's settings.
 * `moleculer-runner` (through each service file's default export), `npm start`, the CLIs and
 * the tests all build their services from here, so a setting cannot differ between them.
 */
import type { StoreSettings } from "../mixins/store.mixin";
import { apiOptions, type ApiOptions } from "./api/settings";
import type { BatcherOptions } from "./batcher/batcher";
import type { AppConfig } from "./config";
import type { KeyringOptions } from "./keyring/keyring";
import type { ElectionOptions } from "./keyring/election";
import type { SignerOptions } from "./signer/signer";

export interface RecordsSettings extends StoreSettings {
	/** Records to seed when the store is empty; 0 never seeds (read-only tools). */
	seedCount: number;
}
export type KeyringSettings = KeyringOptions & ElectionOptions;
export type BatcherSettings = BatcherOptions & StoreSettings;

export interface ServiceSettings {
	records: RecordsSettings;
	keyring: KeyringSettings;
	batcher: BatcherSettings;
	signer: SignerOptions;
	metrics: Record<string, never>;
	api: ApiOptions;
}

export type ServiceName = keyof ServiceSettings;

/**
 * How long one `signer.signBatch` may take: the longest wait for a key, a whole lease, and
 * slack for fetching and storing.
 */
export function signTimeoutMs(config: Pick<AppConfig, "acquireWaitMs" | "leaseTtlMs">): number {
	return config.acquireWaitMs + config.leaseTtlMs + 10_000;
}

export function serviceSettings(config: AppConfig): ServiceSettings {
	const store: StoreSettings = { dataDir: config.dataDir, mongoUri: config.mongoUri };
	return {
		records: { ...store, seedCount: config.records },
		keyring: {
			...store,
			keys: config.keys,
			masterKey: config.masterKey,
			leaseTtlMs: config.leaseTtlMs,
			leaseGraceMs: config.leaseGraceMs,
			acquireWaitMs: config.acquireWaitMs,
			sweepIntervalMs: 1_000,
			// A keyring killed on another machine holds the role this long at most; one killed on this machine, not at all.
			roleTtlMs: 15_000,
			electionSettleMs: 2_000,
			electionClaimTimeoutMs: 3_000
		},
		batcher: {
			...store,
			batchSize: config.batchSize,
			window: config.window,
			resumeOnStart: true,
			maxAttempts: 10,
			signTimeoutMs: signTimeoutMs(config),
			stopSettleMs: 10_000,
			// Longer than any hop takes; short enough that a batch lost in transit is redone in seconds.
			probeAfterMs: 3_000
		},
		signer: {
			leaseTtlMs: config.leaseTtlMs,
			leaseMarginMs: config.leaseMarginMs,
			acquireWaitMs: config.acquireWaitMs,
			// Below the broker's tracking shutdownTimeout (15 s): releases go out before the transport closes.
			shutdownDrainMs: 10_000,
			releaseTimeoutMs: 10_000,
			storeTimeoutMs: 10_000,
			signingThreads: config.signingThreads
		},
		metrics: {},
		api: apiOptions(config)
	};
}
