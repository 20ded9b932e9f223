/** Live signing figures folded from the domain events; no broker in here. */
import type {
	FollowFigures,
	BatchFailedEvent,
	BatchSignedEvent,
	DistributionSummary,
	LeaseEvent,
	MetricsSnapshot,
	RecentBatch,
	RunCompletedEvent,
	RunStartedEvent,
} from "../contract";

/** Count, mean, max and percentiles over the last `capacity` samples. */
export class Distribution {
	private readonly samples: number[] = [];
	count = 0;
	sum = 0;
	max = 0;

	constructor(private readonly capacity = 2_000) {}

	add(value: number): void {
		this.count++;
		this.sum += value;
		this.max = Math.max(this.max, value);
		this.samples.push(value);
		if (this.samples.length > this.capacity) this.samples.shift();
	}

	summary(): DistributionSummary {
		const sorted = [...this.samples].sort((a, b) => a - b);
		const at = (q: number) =>
			sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : 0;
		return {
			count: this.count,
			mean: this.count ? Math.round((this.sum / this.count) * 10) / 10 : 0,
			p50: at(0.5),
			p95: at(0.95),
			max: this.max,
		};
	}
}

export class SigningStats {
	runId: string | null = null;
	batchSize = 0;
	records = 0;
	signed = 0;
	startedAt: number | null = null;
	finishedAt: number | null = null;
	status: MetricsSnapshot["status"] = "idle";
	batchesSigned = 0;
	batchesFailed = 0;
	duplicates = 0;
	readonly keyUses = new Map<string, number>();
	readonly leasedNow = new Map<string, string>();
	readonly leaseWaitMs = new Distribution();
	readonly batchLatencyMs = new Distribution();
	readonly recent: RecentBatch[] = [];
	/** [unix seconds, records signed in that second], the last few minutes. */
	readonly throughput: Array<[number, number]> = [];
	private signedAtRunStart = 0;
	/** A follow run is going on: records arrive while it runs. */
	follow = false;
	/** [unix seconds, records submitted in that second], the last few minutes. */
	readonly inflow: Array<[number, number]> = [];
	readonly lagMs = new Distribution();
	lastLagMs: number | null = null;

	runStarted(event: RunStartedEvent, now = Date.now()): void {
		this.runId = event.runId;
		this.batchSize = event.batchSize;
		this.records = event.records;
		this.signed = event.alreadySigned;
		this.signedAtRunStart = event.alreadySigned;
		this.startedAt = now;
		this.finishedAt = null;
		this.status = "running";
		this.batchesSigned = this.batchesFailed = this.duplicates = 0;
		this.recent.length = 0;
		this.throughput.length = 0;
		this.follow = event.follow;
		this.inflow.length = 0;
		this.lastLagMs = null;
	}

	/** Records were submitted: the store holds more, and they wait for a follow run. */
	arrived(stored: number, now = Date.now()): void {
		this.records += stored;
		addPerSecond(this.inflow, stored, now);
	}

	batchSigned(event: BatchSignedEvent, now = Date.now()): void {
		this.countSigned(event.stored, now);
		this.batchesSigned++;
		this.duplicates += event.duplicates;
		this.batchLatencyMs.add(event.latencyMs);
		if (event.lagMs !== undefined) {
			this.lagMs.add(event.lagMs);
			this.lastLagMs = event.lagMs;
		}
		this.remember({
			batchId: event.batchId,
			keyId: event.keyId,
			signer: event.signer,
			size: event.size,
			status: "signed",
			latencyMs: event.latencyMs,
			at: new Date(now).toISOString(),
		});
	}

	batchFailed(event: BatchFailedEvent, now = Date.now()): void {
		this.batchesFailed++;
		if (event.stored > 0) this.countSigned(event.stored, now);
		this.remember({
			batchId: event.batchId,
			keyId: null,
			signer: null,
			size: event.size,
			status: "failed",
			latencyMs: null,
			at: new Date(now).toISOString(),
		});
	}

	private countSigned(stored: number, now: number): void {
		this.signed += stored;
		addPerSecond(this.throughput, stored, now);
	}

	/** What the dashboard shows while a follow run goes on. */
	private followFigures(now: number): FollowFigures | null {
		if (!this.follow || this.status !== "running") return null;
		const since = Math.floor(now / 1000) - 5;
		const recent = this.inflow.filter(([second]) => second >= since && second < since + 5);
		return {
			inflowPerSecond: Math.round(recent.reduce((sum, [, n]) => sum + n, 0) / 5),
			inflow: this.inflow.slice(-120),
			backlog: Math.max(0, this.records - this.signed),
			lagMs: this.lagMs.summary(),
			lastLagMs: this.lastLagMs,
		};
	}

	leaseGranted(event: LeaseEvent): void {
		this.keyUses.set(event.keyId, (this.keyUses.get(event.keyId) ?? 0) + 1);
		this.leasedNow.set(event.keyId, event.leaseId);
		if (event.waitMs !== undefined) this.leaseWaitMs.add(event.waitMs);
	}

	leaseEnded(event: LeaseEvent): void {
		if (this.leasedNow.get(event.keyId) === event.leaseId) this.leasedNow.delete(event.keyId);
	}

	runCompleted(event: RunCompletedEvent, now = Date.now()): void {
		if (event.report.runId !== this.runId) return;
		this.finishedAt = now;
		this.status = event.status;
	}

	private remember(batch: RecentBatch): void {
		this.recent.unshift(batch);
		if (this.recent.length > 20) this.recent.pop();
	}

	/** Records per second since the run started (this process's view of it). */
	recordsPerSecond(now = Date.now()): number {
		if (!this.startedAt) return 0;
		const seconds = ((this.finishedAt ?? now) - this.startedAt) / 1000;
		return seconds > 0 ? Math.round((this.signed - this.signedAtRunStart) / seconds) : 0;
	}

	snapshot(now = Date.now()): MetricsSnapshot {
		return {
			runId: this.runId,
			status: this.status,
			batchSize: this.batchSize,
			records: this.records,
			signed: this.signed,
			progress: this.records ? this.signed / this.records : 0,
			recordsPerSecond: this.recordsPerSecond(now),
			elapsedSeconds: this.startedAt ? ((this.finishedAt ?? now) - this.startedAt) / 1000 : 0,
			batches: { signed: this.batchesSigned, failed: this.batchesFailed },
			duplicates: this.duplicates,
			keyUses: Object.fromEntries([...this.keyUses].sort(([a], [b]) => a.localeCompare(b))),
			leasedNow: [...this.leasedNow.keys()].sort(),
			leaseWaitMs: this.leaseWaitMs.summary(),
			batchLatencyMs: this.batchLatencyMs.summary(),
			throughput: this.throughput.slice(-120),
			recentBatches: this.recent,
			follow: this.followFigures(now),
		};
	}
}

/** Adds `count` to the second of `now` in a per-second series, keeping the last ten minutes. */
function addPerSecond(series: Array<[number, number]>, count: number, now: number): void {
	const second = Math.floor(now / 1000);
	const last = series[series.length - 1];
	if (last && last[0] === second) last[1] += count;
	else series.push([second, count]);
	if (series.length > 600) series.shift();
}
