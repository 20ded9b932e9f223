/** A whole system plus the API gateway on a free port, and tokens for it, in one test process. */
import type { AddressInfo } from "node:net";
import type { ServiceBroker } from "moleculer";
import { createApiService } from "../../services/api.service";
import { sleep, type Clock } from "../../src/clock";
import { issueToken, loadAuthConfig, type AuthConfig, type IssueOptions } from "../../src/api/auth";
import { apiOptions, type ApiOptions } from "../../src/api/settings";
import type { RunCompletedEvent } from "../../src/contract";
import { until } from "../../src/cluster/launcher";
import { createSystem } from "../../src/system";
import { testConfig, watchCompletions, type TestSystemOptions } from "./system";

/** 32 bytes, base64: the tests' AUTH_SECRET. */
export const TEST_SECRET = Buffer.alloc(32, 7).toString("base64");

export interface ApiSystemOptions extends TestSystemOptions {
	api?: Partial<ApiOptions>;
	/** The gateway's clock (webhook backoff): a test moves it by hand. */
	clock?: Clock;
	authEnv?: Record<string, string>;
}

export interface ApiSystem {
	broker: ServiceBroker;
	baseUrl: string;
	auth: AuthConfig;
	/** A valid token with `scope` (default runs:write), or tweaked by `options`. */
	token(scope?: string, options?: Partial<IssueOptions>): Promise<string>;
	nextCompletion(): Promise<RunCompletedEvent & { status: string; error?: string }>;
	stop(): Promise<void>;
}

export async function startApiSystem(options: ApiSystemOptions): Promise<ApiSystem> {
	const config = testConfig(options);
	const authEnv = { AUTH_SECRET: TEST_SECRET, ...options.authEnv };
	const broker = createSystem(config, { logLevel: false, ...options });
	const api: ApiOptions = {
		...apiOptions(config, authEnv),
		port: 0,
		ip: "127.0.0.1",
		...options.api,
	};
	broker.createService(createApiService(api, { clock: options.clock }));
	const nextCompletion = watchCompletions(broker);
	await broker.start();
	const service = broker.getLocalService("api") as unknown as {
		server: import("node:http").Server;
	};
	const { port } = service.server.address() as AddressInfo;
	const auth = await loadAuthConfig(authEnv, "");
	return {
		broker,
		baseUrl: `http://127.0.0.1:${port}`,
		auth,
		token: (scope = "runs:write", overrides = {}) =>
			issueToken(auth, { scope, ttl: 300, subject: "test", ...overrides }),
		nextCompletion,
		stop: () => broker.stop(),
	};
}

export interface JsonResponse<T = any> {
	status: number;
	headers: Headers;
	body: T;
}

/** fetch with a JSON body and a parsed JSON answer (text when it is not JSON). */
export async function request<T = any>(
	baseUrl: string,
	method: string,
	path: string,
	options: {
		body?: unknown;
		rawBody?: string;
		token?: string;
		headers?: Record<string, string>;
	} = {},
): Promise<JsonResponse<T>> {
	const headers: Record<string, string> = { ...options.headers };
	if (options.token) headers.Authorization = `Bearer ${options.token}`;
	let body: string | undefined;
	if (options.rawBody !== undefined) body = options.rawBody;
	else if (options.body !== undefined) {
		body = JSON.stringify(options.body);
		headers["Content-Type"] ??= "application/json";
	}
	const response = await fetch(baseUrl + path, { method, headers, body });
	const text = await response.text();
	let parsed: unknown = text;
	try {
		parsed = JSON.parse(text);
	} catch {
		// Not JSON (HTML pages): keep the text.
	}
	return { status: response.status, headers: response.headers, body: parsed as T };
}

export { sleep };

type Probe<T> = () => Promise<T | null | undefined | false>;

/**
 * Polls `probe` until it returns a truthy value; past `timeoutMs` it fails naming `what` it
 * waited for (the launcher's `until`, which every poll of the tests shares).
 */
export async function waitFor<T>(
	what: string,
	probe: Probe<T>,
	timeoutMs?: number,
	everyMs?: number,
): Promise<T>;
/** @deprecated name what is waited for: `waitFor(what, probe, ...)`. */
export async function waitFor<T>(probe: Probe<T>, timeoutMs?: number, everyMs?: number): Promise<T>;
export async function waitFor<T>(
	...args: [string, Probe<T>, number?, number?] | [Probe<T>, number?, number?]
): Promise<T> {
	const [what, probe, timeoutMs = 10_000, everyMs = 50] =
		typeof args[0] === "string"
			? (args as [string, Probe<T>, number?, number?])
			: ["the condition", ...(args as [Probe<T>, number?, number?])];
	return until(what, timeoutMs, async () => (await probe()) || null, everyMs) as Promise<T>;
}
