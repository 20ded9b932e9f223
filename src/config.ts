/**
 * The one place the environment is read (docs/design.md §10, whose table lists every variable
 * and test/unit/config-reference.test.ts keeps complete). Every value is validated here, at
 * start-up, with a message that names the variable and the allowed range.
 */
import fs from "node:fs";
import path from "node:path";
import { AUTHORITY_PUBLIC_FILE, parseAuthorityKey } from "./identity/authority";
import {
	mapTransporterUrls,
	natsEndpoints,
	readNatsTls,
	redactUrl,
	transporterUrls,
	type NatsTls,
} from "./nats-tls";
import type { CredentialRole, CredentialSettings } from "./identity/credential";
import { proxyRule } from "./ip-address";
import { LOG_KEY_FILES } from "./tlog/log-key";
import { parseSignerKey } from "./tlog/note";
import type { TokenSettings } from "./pkcs11/token";
import { UserError } from "./user-error";

/** KEY_STORE: where the keyring's private keys live (docs/design.md §5.1, §5.9). */
export type KeyStore = "software" | "pkcs11";

export interface AppConfig {
	/** Records to seed when the store is empty. */
	records: number;
	/** Keys to generate when the keyring is empty. */
	keys: number;
	/** Batch size of a run started without one. */
	batchSize: number;
	/** Embedded store folder; "" keeps every collection in memory (tests). */
	dataDir: string;
	mongoUri: string | null;
	transporter: string | null;
	/** NATS_CA_FILE, NATS_CERT_FILE, NATS_KEY_FILE, read and checked (src/nats-tls.ts); null when none is set. */
	natsTls: NatsTls | null;
	/** base64 of 32 bytes, or null to use (or create) `DATA_DIR/master.key`. */
	masterKey: string | null;
	/** KEYRING_MASTER_KEY_NEXT: the next master key of a rotation beside KEYRING_MASTER_KEY (docs/design.md §5.8), or null. */
	masterKeyNext: string | null;
	/** SIGNER_KEY: a signer's credential itself (src/identity/credential.ts), or null. */
	signerKey: string | null;
	/** SIGNER_KEY_FILE: where a signer reads its credential (and an embedded keyring enrols it), or null for `DATA_DIR/signer.key`. */
	signerKeyFile: string | null;
	/** BATCHER_KEY: the batcher's credential itself, or null. */
	batcherKey: string | null;
	/** BATCHER_KEY_FILE: where the batcher (and records, checking its closes) reads its credential, or null for `DATA_DIR/batcher.key`. */
	batcherKeyFile: string | null;
	/** KEYRING_PUBLIC_KEY: the keyring's public key lease tokens are checked with (src/identity/authority.ts), or null. */
	keyringPublicKey: string | null;
	/** KEYRING_PUBLIC_KEY_FILE: where the keyring writes it and records reads it; default DATA_DIR/keyring.pub, null without DATA_DIR. */
	keyringPublicKeyFile: string | null;
	/** SIGNATURE_LOG_KEY(_FILE), LEASE_LOG_KEY(_FILE): each log's checkpoint key, or its file (default under DATA_DIR). */
	logKeys: Record<keyof typeof LOG_KEY_FILES, { key: string | null; keyFile: string | null }>;
	leaseTtlMs: number;
	/** A signer stops signing this long before its lease expires. */
	leaseMarginMs: number;
	/** The keyring reclaims an expired lease only this long after its deadline. */
	leaseGraceMs: number;
	/** How long an acquire may wait for a free key before failing. */
	acquireWaitMs: number;
	/** KEY_MAX_USES: leases a key serves before the keyring retires it by itself; 0 = no limit. */
	keyMaxUses: number;
	/** Batches in flight at once; 0 picks one from the signers' capacity. */
	window: number;
	/** A follow run dispatches a batch smaller than its size once its oldest record waited this long. */
	lingerMs: number;
	/** A signer's signing threads; 0 = one per core. */
	signingThreads: number;
	nodeId: string | null;
	namespace: string;
	/** LOG_LEVEL, lower-cased: one of LOG_LEVELS. */
	logLevel: string;
	/** LOG_FORMAT: "text" for people, "json" for one JSON object per line (src/log-format.ts). */
	logFormat: "text" | "json";
	port: number;
	metricsPort: number;
	/** Which of PORT, METRICS_PORT and HEALTH_PORT the user set: those are errors when taken; defaults give way (src/broker/listen.ts). */
	explicitPorts: Record<PortKey, boolean>;
	/** `/health/live` and `/health/ready` of every long-running node (src/broker/health.ts). */
	healthPort: number;
	/** API_KEYS_FILE: the gateway's API keys (src/api/api-keys.ts); default DATA_DIR/api-keys.json, null without DATA_DIR. */
	apiKeysFile: string | null;
	/** WEBHOOK_ALLOW_PRIVATE: webhooks may call loopback, link-local and private addresses (off by default). */
	webhookAllowPrivate: boolean;
	/** TRUSTED_PROXIES: peers whose X-Forwarded-For names the client (src/api/client-address.ts), as `address/prefix`; empty: the header is never read. */
	trustedProxies: string[];
	/** The gateway's token settings: AUTH_SECRET, AUTH_PUBLIC_KEY, AUTH_ISSUER, AUTH_AUDIENCE, AUTH_READS. */
	authEnv: Record<string, string | undefined>;
	/** SERVE_NATS: false when "off", so `npm run serve` starts no local nats-server (src/cli/runner.ts). */
	serveNats: boolean;
	/** KEY_STORE: where the keyring's private keys live (docs/design.md §5.1, §5.9). */
	keyStore: KeyStore;
	/** With KEY_STORE=pkcs11: PKCS11_MODULE, PKCS11_TOKEN_LABEL and the PIN (src/pkcs11/token.ts); null otherwise. */
	token: TokenSettings | null;
}

