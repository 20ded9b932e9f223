/**
 * The gateway's own actions (`api.*`), behind the routes of services/api.service.ts: health,
 * the JWKS, starting, cancelling and reading runs, the audit verdict, the OpenAPI document and
 * the transparency logs' checkpoints and consistency proofs.
 * Each hands its work to src/api/; `this` is the api service.
 */
import type { Context, ServiceBroker } from "moleculer";
import { readinessOf } from "../broker/health";
import type { Principal } from "./auth";
import { readinessAnswer, type Gateway } from "./gateway";
import { latestCheckpointNote, logConsistency, logSummaries } from "./logs";
import { openApiDocument } from "./openapi";
import {
	auditQuery,
	logConsistencyQuery,
	logPath,
	runIdPath,
	startRunBody,
	submitRecordsBody,
	type AuditQuery,
	type LogConsistencyQuery,
	type LogPath,
	type RunIdPath,
	type StartRunBody,
	type SubmitRecordsBody,
} from "./params";
import { submitRecords } from "./submit-records";
import { cancelRun, runWithWebhook } from "./runs";
import type { ApiOptions, ResponseMeta } from "./settings";
import { startRun, type StartRunMeta } from "./start-run";

/** What the actions use of the api service. */
interface GatewayHost {
	broker: ServiceBroker;
	gateway: Gateway;
}

export function gatewayActions(options: ApiOptions) {
	return {
		live: { handler: () => ({ status: "live" }) },

		/** The node's readiness (src/broker/health.ts) plus every service the routes need. */
		ready: {
			handler(this: GatewayHost, ctx: Context<unknown, ResponseMeta>) {
				const report = readinessOf(this.broker)?.(options.requiredServices);
				return readinessAnswer(report, ctx.meta);
			},
		},

		/** The keyring's public keys plus the gateway's webhook key; public data, cacheable. */
		jwks: {
			handler(this: GatewayHost, ctx: Context<unknown, ResponseMeta>) {
				ctx.meta.$responseHeaders = {
					"Cache-Control": `public, max-age=${options.jwksMaxAge}`,
				};
				return this.gateway.jwks(ctx);
			},
		},

		/** POST /api/batcher/start: 202 + Location; an Idempotency-Key replays the same run. */
		startRun: {
			params: startRunBody,
			handler(this: GatewayHost, ctx: Context<StartRunBody, StartRunMeta>) {
				return startRun(ctx, this.gateway.webhooks);
			},
		},
		/** POST /api/records: 202 with where each record's signature is read; records stores the request whole or not at all. */
		submitRecords: {
			params: submitRecordsBody,
			handler(this: GatewayHost, ctx: Context<SubmitRecordsBody, StartRunMeta>) {
				return submitRecords(
					ctx,
					this.gateway.submitCredential,
					this.gateway.webhooks,
					this.gateway.submissions,
				);
			},
		},
		/** POST /api/runs/:id/cancel: 202; the run stops dispatching, its batches in flight finish, then it is `cancelled`. */
		cancelRun: {
			params: runIdPath,
			handler: (ctx: Context<RunIdPath, ResponseMeta>) => cancelRun(ctx),
		},
		/** One run (batcher.get) with its webhook deliveries. */
		run: {
			params: runIdPath,
			handler(this: GatewayHost, ctx: Context<RunIdPath>) {
				return runWithWebhook(ctx, this.gateway.webhooks);
			},
		},

		/**
		 * The audit verdict over the stores (docs/design.md §9): the last one for anyone, a fresh
		 * one (`?refresh=true`) only with a token. Reading everything outlasts the default timeout.
		 */
		audit: {
			timeout: 0,
			params: auditQuery,
			handler(this: GatewayHost, ctx: Context<AuditQuery, { user?: Principal | null }>) {
				return this.gateway.auditFor(ctx.params.refresh === true, ctx.meta.user);
			},
		},

		openapi: { handler: () => openApiDocument() },

		/** The transparency logs' verifier keys and latest checkpoint sizes (docs/design.md §8.4). */
		logs: { handler: (ctx: Context) => logSummaries(ctx) },
		/** A log's latest checkpoint, as the C2SP signed note itself. */
		logCheckpoint: {
			params: logPath,
			async handler(ctx: Context<LogPath, ResponseMeta>) {
				const note = await latestCheckpointNote(ctx, ctx.params.log);
				ctx.meta.$responseType = "text/plain; charset=utf-8";
				ctx.meta.$responseHeaders = { "Cache-Control": "no-cache" };
				return note;
			},
		},
		logConsistency: {
			params: logConsistencyQuery,
			handler: (ctx: Context<LogConsistencyQuery>) =>
				logConsistency(ctx, ctx.params.log, ctx.params.from, ctx.params.to),
		},
	};
}
