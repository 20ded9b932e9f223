/**
 * The callbacks of submissions (POST /api/records with `callbackUrl`): each submission's records
 * are looked up every CHECK_MS until none is unsigned, then its one webhook goes out, signed and
 * retried as a run's (src/api/webhook.ts). Kept in the gateway's memory, as run webhooks are: a
 * restart of the gateway forgets the ones still waiting.
 */
import { randomBytes } from "node:crypto";
import type { Clock } from "../clock";
import type { WebhookRegistry } from "./webhook";

/** How often waiting submissions are looked at. */
const CHECK_MS = 250;

interface Waiting {
	url: string;
	recordIds: string[];
	submittedBy: string;
	submittedAt: string;
}

export class SubmissionCallbacks {
	private readonly waiting = new Map<string, Waiting>();
	private stopChecks: (() => void) | null = null;
	private checking = false;

	/** `unsigned`: of `ids`, those without a signature (records.unsignedAmong). */
	constructor(
		private readonly webhooks: WebhookRegistry,
		private readonly unsigned: (ids: string[]) => Promise<string[]>,
		private readonly clock: Clock,
		private readonly logger: { warn(...args: unknown[]): void },
	) {}

	/** Watches a stored submission; returns its id, which its webhook names. */
	watch(url: string, recordIds: string[], submittedBy: string, submittedAt: string): string {
		const submissionId = `sub-${randomBytes(9).toString("base64url")}`;
		this.waiting.set(submissionId, { url, recordIds, submittedBy, submittedAt });
		this.stopChecks ??= this.clock.every(CHECK_MS, () => void this.check());
		return submissionId;
	}

	/** Submissions whose records are not all signed yet. */
	get pending(): number {
		return this.waiting.size;
	}

	close(): void {
		this.stopChecks?.();
		this.stopChecks = null;
	}

	private async check(): Promise<void> {
		if (this.checking) return;
		this.checking = true;
		try {
			for (const [submissionId, submission] of this.waiting) {
				const left = await this.unsigned(submission.recordIds).catch((err: Error) => {
					this.logger.warn(
						`Could not look at submission ${submissionId}: ${err.message}`,
					);
					return null;
				});
				if (left === null || left.length) continue;
				this.waiting.delete(submissionId);
				this.webhooks.notify(
					submissionId,
					submission.url,
					"records.signed",
					{
						submissionId,
						submittedBy: submission.submittedBy,
						submittedAt: submission.submittedAt,
						signedAt: new Date(this.clock.now()).toISOString(),
						records: submission.recordIds.map((id) => ({
							id,
							self: `/api/records/${encodeURIComponent(id)}`,
						})),
					},
					{ "X-Submission-Id": submissionId },
				);
			}
		} finally {
			this.checking = false;
			if (!this.waiting.size) this.close();
		}
	}
}