/** A bad variable or flag: its message names it and the allowed values. */
export class ConfigError extends UserError {}

/** A port to bind, and whether the user set it (taken: an error) or it may give way to a free one (src/broker/listen.ts). */
export interface PortChoice {
	port: number;
	/** The setting the port comes from: PORT, HEALTH_PORT, METRICS_PORT. */
	variable: string;
	/** The user set the variable (a taken port is then an error, not a fallback). */
	explicit: boolean;
}

export type PortKey = "port" | "metricsPort" | "healthPort";
const PORT_VARIABLES: Record<PortKey, string> = {
	port: "PORT",
	metricsPort: "METRICS_PORT",
	healthPort: "HEALTH_PORT",
};

/** What a listener needs to bind `key`'s port (src/broker/listen.ts). */
export function portChoice(config: AppConfig, key: PortKey): PortChoice {
	return {
		port: config[key],
		variable: PORT_VARIABLES[key],
		explicit: config.explicitPorts?.[key] ?? false,
	};
}

export const MAX_BATCH_SIZE = 100_000;

/** Moleculer's log levels, the most severe first: what LOG_LEVEL accepts. */
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace"];

/** Env names, their CLI flags and their validation: the table of docs/design.md §10 lists them. */
const INTEGERS: Array<{
	env: string;
	flag: string;
	key: keyof AppConfig;
	min: number;
	max: number;
	fallback: number;
}> = [
	{ env: "RECORDS", flag: "records", key: "records", min: 1, max: 10_000_000, fallback: 100_000 },
	{ env: "KEYS", flag: "keys", key: "keys", min: 1, max: 10_000, fallback: 100 },
	{
		env: "BATCH_SIZE",
		flag: "batch-size",
		key: "batchSize",
		min: 1,
		max: MAX_BATCH_SIZE,
		fallback: 300,
	},
	{
		env: "LEASE_TTL_MS",
		flag: "lease-ttl-ms",
		key: "leaseTtlMs",
		min: 100,
		max: 3_600_000,
		fallback: 30_000,
	},
	{
		env: "LEASE_MARGIN_MS",
		flag: "lease-margin-ms",
		key: "leaseMarginMs",
		min: 0,
		max: 600_000,
		fallback: 2_000,
	},
	{
		env: "LEASE_GRACE_MS",
		flag: "lease-grace-ms",
		key: "leaseGraceMs",
		min: 0,
		max: 600_000,
		fallback: 2_000,
	},
	{
		env: "ACQUIRE_WAIT_MS",
		flag: "acquire-wait-ms",
		key: "acquireWaitMs",
		min: 0,
		max: 3_600_000,
		fallback: 60_000,
	},
	{
		env: "KEY_MAX_USES",
		flag: "key-max-uses",
		key: "keyMaxUses",
		min: 0,
		max: 1_000_000_000,
		fallback: 0,
	},
	{ env: "WINDOW", flag: "window", key: "window", min: 0, max: 10_000, fallback: 0 },
	{ env: "LINGER_MS", flag: "linger-ms", key: "lingerMs", min: 0, max: 60_000, fallback: 200 },
	{
		env: "SIGNING_THREADS",
		flag: "signing-threads",
		key: "signingThreads",
		min: 0,
		max: 256,
		fallback: 0,
	},
	{ env: "PORT", flag: "port", key: "port", min: 0, max: 65_535, fallback: 3000 },
	{
		env: "METRICS_PORT",
		flag: "metrics-port",
		key: "metricsPort",
		min: 0,
		max: 65_535,
		fallback: 3030,
	},
	{
		env: "HEALTH_PORT",
		flag: "health-port",
		key: "healthPort",
		min: 0,
		max: 65_535,
		fallback: 3001,
	},
];

