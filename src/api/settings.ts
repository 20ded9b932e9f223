/**
 * The api service's settings from the validated configuration and the AUTH_* variables.
 * The environment comes in as a parameter: src/config.ts stays the one reader of it.
 */
import type { AppConfig } from "../config";
import { DEFAULT_DELIVERY, type DeliveryOptions } from "./webhook";

export interface ApiOptions {
	port: number;
	/** Interface to bind; undefined = all. */
	ip?: string;
	dataDir: string;
	/** The AUTH_* variables, read by src/api/auth.ts when the service starts. */
	authEnv: Record<string, string | undefined>;
	/** POST /api/batcher/start per client IP. */
	startRateLimit: { window: number; limit: number };
	/** Largest accepted JSON body (body-parser syntax). */
	bodyLimit: string;
	/** Minimum gap between two SSE progress messages. */
	progressIntervalMs: number;
	webhook: DeliveryOptions;
	/** What GET /health/ready waits for. */
	requiredServices: string[];
	/** Cache-Control max-age of the JWKS, seconds. */
	jwksMaxAge: number;
}

export const AUTH_ENV_NAMES = ["AUTH_SECRET", "AUTH_PUBLIC_KEY", "AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_READS"] as const;

export function apiOptions(config: AppConfig, env: Record<string, string | undefined> = config.authEnv): ApiOptions {
	return {
		port: config.port,
		dataDir: config.dataDir,
		authEnv: Object.fromEntries(AUTH_ENV_NAMES.map(name => [name, env[name]])),
		startRateLimit: { window: 60_000, limit: 10 },
		bodyLimit: "16kb",
		progressIntervalMs: 250,
		webhook: DEFAULT_DELIVERY,
		requiredServices: ["records", "keyring", "batcher", "signer", "metrics"],
		jwksMaxAge: 300
	};
}
