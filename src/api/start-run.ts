/**
 * POST /api/batcher/start: checks the body's media type, starts the run through the batcher
 * (which keeps the Idempotency-Key with the run, so a replay outlives this process), registers
 * the webhook, and answers 202 with the run and its Location.
 */
import type { IncomingMessage } from "node:http";
import type { Context } from "moleculer";
import { DomainError } from "../errors";
import { Actions, call } from "../contract";
import type { Principal } from "./auth";
import { checkWebhookTarget } from "./outbound";
import type { StartRunBody } from "./params";
import type { ResponseMeta } from "./settings";
import type { WebhookRegistry } from "./webhook";

const JSON_TYPE = /^application\/([\w.+-]+\+)?json\s*(;|$)/i;

/** What the route's `onBeforeCall` copies from the request into `ctx.meta`. */
export interface StartRunMeta extends ResponseMeta {
	idempotencyKey?: string | null;
	requestContentType?: string | null;
	requestHasBody?: boolean;
	user?: Principal | null;
}

/** The request's Idempotency-Key and body, as the route's `onBeforeCall` copies them into `ctx.meta`. */
export function startRunRequestMeta(req: IncomingMessage): StartRunMeta {
	const header = req.headers["idempotency-key"];
	return {
		idempotencyKey: Array.isArray(header) ? header[0] : (header ?? null),
		requestContentType: req.headers["content-type"] ?? null,
		requestHasBody:
			Number(req.headers["content-length"] ?? 0) > 0 ||
			req.headers["transfer-encoding"] !== undefined,
	};
}

/**
 * A JSON body must be an object: the gateway spreads a body into the action's parameters, so an
 * array (`[{ "id": ... }]` for `{ "records": [...] }`) would come out as fields "0", "1", ... and be
 * refused as "forbidden keys: '0'". Refused here instead (422 INVALID_BODY), showing the shape.
 */
export function refuseArrayBody(req: IncomingMessage, shape: string): void {
	if (Array.isArray((req as IncomingMessage & { body?: unknown }).body))
		throw new DomainError(
			"INVALID_BODY",
			`The body must be a JSON object, not an array: send ${shape}`,
			{ field: "body", rule: `must be a JSON object: ${shape}` },
		);
}

/** A request with a body must say it is JSON (415 otherwise). */
export function requireJsonBody(meta: StartRunMeta): void {
	if (meta.requestHasBody && !JSON_TYPE.test(String(meta.requestContentType ?? "")))
		throw new DomainError(
			"UNSUPPORTED_MEDIA_TYPE",
			"The request body must be JSON (Content-Type: application/json)",
			{ contentType: meta.requestContentType },
		);
}

export async function startRun(
	ctx: Context<StartRunBody, StartRunMeta>,
	webhooks: WebhookRegistry,
) {
	const { meta } = ctx;
	requireJsonBody(meta);
	const { batchSize, callbackUrl, follow } = ctx.params;
	if (callbackUrl) {
		// The same classification as delivery: literal addresses, loopback names, and what a name resolves to now.
		const refused = await checkWebhookTarget(callbackUrl, webhooks.allowPrivate);
		if (refused)
			throw new DomainError("INVALID_CALLBACK_URL", refused, { field: "callbackUrl" });
	}
	const idempotencyKey =
		typeof meta.idempotencyKey === "string" ? meta.idempotencyKey : undefined;
	// A repeat with the key must ask the same: batch size, callback and caller.
	const requestFingerprint = JSON.stringify({
		batchSize: batchSize ?? null,
		callbackUrl: callbackUrl ?? null,
		subject: meta.user?.subject ?? null,
		...(follow ? { follow } : {}),
	});
	const started = await call(ctx, Actions.batcher.start, {
		...(batchSize === undefined ? {} : { batchSize }),
		...(follow ? { follow } : {}),
		...(idempotencyKey ? { idempotencyKey, requestFingerprint } : {}),
	});
	if (callbackUrl && !started.replayed) webhooks.register(started.runId, callbackUrl);
	const run = await call(ctx, Actions.batcher.get, { runId: started.runId });
	const location = `/api/runs/${encodeURIComponent(run.runId)}`;
	meta.$statusCode = 202;
	meta.$responseHeaders = {
		Location: location,
		...(idempotencyKey
			? { "Idempotency-Key": idempotencyKey, "Idempotent-Replayed": String(started.replayed) }
			: {}),
	};
	return {
		id: run.runId,
		runId: run.runId,
		batchSize: run.batchSize,
		follow: Boolean(run.follow),
		status: run.status,
		startedAt: run.startedAt,
		finishedAt: run.finishedAt,
		replayed: started.replayed,
		links: { self: location, events: "/api/events" },
	};
}
