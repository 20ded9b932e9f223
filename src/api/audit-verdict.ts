/**
 * GET /api/audit: the audit of DESIGN.md section 8 over the stores, read through their owning
 * services. One audit at a time: callers arriving while one runs share its verdict.
 */
import type { ServiceBroker } from "moleculer";
import { auditServices, NATS_DEFAULT_MAX_PAYLOAD } from "../audit/collect";
import type { AuditReport } from "../audit/rules";

export class AuditVerdict {
	private running: Promise<AuditReport> | null = null;

	constructor(private readonly broker: ServiceBroker) {}

	current(): Promise<AuditReport> {
		this.running ??= this.run().finally(() => {
			this.running = null;
		});
		return this.running;
	}

	private async run(): Promise<AuditReport> {
		// Over a transporter each page must fit a default nats-server message.
		const options = this.broker.transit ? { maxPayloadBytes: NATS_DEFAULT_MAX_PAYLOAD } : {};
		return auditServices(this.broker, options);
	}
}
