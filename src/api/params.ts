/**
 * The params of the gateway's own actions (`api.*`), each written once: the service validates
 * calls with it, its handler's type is derived from it, and the OpenAPI document (openapi.ts)
 * converts it (src/param-schema.ts). A route over another service's action uses that action's
 * schema (src/contract.ts).
 */
import { MAX_BATCH_SIZE } from "../config";
import { logConsistencyParams } from "../contract";
import { defineParams, type ParamsOf } from "../param-schema";

/** POST /api/batcher/start's body. */
export const startRunBody = defineParams(
	{
		// Any value passes here: the batcher checks it, so a wrong one is INVALID_BATCH_SIZE naming the range.
		batchSize: {
			type: "any",
			optional: true,
			expects: { type: "number", integer: true, min: 1, max: MAX_BATCH_SIZE },
			description: "Defaults to BATCH_SIZE",
		},
		callbackUrl: {
			type: "url",
			optional: true,
			description: "http(s) URL receiving the report when the run ends",
		},
	},
	{ strict: true },
);
export type StartRunBody = ParamsOf<typeof startRunBody>;

/** POST /api/runs/{id}/cancel and GET /api/runs/{id}. */
export const runIdPath = defineParams({
	id: { type: "string", min: 1, max: 200, description: "Run id" },
});
export type RunIdPath = ParamsOf<typeof runIdPath>;

/** GET /api/audit. */
export const auditQuery = defineParams({
	refresh: {
		type: "boolean",
		optional: true,
		convert: true,
		description:
			"Audit now (reads every collection: slow on large stores); needs a bearer token or an API key",
	},
});
export type AuditQuery = ParamsOf<typeof auditQuery>;

/** GET /api/logs/{log}/checkpoint and /consistency: an unknown log is a 404 that lists them (src/api/logs.ts). */
export const logPath = defineParams({
	log: {
		type: "string",
		min: 1,
		max: 100,
		description: "`signatures` (records' log) or `leases` (the keyring's)",
	},
});
export type LogPath = ParamsOf<typeof logPath>;

/** GET /api/logs/{log}/consistency: the log, and the sizes of the owner's action. */
export const logConsistencyQuery = defineParams(
	{ ...logPath, from: logConsistencyParams.from, to: logConsistencyParams.to },
	{ strict: true },
);
export type LogConsistencyQuery = ParamsOf<typeof logConsistencyQuery>;
