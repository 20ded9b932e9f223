/**
 * The params of the gateway's own actions (`api.*`), each written once: the service validates
 * calls with it, its handler's type is derived from it, and the OpenAPI document (openapi.ts)
 * converts it (src/param-schema.ts). A route over another service's action uses that action's
 * schema (src/contract.ts).
 */
import { MAX_BATCH_SIZE } from "../config";
import { logConsistencyParams } from "../contract";
import { MAX_DATA_LENGTH, MAX_ID_LENGTH, MAX_SUBMISSION } from "../records/submission";
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
		follow: {
			type: "boolean",
			optional: true,
			description:
				"A follow run: it signs every unsigned record and then records as they arrive (POST /api/records), a batch once batchSize wait or the oldest waited LINGER_MS, until it is cancelled",
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

/** POST /api/records's body: `records` is checked by records itself (src/records/submission.ts), so a refusal names the field. */
export const submitRecordsBody = defineParams(
	{
		// Refused by the handler when missing: a body that is not JSON is a 415 first.
		records: {
			type: "any",
			optional: true,
			refusedIfMissing: true,
			expects: {
				type: "array",
				min: 1,
				max: MAX_SUBMISSION,
				items: {
					type: "object",
					props: {
						id: { type: "string", min: 1, max: MAX_ID_LENGTH },
						data: { type: "string", min: 1, max: MAX_DATA_LENGTH },
					},
				},
			},
			description: `1 to ${MAX_SUBMISSION} records { id, data }: an id of 1 to ${MAX_ID_LENGTH} letters, digits, ".", "_", ":", "~" or "-" (starting with a letter or digit), data of 1 to ${MAX_DATA_LENGTH} characters`,
		},
		callbackUrl: {
			type: "url",
			optional: true,
			description:
				"http(s) URL receiving one signed webhook when every record of this submission is signed",
		},
	},
	{ strict: true },
);
export type SubmitRecordsBody = ParamsOf<typeof submitRecordsBody>;
