/**
 * The OpenAPI 3.1 description of every route the gateway serves (GET /api/openapi.json).
 * What a route takes, its parameters and request body, comes from the params schema its action
 * validates with (src/api/params.ts, src/contract.ts; converted by src/param-schema.ts); the
 * rest (summaries, responses, errors) is written here by hand next to the routes. A test checks
 * that every gateway alias is in here and that the document validates.
 */
import {
	inclusionProofParams,
	logConsistencyParams,
	recordIdParams,
	recordsListParams,
} from "../contract";
import {
	fieldsOf,
	isRequired,
	jsonSchemaOf,
	objectSchemaOf,
	type ParamsSchema,
} from "../param-schema";
import { auditQuery, logPath, runIdPath, startRunBody, submitRecordsBody } from "./params";

const error = (description: string, headers?: Record<string, unknown>) => ({
	description,
	...(headers ? { headers } : {}),
	content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
});

const json = (
	description: string,
	schema: Record<string, unknown>,
	headers?: Record<string, unknown>,
) => ({
	description,
	...(headers ? { headers } : {}),
	content: { "application/json": { schema } },
});

const wwwAuthenticate = {
	"WWW-Authenticate": { description: "RFC 6750 Bearer challenge", schema: { type: "string" } },
};
const readErrors = {
	"401": error(
		"Missing, invalid or expired token or API key (only when AUTH_READS=required, or when a bad one is sent)",
		wwwAuthenticate,
	),
	"503": error("A service behind the route is unavailable"),
};
const writeErrors = {
	"401": error("Missing, invalid or expired token, wrong audience or issuer", wwwAuthenticate),
	"403": error("The credential lacks scope runs:write", wwwAuthenticate),
};
const runLocation = { Location: { description: "/api/runs/{id}", schema: { type: "string" } } };
const openRead = [{}, { bearerAuth: [] }, { apiKey: [] }];
const noLog = error("No such log (`LOG_NOT_FOUND`) or no checkpoint yet (`NO_CHECKPOINT`)");

/**
 * A GET anyone may read (a token or an API key is checked when one is sent): `ok` is its 200,
 * `errors` the error answers of its own, before those every read may give.
 */
const openGet = (
	operation: {
		operationId: string;
		tags: string[];
		summary: string;
		description?: string;
		parameters?: unknown[];
	},
	ok: Record<string, unknown>,
	errors: Record<string, unknown> = {},
) => {
	const { parameters, ...about } = operation;
	return {
		get: {
			...about,
			security: openRead,
			...(parameters ? { parameters } : {}),
			responses: { "200": ok, ...errors, ...readErrors },
		},
	};
};

/** A route's path or query parameters: its action's params schema, each field's description lifted out. */
const parametersOf = (params: ParamsSchema, where: "path" | "query") =>
	fieldsOf(params).map(([name, rule]) => {
		const { description, ...schema } = jsonSchemaOf(rule);
		return {
			name,
			in: where,
			required: where === "path" || isRequired(rule),
			description,
			schema,
		};
	});

