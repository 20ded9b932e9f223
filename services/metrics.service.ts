/**
 * metrics: folds the domain events into live signing figures, served by
 * `metrics.snapshot` and published as Moleculer metrics (Prometheus on long-running nodes).
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import {
	Events,
	type BatchFailedEvent,
	type BatchSignedEvent,
	type LeaseEvent,
	type RecordsArrivedEvent,
	type RunCompletedEvent,
	type RunStartedEvent,
} from "../src/contract";
import { SigningStats } from "../src/metrics/signing-stats";

const M = {
	recordsSigned: "signing.records.signed.total",
	batches: "signing.batches.total",
	keyUses: "signing.key.uses.total",
	leaseWait: "signing.lease.wait.ms",
	batchLatency: "signing.batch.latency.ms",
	progress: "signing.run.progress",
	rate: "signing.records.per.second",
};

interface MetricsVars {
	stats: SigningStats;
}
interface MetricsMethods {
	publishGauges(): void;
}

/** The schema, typed for its own methods and vars. */
export type MetricsSchema = ServiceSchema<Record<string, never>, MetricsMethods, MetricsVars>;

const MetricsService: MetricsSchema = {
	name: "metrics",
	actions: {
		snapshot: {
			handler() {
				return this.stats.snapshot();
			},
		},
	},
	events: {
		[Events.runStarted](ctx: Context<RunStartedEvent>) {
			this.stats.runStarted(ctx.params);
			this.publishGauges();
		},
		[Events.batchSigned](ctx: Context<BatchSignedEvent>) {
			this.stats.batchSigned(ctx.params);
			const metrics = this.broker.metrics;
			metrics.increment(M.recordsSigned, undefined, ctx.params.stored);
			metrics.increment(M.batches, { status: "signed" });
			if (ctx.params.leaseWaitMs !== null)
				metrics.observe(M.leaseWait, ctx.params.leaseWaitMs);
			metrics.observe(M.batchLatency, ctx.params.latencyMs);
			this.publishGauges();
		},
		[Events.batchFailed](ctx: Context<BatchFailedEvent>) {
			this.stats.batchFailed(ctx.params);
			this.broker.metrics.increment(M.batches, { status: "failed" });
			if (ctx.params.stored > 0)
				this.broker.metrics.increment(M.recordsSigned, undefined, ctx.params.stored);
		},
		[Events.leaseGranted](ctx: Context<LeaseEvent>) {
			this.stats.leaseGranted(ctx.params);
			this.broker.metrics.increment(M.keyUses, { keyId: ctx.params.keyId });
		},
		[Events.leaseReleased](ctx: Context<LeaseEvent>) {
			this.stats.leaseEnded(ctx.params);
		},
		[Events.leaseExpired](ctx: Context<LeaseEvent>) {
			this.stats.leaseEnded(ctx.params);
		},
		/** Records submitted: the inflow of a follow run, and the records it has to sign. */
		[Events.recordsArrived](ctx: Context<RecordsArrivedEvent>) {
			this.stats.arrived(ctx.params.stored);
		},
		[Events.runCompleted](ctx: Context<RunCompletedEvent>) {
			this.stats.runCompleted(ctx.params);
			this.publishGauges();
		},
	},
	methods: {
		publishGauges() {
			this.broker.metrics.set(
				M.progress,
				this.stats.records ? this.stats.signed / this.stats.records : 0,
			);
			this.broker.metrics.set(M.rate, this.stats.recordsPerSecond());
		},
	},
	created() {
		this.stats = new SigningStats();
		const metrics = this.broker.metrics;
		metrics.register({
			type: "counter",
			name: M.recordsSigned,
			description: "Signatures stored",
			unit: "record",
		});
		metrics.register({
			type: "counter",
			name: M.batches,
			labelNames: ["status"],
			description: "Batches by outcome",
		});
		metrics.register({
			type: "counter",
			name: M.keyUses,
			labelNames: ["keyId"],
			description: "Leases granted per key",
		});
		metrics.register({
			type: "histogram",
			name: M.leaseWait,
			description: "Time a signer waited for a key",
			unit: "millisecond",
			buckets: [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
		});
		metrics.register({
			type: "histogram",
			name: M.batchLatency,
			description: "Batch dispatch to stored signatures",
			unit: "millisecond",
			buckets: [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000],
		});
		metrics.register({
			type: "gauge",
			name: M.progress,
			description: "Share of records signed in the current run",
		});
		metrics.register({
			type: "gauge",
			name: M.rate,
			description: "Records signed per second in the current run",
		});
	},
};

/** It has no settings; a factory like every other service file's. */
export function createMetricsService(): MetricsSchema {
	return MetricsService;
}

export default (_broker: ServiceBroker) => createMetricsService();