function parseInteger(raw: string, name: string, min: number, max: number): number {
	const value = Number(raw.trim());
	if (raw.trim() === "" || !Number.isInteger(value) || value < min || value > max)
		throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
	return value;
}

export type Flags = Record<string, string | boolean | undefined>;

/**
 * Builds the configuration from the environment, with command-line flags (`--batch-size`,
 * `--records`, ...) taking precedence. Throws a ConfigError naming the bad value.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, flags: Flags = {}): AppConfig {
	const pick = (envName: string, flag: string): string | undefined => {
		const fromFlag = flags[flag];
		if (typeof fromFlag === "string") return fromFlag;
		return env[envName];
	};
	const config = {
		explicitPorts: { port: false, metricsPort: false, healthPort: false },
	} as AppConfig;
	for (const spec of INTEGERS) {
		const raw = pick(spec.env, spec.flag);
		const name = typeof flags[spec.flag] === "string" ? `--${spec.flag}` : spec.env;
		const given = raw !== undefined && raw !== "";
		(config[spec.key] as number) = given
			? parseInteger(raw, name, spec.min, spec.max)
			: spec.fallback;
		if (given && spec.key in config.explicitPorts)
			config.explicitPorts[spec.key as PortKey] = true;
	}
	if (config.leaseMarginMs >= config.leaseTtlMs)
		throw new ConfigError(
			`LEASE_MARGIN_MS (${config.leaseMarginMs}) must be smaller than LEASE_TTL_MS (${config.leaseTtlMs})`,
		);

	const dataDir = pick("DATA_DIR", "data-dir");
	config.dataDir =
		dataDir === undefined ? path.resolve("data") : dataDir === "" ? "" : path.resolve(dataDir);
	config.mongoUri = pick("MONGO_URI", "mongo-uri") || null;
	if (config.mongoUri && !/^mongodb(\+srv)?:\/\//.test(config.mongoUri))
		throw new ConfigError(
			`MONGO_URI must start with mongodb:// or mongodb+srv://, got "${config.mongoUri}"`,
		);
	config.transporter = pick("TRANSPORTER", "transporter") || null;
	if (config.transporter && env.NATS_PASSWORD_FILE)
		config.transporter = withPasswordFrom(config.transporter, env.NATS_PASSWORD_FILE);
	config.natsTls = natsTlsFrom(config.transporter, {
		caFile: env.NATS_CA_FILE,
		certFile: env.NATS_CERT_FILE,
		keyFile: env.NATS_KEY_FILE,
	});
	config.masterKey = pick("KEYRING_MASTER_KEY", "master-key") || null;
	if (config.masterKey && Buffer.from(config.masterKey, "base64").length !== 32)
		throw new ConfigError(
			"KEYRING_MASTER_KEY must be the base64 encoding of exactly 32 bytes (e.g. `openssl rand -base64 32`)",
		);
	config.masterKeyNext = env.KEYRING_MASTER_KEY_NEXT || null;
	if (config.masterKeyNext && Buffer.from(config.masterKeyNext, "base64").length !== 32)
		throw new ConfigError(
			"KEYRING_MASTER_KEY_NEXT must be the base64 encoding of exactly 32 bytes (e.g. `openssl rand -base64 32`)",
		);
	if (config.masterKeyNext && !config.masterKey)
		throw new ConfigError(
			"KEYRING_MASTER_KEY_NEXT is the next key beside KEYRING_MASTER_KEY: set both, or rotate DATA_DIR/master.key with DATA_DIR/master.key.next",
		);
	config.signerKey = env.SIGNER_KEY || null;
	const signerKeyFile = pick("SIGNER_KEY_FILE", "signer-key-file");
	config.signerKeyFile = signerKeyFile ? path.resolve(signerKeyFile) : null;
	config.batcherKey = env.BATCHER_KEY || null;
	const batcherKeyFile = pick("BATCHER_KEY_FILE", "batcher-key-file");
	config.batcherKeyFile = batcherKeyFile ? path.resolve(batcherKeyFile) : null;
	config.keyringPublicKey = env.KEYRING_PUBLIC_KEY?.trim() || null;
	if (config.keyringPublicKey) {
		try {
			parseAuthorityKey(config.keyringPublicKey, "KEYRING_PUBLIC_KEY");
		} catch (err) {
			throw new ConfigError((err as Error).message);
		}
	}
	const keyringPublicKeyFile = env.KEYRING_PUBLIC_KEY_FILE;
	config.keyringPublicKeyFile = keyringPublicKeyFile
		? path.resolve(keyringPublicKeyFile)
		: config.dataDir
			? path.join(config.dataDir, AUTHORITY_PUBLIC_FILE)
			: null;
	config.logKeys = {
		signatures: logKeyFrom(
			"SIGNATURE_LOG_KEY",
			env.SIGNATURE_LOG_KEY,
			env.SIGNATURE_LOG_KEY_FILE,
			config.dataDir,
			LOG_KEY_FILES.signatures,
		),
		leases: logKeyFrom(
			"LEASE_LOG_KEY",
			env.LEASE_LOG_KEY,
			env.LEASE_LOG_KEY_FILE,
			config.dataDir,
			LOG_KEY_FILES.leases,
		),
	};
	config.nodeId = pick("NODE_ID", "node-id") || null;
	config.namespace = pick("NAMESPACE", "namespace") || "signing";
	const logLevel = (pick("LOG_LEVEL", "log-level") || "info").toLowerCase();
	if (!LOG_LEVELS.includes(logLevel))
		throw new ConfigError(
			`LOG_LEVEL must be one of ${LOG_LEVELS.map((level) => `"${level}"`).join(", ")}, got "${logLevel}"`,
		);
	config.logLevel = logLevel;
	const logFormat = (pick("LOG_FORMAT", "log-format") || "text").toLowerCase();
	if (logFormat !== "text" && logFormat !== "json")
		throw new ConfigError(`LOG_FORMAT must be "text" or "json", got "${logFormat}"`);
	config.logFormat = logFormat;
	const apiKeysFile = pick("API_KEYS_FILE", "api-keys-file");
	config.apiKeysFile = apiKeysFile
		? path.resolve(apiKeysFile)
		: config.dataDir
			? path.join(config.dataDir, "api-keys.json")
			: null;
	const allowPrivate = (env.WEBHOOK_ALLOW_PRIVATE ?? "").trim().toLowerCase();
	if (!["", "true", "false", "1", "0"].includes(allowPrivate))
		throw new ConfigError(
			`WEBHOOK_ALLOW_PRIVATE must be true or false, got "${env.WEBHOOK_ALLOW_PRIVATE}"`,
		);
	config.webhookAllowPrivate = allowPrivate === "true" || allowPrivate === "1";
	config.trustedProxies = (env.TRUSTED_PROXIES ?? "")
		.split(",")
		.map((entry) => entry.trim())
		.filter((entry) => entry !== "")
		.map((entry) => {
			const rule = proxyRule(entry);
			if (!rule)
				throw new ConfigError(
					`TRUSTED_PROXIES must be IP addresses or CIDR ranges separated by commas (e.g. 10.0.0.0/8,127.0.0.1,::1), got "${entry}"`,
				);
			return rule;
		});
	config.authEnv = Object.fromEntries(
		["AUTH_SECRET", "AUTH_PUBLIC_KEY", "AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_READS"].map(
			(name) => [name, env[name] || undefined],
		),
	);
	const reads = (config.authEnv.AUTH_READS ?? "open").toLowerCase();
	if (reads !== "open" && reads !== "required")
		throw new ConfigError(
			`AUTH_READS must be "open" or "required", got "${config.authEnv.AUTH_READS}"`,
		);
	// Only "off" turns it off; any other value leaves it on, as it always did.
	config.serveNats = (env.SERVE_NATS ?? "").trim().toLowerCase() !== "off";
	config.keyStore = keyStoreFrom(pick("KEY_STORE", "key-store"));
	config.token = tokenFrom(config.keyStore, env);
	return config;
}

function keyStoreFrom(raw: string | undefined): KeyStore {
	const keyStore = (raw ?? "").trim().toLowerCase() || "software";
	if (keyStore !== "software" && keyStore !== "pkcs11")
		throw new ConfigError(`KEY_STORE must be "software" or "pkcs11", got "${raw}"`);
	return keyStore;
}

const TOKEN_VARIABLES = ["PKCS11_MODULE", "PKCS11_TOKEN_LABEL", "PKCS11_PIN", "PKCS11_PIN_FILE"];

/**
 * The token of KEY_STORE=pkcs11: the module file must exist, the label be set, and the PIN come
 * from exactly one of PKCS11_PIN and PKCS11_PIN_FILE. Whether the module loads, the label names a
 * token and the PIN opens it is checked when the keyring or a signer opens it (src/pkcs11/token.ts).
 */
