/**
 * GET /api/audit: the audit of docs/design.md §9 over the stores, read through their owning
 * services. A full audit reads every store, so anyone may read the last verdict (recomputed at
 * most every `maxAgeMs`, and after a run completes), and only a caller with a token may ask for
 * a fresh one. One audit at a time: callers arriving while one runs share its verdict.
 */
import type { ServiceBroker } from "moleculer";
import { auditServices, NATS_DEFAULT_MAX_PAYLOAD } from "../audit/collect";
import type { AuditReport } from "../audit/rules";

export type AuditAnswer = AuditReport & { checkedAt: string; cached: boolean };

export class AuditVerdict {
	private running: Promise<AuditAnswer> | null = null;
	private last: { answer: AuditAnswer; at: number } | null = null;
	/** Bumped by `invalidate`: an audit begun before the stores changed neither answers later callers nor is kept. */
	private generation = 0;

	constructor(
		private readonly broker: ServiceBroker,
		private readonly maxAgeMs: number,
		private readonly now = Date.now,
	) {}

	/** The last verdict while it is fresh enough (unless `fresh`), else a new audit. */
	async current(fresh = false): Promise<AuditAnswer> {
		if (!fresh && this.last && this.now() - this.last.at < this.maxAgeMs)
			return { ...this.last.answer, cached: true };
		if (!this.running) {
			const running: Promise<AuditAnswer> = this.run(this.generation).finally(() => {
				if (this.running === running) this.running = null;
			});
			this.running = running;
		}
		return this.running;
	}

	/** The stores changed (a run completed): the next read audits again, whatever was under way. */
	invalidate(): void {
		this.generation++;
		this.last = null;
		this.running = null;
	}

	private async run(generation: number): Promise<AuditAnswer> {
		// Over a transporter each page must fit a default nats-server message.
		const options = this.broker.transit ? { maxPayloadBytes: NATS_DEFAULT_MAX_PAYLOAD } : {};
		const at = this.now();
		const answer: AuditAnswer = {
			...(await auditServices(this.broker, options)),
			checkedAt: new Date(at).toISOString(),
			cached: false,
		};
		if (generation === this.generation) this.last = { answer, at };
		return answer;
	}
}
