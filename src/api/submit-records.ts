/**
 * POST /api/records: records to be signed, from a caller whose token or API key has the
 * `records:write` scope. The gateway proves the submission to records with the batcher's
 * credential, naming the caller as its submitter (docs/design.md §6.10), and answers 202 with
 * where each record's signature will be read. Records checks the input (422 naming the field)
 * and stores the request whole or not at all (409 when an id is stored with other data). With
 * `callbackUrl`, one signed webhook when every record of it is signed (submission-callbacks.ts).
 */
import type { Context } from "moleculer";
import { Actions, call } from "../contract";
import { CredentialSource, type SignerCredential } from "../identity/credential";
import { makeSubmitProof } from "../identity/submit-proof";
import type { CredentialSettings } from "../identity/credential";
import { DomainError } from "../errors";
import { validateSubmission } from "../records/submission";
import { checkWebhookTarget } from "./outbound";
import type { SubmissionCallbacks } from "./submission-callbacks";
import type { WebhookRegistry } from "./webhook";
import type { SubmitRecordsBody } from "./params";
import { requireJsonBody, type StartRunMeta } from "./start-run";

/** Where a record and its signature are read. */
export const recordLink = (id: string) => `/api/records/${encodeURIComponent(id)}`;

/** The batcher's credential, loaded on the first submission and read again when its file changes (a rotation). */
export class SubmitCredential {
	private source: CredentialSource | null = null;

	constructor(private readonly settings: CredentialSettings) {}

	get(): SignerCredential {
		this.source ??= new CredentialSource(this.settings);
		return this.source.current();
	}
}

export async function submitRecords(
	ctx: Context<SubmitRecordsBody, StartRunMeta>,
	credential: SubmitCredential,
	webhooks: WebhookRegistry,
	callbacks: SubmissionCallbacks,
) {
	const { meta } = ctx;
	requireJsonBody(meta);
	// Checked here too, so a bad request is answered before it is signed for and sent.
	const records = validateSubmission(ctx.params.records);
	const { callbackUrl } = ctx.params;
	if (callbackUrl) {
		// The rules of run webhooks: literal addresses, loopback names, and what a name resolves to now.
		const refused = await checkWebhookTarget(callbackUrl, webhooks.allowPrivate);
		if (refused)
			throw new DomainError("INVALID_CALLBACK_URL", refused, { field: "callbackUrl" });
	}
	// The route authenticates every caller; a token without `sub` is named by its issuer.
	const submitter = meta.user?.subject ?? `token from ${String(meta.user?.claims.iss)}`;
	const result = await call(ctx, Actions.records.submit, {
		records,
		...makeSubmitProof(credential.get(), submitter, records),
	});
	const links = records.map((r) => ({ id: r.id, self: recordLink(r.id) }));
	const submissionId = callbackUrl
		? callbacks.watch(
				callbackUrl,
				records.map((r) => r.id),
				submitter,
				result.submittedAt,
			)
		: undefined;
	meta.$statusCode = 202;
	if (records.length === 1) meta.$responseHeaders = { Location: links[0].self };
	return {
		accepted: records.length,
		stored: result.stored,
		replayed: result.replayed,
		submittedBy: submitter,
		submittedAt: result.submittedAt,
		...(submissionId ? { submissionId } : {}),
		records: links,
		links: { unsigned: "/api/records?signed=false", events: "/api/events" },
	};
}