function tokenFrom(keyStore: KeyStore, env: NodeJS.ProcessEnv): TokenSettings | null {
	if (keyStore !== "pkcs11") {
		const set = TOKEN_VARIABLES.filter((name) => env[name]);
		if (set.length)
			throw new ConfigError(
				`${set.join(", ")} set but KEY_STORE is not pkcs11: set KEY_STORE=pkcs11 to keep the keys in that token, or unset them`,
			);
		return null;
	}
	const module = env.PKCS11_MODULE?.trim();
	if (!module)
		throw new ConfigError(
			"KEY_STORE=pkcs11 needs PKCS11_MODULE, the token's PKCS#11 library (SoftHSM: /usr/lib/softhsm/libsofthsm2.so)",
		);
	if (!fs.existsSync(module)) throw new ConfigError(`PKCS11_MODULE ${module} does not exist`);
	const tokenLabel = env.PKCS11_TOKEN_LABEL?.trim();
	if (!tokenLabel)
		throw new ConfigError("KEY_STORE=pkcs11 needs PKCS11_TOKEN_LABEL, the label of the token");
	const pinFile = env.PKCS11_PIN_FILE?.trim();
	if (env.PKCS11_PIN && pinFile)
		throw new ConfigError("PKCS11_PIN and PKCS11_PIN_FILE are both set: set one of them");
	if (env.PKCS11_PIN) return { module, tokenLabel, pin: env.PKCS11_PIN, pinSource: "PKCS11_PIN" };
	if (!pinFile)
		throw new ConfigError(
			"KEY_STORE=pkcs11 needs the token's user PIN in PKCS11_PIN or in a file named by PKCS11_PIN_FILE",
		);
	let pin: string;
	try {
		pin = fs.readFileSync(pinFile, "utf8").trim();
	} catch (err) {
		throw new ConfigError(
			`PKCS11_PIN_FILE ${pinFile} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
		);
	}
	if (!pin) throw new ConfigError(`PKCS11_PIN_FILE ${pinFile} is empty`);
	return { module, tokenLabel, pin, pinSource: `PKCS11_PIN_FILE ${pinFile}` };
}

/**
 * TRANSPORTER with the password read from NATS_PASSWORD_FILE (a mounted secret): the user is
 * in the URL (`nats://api@nats:4222`), the password only in the file.
 */
function withPasswordFrom(transporter: string, file: string): string {
	if (asConfigError(() => transporterUrls(transporter)).some((url) => !url.username))
		throw new ConfigError(
			`NATS_PASSWORD_FILE is set, so every TRANSPORTER URL must name the user (e.g. nats://api@nats:4222), got "${redactUrl(transporter)}"`,
		);
	let password: string;
	try {
		password = fs.readFileSync(file, "utf8").trim();
	} catch (err) {
		throw new ConfigError(
			`NATS_PASSWORD_FILE ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
		);
	}
	if (!password) throw new ConfigError(`NATS_PASSWORD_FILE ${file} is empty`);
	return mapTransporterUrls(transporter, (url) => {
		url.password = password;
	});
}

/** A log's key from its variable (checked), else its file: given, or under DATA_DIR. */
function logKeyFrom(
	name: string,
	key: string | undefined,
	file: string | undefined,
	dataDir: string,
	fileName: string,
): { key: string | null; keyFile: string | null } {
	if (key)
		try {
			parseSignerKey(key);
		} catch (err) {
			throw new ConfigError(
				`${name} must be a note signer key (PRIVATE+KEY+<name>+<key id>+<base64>): ${(err as Error).message}`,
			);
		}
	return {
		key: key || null,
		keyFile: file ? path.resolve(file) : dataDir ? path.join(dataDir, fileName) : null,
	};
}

/** Runs `parse`, turning its error into a ConfigError (its message names the variable). */
function asConfigError<T>(parse: () => T): T {
	try {
		return parse();
	} catch (err) {
		throw new ConfigError((err as Error).message);
	}
}

/**
 * Checks TRANSPORTER (one URL or a list, src/nats-tls.ts) and reads the NATS
 * certificate files, which need tls:// URLs.
 */
function natsTlsFrom(
	transporter: string | null,
	files: { caFile?: string; certFile?: string; keyFile?: string },
): NatsTls | null {
	const endpoints = transporter ? asConfigError(() => natsEndpoints(transporter)) : null;
	const set = Object.entries({
		NATS_CA_FILE: files.caFile,
		NATS_CERT_FILE: files.certFile,
		NATS_KEY_FILE: files.keyFile,
	}).filter(([, file]) => file);
	if (set.length && endpoints && !endpoints.tls)
		throw new ConfigError(
			`${set.map(([name]) => name).join(", ")} set but TRANSPORTER names nats:// URLs: use tls:// URLs (e.g. tls://nats-0:4222) or unset them`,
		);
	return asConfigError(() => readNatsTls(files));
}

let cached: AppConfig | null = null;

/** The process-wide configuration, read once. */
export function appConfig(): AppConfig {
	if (!cached) cached = loadConfig();
	return cached;
}

/** Makes `config` the process-wide one: moleculer-runner's config file settles the transport before the services load. */
export function useAppConfig(config: AppConfig): void {
	cached = config;
}

/** Where `role`'s credential is found in the configuration (SIGNER_KEY*, BATCHER_KEY*, DATA_DIR). */
export function credentialSettings(
	config: Pick<
		AppConfig,
		"signerKey" | "signerKeyFile" | "batcherKey" | "batcherKeyFile" | "dataDir"
	>,
	role: CredentialRole,
): CredentialSettings {
	return role === "signer"
		? { role, key: config.signerKey, keyFile: config.signerKeyFile, dataDir: config.dataDir }
		: { role, key: config.batcherKey, keyFile: config.batcherKeyFile, dataDir: config.dataDir };
}