export function openApiDocument() {
	return {
		openapi: "3.1.0",
		info: {
			title: "record-signer API",
			version: "1.0.0",
			description:
				"Starts and follows signing runs, reads records, signatures, keys and metrics. Errors are JSON with a stable `type`.",
		},
		servers: [{ url: "/" }],
		tags: [
			{ name: "runs" },
			{ name: "records" },
			{ name: "keys" },
			{ name: "logs" },
			{ name: "observability" },
			{ name: "pages" },
		],
		paths: {
			"/api/batcher/start": {
				post: {
					operationId: "startRun",
					tags: ["runs"],
					summary:
						"Start a run over every unsigned record (with `follow`: and over those that arrive)",
					description:
						"Needs a bearer token or an API key (X-API-Key) with scope `runs:write`. Rate limited per client IP. With `Idempotency-Key`, a repeat returns the same run instead of 409. With `callbackUrl`, the run's report is POSTed there when it ends, signed (detached JWS in `X-Signature-JWS`, key `webhook-1` in /.well-known/jwks.json).",
					security: [{ bearerAuth: ["runs:write"] }, { apiKey: ["runs:write"] }],
					parameters: [
						{
							name: "Idempotency-Key",
							in: "header",
							required: false,
							description: "1 to 255 printable ASCII characters",
							schema: { type: "string", minLength: 1, maxLength: 255 },
						},
					],
					requestBody: {
						required: false,
						content: {
							"application/json": {
								schema: { $ref: "#/components/schemas/StartRunRequest" },
							},
						},
					},
					responses: {
						"202": json(
							"The run was started (or, with a known Idempotency-Key, had been started)",
							{ $ref: "#/components/schemas/StartedRun" },
							{
								...runLocation,
								"Idempotent-Replayed": {
									description:
										"true when an earlier request with this key started the run",
									schema: { type: "string", enum: ["true", "false"] },
								},
							},
						),
						"400": error("Malformed JSON body"),
						...writeErrors,
						"409": error(
							"A run is already active (`RUN_ACTIVE`, `data.runId` names it)",
						),
						"413": error("Body larger than 16 kB"),
						"415": error("Body is not JSON"),
						"422": error(
							"Invalid parameter (`data` names the field and the rule), or an Idempotency-Key reused with another body",
						),
						"429": error("Too many starts from this client", {
							"Retry-After": {
								description: "Seconds until the limit resets",
								schema: { type: "integer" },
							},
						}),
					},
				},
			},
			"/api/batcher/status": openGet(
				{
					operationId: "batcherStatus",
					tags: ["runs"],
					summary: "The active run with its progress, or the last run",
				},
				json("Status", {
					type: "object",
					required: ["active", "progress"],
					properties: {
						active: { type: "boolean" },
						run: {
							oneOf: [{ $ref: "#/components/schemas/Run" }, { type: "null" }],
						},
						progress: { $ref: "#/components/schemas/Progress" },
						inFlight: { type: "integer" },
					},
				}),
			),
			"/api/runs": openGet(
				{
					operationId: "listRuns",
					tags: ["runs"],
					summary: "Every run, newest first",
				},
				json("Runs", {
					type: "array",
					items: { $ref: "#/components/schemas/Run" },
				}),
			),
			"/api/runs/{id}": openGet(
				{
					operationId: "getRun",
					tags: ["runs"],
					summary: "One run with its batch counts, report and webhook deliveries",
					parameters: parametersOf(runIdPath, "path"),
				},
				json("The run", { $ref: "#/components/schemas/RunDetail" }),
				{ "404": error("No such run (`RUN_NOT_FOUND`)") },
			),
			"/api/runs/{id}/cancel": {
				post: {
					operationId: "cancelRun",
					tags: ["runs"],
					summary: "Cancel the active run",
					description:
						"Needs a bearer token or an API key with scope `runs:write`. No new batch goes out; the batches in flight finish and release their leases; the run is then stored as `cancelled` with its report. Asking again is harmless.",
					security: [{ bearerAuth: ["runs:write"] }, { apiKey: ["runs:write"] }],
					parameters: parametersOf(runIdPath, "path"),
					responses: {
						"202": json(
							"The cancel was recorded; follow the run at Location",
							{ $ref: "#/components/schemas/StartedRun" },
							runLocation,
						),
						...writeErrors,
						"404": error("No such run (`RUN_NOT_FOUND`)"),
						"409": error(
							"The run is not running (`RUN_NOT_ACTIVE`, `data.status` says what it is)",
						),
						"503": error("The batcher is unavailable"),
					},
				},
			},
			"/api/records": {
				post: {
					operationId: "submitRecords",
					tags: ["records"],
					summary: "Submit 1 to 1,000 records to be signed",
					description:
						"Needs a bearer token or an API key with scope `records:write`; each stored record names its submitter (the token's subject, or `api-key:<name>`). The request is stored whole or not at all: the same id with the same data again is an accepted replay, another id's data stored differently refuses the whole request (409). A follow run (`POST /api/batcher/start` with `follow: true`) signs them as they arrive; read each signature at its `self` link, or follow `/api/events`. With `callbackUrl`, one signed webhook is POSTed there when every record of the submission is signed.",
					security: [{ bearerAuth: ["records:write"] }, { apiKey: ["records:write"] }],
					requestBody: {
						required: true,
						content: {
							"application/json": {
								schema: { $ref: "#/components/schemas/SubmitRecordsRequest" },
							},
						},
					},
					responses: {
						"202": json(
							"Stored (or already stored with the same data): their signatures are read at each record's `self`",
							{
								type: "object",
								required: ["accepted", "stored", "replayed", "records"],
								properties: {
									accepted: { type: "integer" },
									stored: { type: "integer", description: "New records stored" },
									replayed: {
										type: "integer",
										description: "Records already stored with the same data",
									},
									submittedBy: { type: "string" },
									submittedAt: { type: "string", format: "date-time" },
									submissionId: {
										type: "string",
										description:
											"With `callbackUrl`: the submission its webhook names",
									},
									records: {
										type: "array",
										items: {
											type: "object",
											properties: {
												id: { type: "string" },
												self: { type: "string" },
											},
										},
									},
									links: { type: "object" },
								},
							},
							{
								Location: {
									description: "/api/records/{id}, when one record was submitted",
									schema: { type: "string" },
								},
							},
						),
						"400": error("Malformed JSON body"),
						"401": writeErrors["401"],
						"403": error("The credential lacks scope records:write", wwwAuthenticate),
						"409": error(
							"An id is stored with other data (`RECORD_CONFLICT`, `data.ids` names them); nothing was stored",
						),
						"413": error("Body larger than 8 MB"),
						"415": error("Body is not JSON"),
						"422": error(
							"Invalid records (`INVALID_RECORDS`, `data.field` names the first bad field and `data.rule` the rule), a field the body may not have, or a body that is an array rather than `{ records }` (`INVALID_BODY`); nothing was stored",
						),
						"503": error("The records service is unavailable"),
					},
				},
				...openGet(
					{
						operationId: "listRecords",
						tags: ["records"],
						summary: "Records in id order with their signatures, one page at a time",
						description:
							"Pass a page's `next` as `after` for the next page; `next` is null on the last one.",
						parameters: parametersOf(recordsListParams, "query"),
					},
					json("One page", {
						type: "object",
						required: ["records", "next"],
						properties: {
							records: {
								type: "array",
								items: { $ref: "#/components/schemas/Record" },
							},
							next: {
								type: ["string", "null"],
								description: "The `after` of the next page; null at the end",
							},
						},
					}),
					{
						"422": error(
							"A bad `after`, `limit` or `signed`, or an unknown parameter (`VALIDATION_ERROR`; `data` names the field)",
						),
					},
				),
			},
			"/api/records/{id}": openGet(
				{
					operationId: "getRecord",
					tags: ["records"],
					summary: "One record with its signature, key id and batch id",
					parameters: parametersOf(recordIdParams, "path"),
				},
				json("The record", { $ref: "#/components/schemas/Record" }),
				{ "404": error("No such record (`RECORD_NOT_FOUND`)") },
			),
			"/api/records/{id}/proof": openGet(
				{
					operationId: "recordProof",
					tags: ["records", "logs"],
					summary:
						"A record's signature leaf and its inclusion proof against a signed checkpoint",
					description:
						"Check it with the signature log's verifier key (GET /api/logs): open `checkpoint` (a C2SP signed note), then verify the RFC 9162 inclusion of SHA-256(0x00 || UTF-8 of `leaf`) at `logIndex` in a tree of `treeSize` leaves with `proof` against the checkpoint's root.",
					parameters: [
						...parametersOf({ id: inclusionProofParams.id }, "path"),
						...parametersOf({ size: inclusionProofParams.size }, "query"),
					],
				},
				json("The proof", { $ref: "#/components/schemas/InclusionProof" }),
				{
					"404": error(
						"No such record (`RECORD_NOT_FOUND`), an unsigned one (`SIGNATURE_NOT_FOUND`), a signature not in the log (`NOT_IN_LOG`) or no checkpoint yet (`NO_CHECKPOINT`)",
					),
					"409": error(
						"The signature is logged but not in the latest checkpoint yet (`NOT_YET_CHECKPOINTED`): one follows within a second",
					),
					"422": error(
						"A bad `size` (`VALIDATION_ERROR`, or `INVALID_TREE_SIZE`: above the latest checkpoint's or not above the leaf's index); `data` names the field",
					),
				},
			),
			"/api/logs": openGet(
				{
					operationId: "listLogs",
					tags: ["logs"],
					summary:
						"The transparency logs: each one's origin, note verifier key and latest checkpoint size",
				},
				json("Logs", {
					type: "object",
					required: ["logs"],
					properties: {
						logs: {
							type: "array",
							items: { $ref: "#/components/schemas/LogSummary" },
						},
					},
				}),
			),
			"/api/logs/{log}/checkpoint": openGet(
				{
					operationId: "logCheckpoint",
					tags: ["logs"],
					summary:
						"A log's latest checkpoint: a C2SP tlog-checkpoint in a C2SP signed note",
					parameters: parametersOf(logPath, "path"),
				},
				{
					description:
						"`<origin>\\n<tree size>\\n<base64 root>\\n`, a blank line, and the log key's signature line",
					content: { "text/plain": { schema: { type: "string" } } },
				},
				{ "404": noLog },
			),
			"/api/logs/{log}/consistency": openGet(
				{
					operationId: "logConsistency",
					tags: ["logs"],
					summary:
						"A consistency proof: the tree of `from` leaves is a prefix of the tree of `to`",
					parameters: [
						...parametersOf(logPath, "path"),
						...parametersOf(logConsistencyParams, "query"),
					],
				},
				json("The proof", { $ref: "#/components/schemas/ConsistencyProof" }),
				{
					"404": noLog,
					"422": error(
						"A bad `from` or `to` (`VALIDATION_ERROR`, or `INVALID_TREE_SIZE`: `from` above `to`, `to` above the latest checkpoint's size); `data` names the field",
					),
				},
			),
			"/api/keys": openGet(
				{
					operationId: "listKeys",
					tags: ["keys"],
					summary: "Every key with its uses and current lease",
				},
				json("Keys", {
					type: "array",
					items: { $ref: "#/components/schemas/KeyInfo" },
				}),
			),
			"/api/metrics": openGet(
				{
					operationId: "metrics",
					tags: ["observability"],
					summary: "Live signing figures (metrics.snapshot)",
				},
				json("Snapshot", {
					type: "object",
					properties: {
						runId: { type: ["string", "null"] },
						status: { type: "string" },
						records: { type: "integer" },
						signed: { type: "integer" },
						progress: { type: "number" },
						recordsPerSecond: { type: "number" },
						keyUses: {
							type: "object",
							additionalProperties: { type: "integer" },
						},
						leasedNow: { type: "array", items: { type: "string" } },
						throughput: {
							type: "array",
							items: { type: "array", items: { type: "number" } },
						},
						recentBatches: { type: "array", items: { type: "object" } },
						follow: {
							type: ["object", "null"],
							description:
								"While a follow run goes on: `inflowPerSecond` (records submitted a second, last 5 s), `inflow` ([unix second, records submitted]), `backlog` (records stored, not yet signed), `lagMs` (from a batch's oldest record's submission to the batch signed: count, mean, p50, p95, max) and `lastLagMs`; null otherwise",
						},
					},
				}),
			),
			"/api/audit": openGet(
				{
					operationId: "audit",
					tags: ["observability"],
					summary:
						"The audit of the stores against the five rules: the last verdict (at most a minute old, and redone after each run), or a fresh one with refresh=true and a token",
					parameters: parametersOf(auditQuery, "query"),
				},
				json("Audit report", {
					type: "object",
					required: ["ok", "checkedAt", "cached"],
					properties: {
						ok: { type: "boolean" },
						checkedAt: { type: "string", format: "date-time" },
						cached: { type: "boolean" },
						checked: { type: "object" },
						rules: { type: "array", items: { type: "object" } },
						violations: { type: "array", items: { type: "object" } },
					},
				}),
			),
			"/api/events": {
				get: {
					operationId: "events",
					tags: ["observability"],
					summary:
						"Server-sent events: run.started, progress (at most ~4 per second), run.completed",
					security: openRead,
					responses: {
						"200": {
							description: "An endless text/event-stream",
							content: { "text/event-stream": { schema: { type: "string" } } },
						},
						...readErrors,
						"429": error("This client holds as many streams as it may (5)"),
						"503": error(
							"A service behind the route is unavailable, or the gateway serves as many streams as it may (200)",
						),
					},
				},
			},
			"/api/openapi.json": openGet(
				{
					operationId: "openapi",
					tags: ["pages"],
					summary: "This document",
				},
				json("OpenAPI 3.1 document", { type: "object" }),
			),
			"/.well-known/jwks.json": {
				get: {
					operationId: "jwks",
					tags: ["keys"],
					summary:
						"Public keys: every signing key (kid = key id) and the webhook key (kid webhook-1)",
					security: [{}],
					responses: {
						"200": json(
							"JWKS",
							{
								type: "object",
								required: ["keys"],
								properties: {
									keys: {
										type: "array",
										items: {
											type: "object",
											required: ["kty", "kid"],
											properties: {
												kty: { type: "string" },
												crv: { type: "string" },
												x: { type: "string" },
												kid: { type: "string" },
											},
										},
									},
								},
							},
							{ "Cache-Control": { schema: { type: "string" } } },
						),
						"503": error("The keyring is unavailable"),
					},
				},
			},
			"/health/live": {
				get: {
					operationId: "live",
					tags: ["observability"],
					summary: "The process answers",
					security: [{}],
					responses: {
						"200": json("Live", {
							type: "object",
							properties: { status: { const: "live" } },
						}),
					},
				},
			},
			"/health/ready": {
				get: {
					operationId: "ready",
					tags: ["observability"],
					summary: "Every service is reachable and the transporter (if any) connected",
					security: [{}],
					responses: {
						"200": json("Ready", { $ref: "#/components/schemas/Readiness" }),
						"503": json("Not ready", { $ref: "#/components/schemas/Readiness" }),
					},
				},
			},
			"/": {
				get: {
					operationId: "dashboard",
					tags: ["pages"],
					summary: "The live dashboard",
					security: [{}],
					responses: {
						"200": {
							description: "HTML page",
							content: { "text/html": { schema: { type: "string" } } },
						},
					},
				},
			},
			"/docs/": {
				get: {
					operationId: "docs",
					tags: ["pages"],
					summary: "This API's operations, rendered from /api/openapi.json",
					security: [{}],
					responses: {
						"200": {
							description: "HTML page",
							content: { "text/html": { schema: { type: "string" } } },
						},
					},
				},
			},
		},
		components: {
			securitySchemes: {
				bearerAuth: {
					type: "http",
					scheme: "bearer",
					bearerFormat: "JWT",
					description:
						"HS256 (AUTH_SECRET) or EdDSA (AUTH_PUBLIC_KEY); iss AUTH_ISSUER, aud AUTH_AUDIENCE, exp required; `scope` claim (space-separated)",
				},
				apiKey: {
					type: "apiKey",
					in: "header",
					name: "X-API-Key",
					description:
						"For scripts and CI: `npm run apikey -- create --name NAME --scope runs:write` shows the key once; it carries the scopes it was made with. Revoked with `npm run apikey -- revoke --name NAME`.",
				},
			},
			schemas: {
				Error: {
					type: "object",
					required: ["name", "message", "code", "type"],
					properties: {
						name: { type: "string" },
						message: { type: "string" },
						code: { type: "integer" },
						type: { type: "string", description: "Stable machine-readable error type" },
						data: {},
					},
				},
				StartRunRequest: objectSchemaOf(startRunBody),
				SubmitRecordsRequest: objectSchemaOf(submitRecordsBody),
				Run: {
					type: "object",
					required: ["runId", "batchSize", "status", "startedAt"],
					properties: {
						runId: { type: "string" },
						batchSize: { type: "integer" },
						status: {
							type: "string",
							enum: ["running", "completed", "failed", "cancelled"],
						},
						startedAt: { type: "string", format: "date-time" },
						finishedAt: { type: ["string", "null"], format: "date-time" },
						cancelRequestedAt: {
							type: "string",
							format: "date-time",
							description: "When a cancel was asked for",
						},
						follow: {
							type: "boolean",
							description:
								"A follow run: signs records as they arrive until it is cancelled",
						},
						report: { type: ["object", "null"] },
						error: { type: "string" },
					},
				},
				StartedRun: {
					type: "object",
					required: ["id", "runId", "batchSize", "status"],
					properties: {
						id: { type: "string" },
						runId: { type: "string" },
						batchSize: { type: "integer" },
						follow: { type: "boolean" },
						status: { type: "string" },
						startedAt: { type: "string" },
						finishedAt: { type: ["string", "null"] },
						replayed: { type: "boolean" },
						links: { type: "object" },
					},
				},
				RunDetail: {
					allOf: [
						{ $ref: "#/components/schemas/Run" },
						{
							type: "object",
							properties: {
								id: { type: "string" },
								batches: {
									type: "object",
									additionalProperties: { type: "integer" },
								},
								inFlight: { type: "integer" },
								webhook: {
									oneOf: [
										{ type: "null" },
										{
											type: "object",
											required: ["url", "status", "attempts"],
											properties: {
												url: { type: "string" },
												status: {
													type: "string",
													enum: [
														"waiting",
														"delivering",
														"delivered",
														"failed",
													],
												},
												attempts: {
													type: "array",
													items: {
														type: "object",
														required: ["attempt", "at", "ok"],
														properties: {
															attempt: { type: "integer" },
															at: { type: "string" },
															status: { type: ["integer", "null"] },
															ok: { type: "boolean" },
															error: { type: ["string", "null"] },
															durationMs: { type: "integer" },
														},
													},
												},
											},
										},
									],
								},
							},
						},
					],
				},
				Progress: {
					type: "object",
					required: ["records", "signed"],
					properties: { records: { type: "integer" }, signed: { type: "integer" } },
				},
				Record: {
					type: "object",
					required: ["id", "data"],
					properties: {
						id: { type: "string" },
						data: { type: "string" },
						submittedBy: {
							type: ["string", "null"],
							description: "Who submitted it; null for a seeded record",
						},
						submittedAt: { type: ["string", "null"], format: "date-time" },
						signature: {
							oneOf: [
								{ type: "null" },
								{
									type: "object",
									properties: {
										keyId: { type: "string" },
										batchId: { type: "string" },
										leaseId: { type: "string" },
										jws: {
											type: "string",
											description: "Detached compact JWS",
										},
										signedAt: { type: "string" },
									},
								},
							],
						},
					},
				},
				KeyInfo: {
					type: "object",
					required: ["keyId"],
					properties: {
						keyId: { type: "string" },
						createdAt: { type: "string" },
						uses: { type: "integer" },
						leased: { type: "boolean" },
						leaseId: { type: ["string", "null"] },
						holder: { type: ["string", "null"] },
					},
				},
				InclusionProof: {
					type: "object",
					required: [
						"recordId",
						"origin",
						"logIndex",
						"treeSize",
						"leaf",
						"proof",
						"checkpoint",
					],
					properties: {
						recordId: { type: "string" },
						origin: { type: "string" },
						logIndex: { type: "integer", description: "The leaf's index in the log" },
						treeSize: { type: "integer" },
						leaf: {
							type: "string",
							description:
								"The leaf (docs/design.md §8.4); its bytes are this string's UTF-8",
						},
						proof: {
							type: "array",
							items: { type: "string", contentEncoding: "base64" },
							description: "The audit path, bottom up",
						},
						checkpoint: {
							type: ["string", "null"],
							description:
								"The signed checkpoint of `treeSize` leaves; null when none of that size was published",
						},
					},
				},
				ConsistencyProof: {
					type: "object",
					required: ["origin", "from", "to", "proof"],
					properties: {
						origin: { type: "string" },
						from: { type: "integer" },
						to: { type: "integer" },
						proof: {
							type: "array",
							items: { type: "string", contentEncoding: "base64" },
						},
					},
				},
				LogSummary: {
					type: "object",
					required: ["log", "origin", "verifierKey", "size", "publishedAt", "links"],
					properties: {
						log: { type: "string", enum: ["signatures", "leases"] },
						origin: { type: "string" },
						verifierKey: {
							type: "string",
							description:
								"The note verifier key `<origin>+<key id>+<base64>` (golang.org/x/mod/sumdb/note)",
						},
						size: { type: ["integer", "null"] },
						publishedAt: { type: ["string", "null"], format: "date-time" },
						links: { type: "object" },
					},
				},
				Readiness: {
					type: "object",
					required: ["status", "notReady"],
					properties: {
						status: { type: "string", enum: ["ready", "not ready"] },
						nodeID: { type: "string" },
						services: {
							type: "array",
							items: { type: "string" },
							description: "This node's services",
						},
						notReady: {
							type: "array",
							items: { type: "string" },
							description:
								"Why not ready: services not started or not reachable, transporter not connected; empty when ready",
						},
					},
				},
			},
		},
	};
}
