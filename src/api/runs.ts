/**
 * GET /api/runs/{id} and POST /api/runs/{id}/cancel: a run as the batcher shows it, with its
 * webhook deliveries; a cancel answers 202 with the run and its Location.
 */
import type { Context } from "moleculer";
import { Actions, call } from "../contract";
import type { RunIdPath } from "./params";
import type { ResponseMeta } from "./settings";
import { publicWebhookView, type WebhookRegistry } from "./webhook";

/** The run stops dispatching, its batches in flight finish, then it is `cancelled`. */
export async function cancelRun(ctx: Context<RunIdPath, ResponseMeta>) {
	const run = await call(ctx, Actions.batcher.cancel, { runId: ctx.params.id });
	const location = `/api/runs/${encodeURIComponent(run.runId)}`;
	ctx.meta.$statusCode = 202;
	ctx.meta.$responseHeaders = { Location: location };
	return { id: run.runId, ...run, links: { self: location } };
}

/** One run (batcher.get) with its webhook deliveries. */
export async function runWithWebhook(ctx: Context<RunIdPath>, webhooks: WebhookRegistry) {
	const run = await call(ctx, Actions.batcher.get, { runId: ctx.params.id });
	return {
		...run,
		id: ctx.params.id,
		webhook: publicWebhookView(webhooks.get(ctx.params.id)),
	};
}
