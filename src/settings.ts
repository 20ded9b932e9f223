/**
 * The one place that turns the validated configuration into each service's settings.
 * `moleculer-runner` (through each service file's default export), `npm start`, the CLIs and
 * the tests all build their services from here, so a setting cannot differ between them.
 */
import path from "node:path";
import type { StoreSettings } from "../mixins/store.mixin";
import type { TrustSettings } from "./identity/authority";
import {
	CREDENTIAL_FILES,
	type CredentialRole,
	type CredentialSettings,
} from "./identity/credential";
import { apiOptions, type ApiOptions } from "./api/settings";
import type { BatcherOptions } from "./batcher/batcher";
import { credentialSettings, type AppConfig, type KeyStore } from "./config";
import type { KeyringOptions } from "./keyring/keyring";
import type { TokenSettings } from "./pkcs11/token";
import type { ElectionOptions } from "./keyring/election";
import type { SignerOptions } from "./signer/signer";
import { LOG_ORIGINS, type LogKeySettings } from "./tlog/log-key";
import { CHECKPOINT_EVERY_MS } from "./tlog/service-log";

export interface RecordsSettings extends StoreSettings {
	/** Records to seed when the store is empty; 0 never seeds (read-only tools). */
	seedCount: number;
	/** Where the keyring's public key is found: lease tokens are checked with it. */
	trust: TrustSettings;
	/** The batcher's credential: only its holder closes batches. */
	batcherCredential: CredentialSettings;
	/** The signature log's key (docs/design.md §8.4). */
	signatureLog: LogKeySettings;
	/** How often the signature log is checkpointed while it grows (besides each run's end). */
	checkpointEveryMs: number;
}
export type KeyringSettings = KeyringOptions &
	ElectionOptions & {
		leaseLog: LogKeySettings;
		/** How often the lease log is checkpointed while it grows (besides each run's end). */
		checkpointEveryMs: number;
	};
/** The batcher's options, and its credential (never published: `$secureSettings`). */
export type BatcherSettings = BatcherOptions &
	StoreSettings & {
		credential: CredentialSettings;
		/** Where it finds the keyring's public key, for its request MAC key (docs/design.md §6.9). */
		trust: TrustSettings;
	};
/** A signer's options, and where its credential is (never published: `$secureSettings`). */
export type SignerSettings = SignerOptions & {
	/** KEY_STORE: software keys come sealed with each lease; pkcs11 keys are signed with in the token. */
	keyStore: KeyStore;
	/** The token, with KEY_STORE=pkcs11 (its PIN: never in published settings). */
	token: TokenSettings | null;
	credential: CredentialSettings;
	/** Where it finds the keyring's public key, for its request MAC key (docs/design.md §6.9). */
	trust: TrustSettings;
};

export interface ServiceSettings {
	records: RecordsSettings;
	keyring: KeyringSettings;
	batcher: BatcherSettings;
	signer: SignerSettings;
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

/**
 * The credential of `role` an embedded keyring enrols by itself (creating it when absent): the
 * one its signers (or its batcher) share through DATA_DIR (npm start, serve, cluster) or
 * SIGNER_KEY_FILE / BATCHER_KEY_FILE (compose). On MongoDB without the file, none: those are
 * enrolled by an operator command.
 */
function localCredentialOf(config: AppConfig, role: CredentialRole): string | null {
	const file = role === "signer" ? config.signerKeyFile : config.batcherKeyFile;
	if (file) return file;
	if (config.mongoUri) return null;
	return config.dataDir ? path.join(config.dataDir, CREDENTIAL_FILES[role]) : "";
}

export function serviceSettings(config: AppConfig): ServiceSettings {
	const store: StoreSettings = { dataDir: config.dataDir, mongoUri: config.mongoUri };
	const trust: TrustSettings = {
		keyringPublicKey: config.keyringPublicKey,
		keyringPublicKeyFile: config.keyringPublicKeyFile,
	};
	return {
		records: {
			...store,
			seedCount: config.records,
			trust,
			batcherCredential: credentialSettings(config, "batcher"),
			signatureLog: { ...config.logKeys.signatures, name: LOG_ORIGINS.signatures },
			checkpointEveryMs: CHECKPOINT_EVERY_MS,
		},
		keyring: {
			...store,
			keys: config.keys,
			masterKey: config.masterKey,
			masterKeyNext: config.masterKeyNext,
			enrolLocal: {
				signer: localCredentialOf(config, "signer"),
				batcher: localCredentialOf(config, "batcher"),
			},
			publicKey: config.keyringPublicKey,
			publicKeyFile: config.keyringPublicKeyFile,
			keyStore: config.keyStore,
			token: config.token,
			leaseTtlMs: config.leaseTtlMs,
			leaseGraceMs: config.leaseGraceMs,
			acquireWaitMs: config.acquireWaitMs,
			keyMaxUses: config.keyMaxUses || null,
			sweepIntervalMs: 1_000,
			// A keyring killed on another machine holds the role this long at most; one killed on this machine, not at all.
			roleTtlMs: 15_000,
			electionSettleMs: 2_000,
			electionClaimTimeoutMs: 3_000,
			leaseLog: { ...config.logKeys.leases, name: LOG_ORIGINS.leases },
			checkpointEveryMs: CHECKPOINT_EVERY_MS,
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
			probeAfterMs: 3_000,
			lingerMs: config.lingerMs,
			// A long-running node goes on with an interrupted follow run; npm start ends it (src/cli/start.ts).
			interruptedFollow: "resume",
			credential: credentialSettings(config, "batcher"),
			trust,
		},
		signer: {
			leaseTtlMs: config.leaseTtlMs,
			leaseMarginMs: config.leaseMarginMs,
			acquireWaitMs: config.acquireWaitMs,
			// Below the broker's tracking shutdownTimeout (15 s): releases go out before the transport closes.
			shutdownDrainMs: 10_000,
			releaseTimeoutMs: 10_000,
			storeTimeoutMs: 10_000,
			signingThreads: config.signingThreads,
			keyStore: config.keyStore,
			token: config.token,
			credential: credentialSettings(config, "signer"),
			trust,
		},
		metrics: {},
		api: apiOptions(config),
	};
}
