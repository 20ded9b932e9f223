/**
 * Server-sent events for GET /api/events: `run.started`, `progress` (batch.signed folded into
 * at most one message per `intervalMs`) and `run.completed`, written to every open stream.
 * No broker in here: the api service feeds it the domain events.
 */
import type { ServerResponse } from "node:http";
import type { BatchSignedEvent, RunCompletedEvent, RunStartedEvent } from "../contract";

/** The part of an HTTP response a stream needs. */
export interface SseClient {
	write(chunk: string): unknown;
	end(): unknown;
}

export interface ProgressMessage {
	runId: string;
	records: number;
	signed: number;
	progress: number;
	batches: number;
	/** Average since the run started. */
	recordsPerSecond: number;
	/** Over the last interval only. */
	currentRate: number;
	elapsedSeconds: number;
}

/** How many streams one client address, and all clients together, may hold open. */
export interface StreamLimits {
	perClient: number;
	total: number;
}

export class ProgressStream {
	private readonly clients = new Set<SseClient>();
	/** Open streams per client address. */
	private readonly perAddress = new Map<string, number>();
	private run: {
		runId: string;
		records: number;
		signed: number;
		batches: number;
		startedAt: number;
		signedAtStart: number;
	} | null = null;
	private lastFlush = 0;
	private signedAtLastFlush = 0;
	private timer: NodeJS.Timeout | null = null;
	private heartbeat: NodeJS.Timeout | null = null;
	private eventId = 0;

	constructor(
		private readonly intervalMs = 250,
		private readonly heartbeatMs = 15_000,
		private readonly now = Date.now,
	) {}

	get size(): number {
		return this.clients.size;
	}

	add(client: SseClient): void {
		// `retry` tells EventSource how soon to reconnect after the server goes away.
		client.write(`retry: 2000\n\n`);
		this.clients.add(client);
		if (!this.heartbeat) {
			// Proxies drop idle connections; a comment line keeps them open.
			this.heartbeat = setInterval(() => this.writeAll(`: keep-alive\n\n`), this.heartbeatMs);
			this.heartbeat.unref();
		}
	}

	remove(client: SseClient): void {
		this.clients.delete(client);
		if (this.clients.size === 0 && this.heartbeat) {
			clearInterval(this.heartbeat);
			this.heartbeat = null;
		}
	}

	/** Sends one event to one client (the current state when it connects). */
	sendTo(client: SseClient, event: string, data: unknown): void {
		client.write(this.format(event, data));
	}

	runStarted(event: RunStartedEvent): void {
		this.cancelFlush();
		const now = this.now();
		this.run = {
			runId: event.runId,
			records: event.records,
			signed: event.alreadySigned,
			batches: 0,
			startedAt: now,
			signedAtStart: event.alreadySigned,
		};
		this.lastFlush = now;
		this.signedAtLastFlush = event.alreadySigned;
		this.broadcast("run.started", event);
	}

	batchSigned(event: BatchSignedEvent): void {
		if (!this.run || this.run.runId !== event.runId) return;
		this.run.signed += event.stored;
		this.run.batches++;
		const wait = this.lastFlush + this.intervalMs - this.now();
		if (wait <= 0) this.flush();
		else if (!this.timer) {
			this.timer = setTimeout(() => this.flush(), wait);
			this.timer.unref();
		}
	}

	/** Records were submitted: the run (a follow run) has more to sign; the next progress message says so. */
	recordsArrived(stored: number): void {
		if (this.run) this.run.records += stored;
	}

	runCompleted(event: RunCompletedEvent): void {
		if (this.run && this.run.runId === event.report.runId) this.flush();
		this.broadcast("run.completed", event);
		this.run = null;
	}

	/** The progress message as of now, or null when no run is being followed. */
	current(): ProgressMessage | null {
		if (!this.run) return null;
		const now = this.now();
		const { runId, records, signed, batches, startedAt, signedAtStart } = this.run;
		const seconds = (now - startedAt) / 1000;
		const sinceFlush = (now - this.lastFlush) / 1000;
		return {
			runId,
			records,
			signed,
			progress: records ? Math.min(1, signed / records) : 1,
			batches,
			recordsPerSecond: seconds > 0 ? Math.round((signed - signedAtStart) / seconds) : 0,
			currentRate:
				sinceFlush > 0 ? Math.round((signed - this.signedAtLastFlush) / sinceFlush) : 0,
			elapsedSeconds: Math.round(seconds * 10) / 10,
		};
	}

	close(): void {
		this.cancelFlush();
		if (this.heartbeat) clearInterval(this.heartbeat);
		this.heartbeat = null;
		for (const client of this.clients) client.end();
		this.clients.clear();
	}

	private flush(): void {
		this.cancelFlush();
		const message = this.current();
		if (!message) return;
		this.lastFlush = this.now();
		this.signedAtLastFlush = message.signed;
		this.broadcast("progress", message);
	}

	private cancelFlush(): void {
		if (this.timer) clearTimeout(this.timer);
		this.timer = null;
	}

	private broadcast(event: string, data: unknown): void {
		this.writeAll(this.format(event, data));
	}

	private writeAll(chunk: string): void {
		for (const client of this.clients) client.write(chunk);
	}

	private format(event: string, data: unknown): string {
		return `id: ${++this.eventId}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
	}

	/** Takes a stream slot for `address`, or says why not (the caller answers 429 or 503). */
	admit(
		address: string,
		limits: StreamLimits,
	): { ok: true; release(): void } | { ok: false; status: 429 | 503; message: string } {
		const held = this.perAddress.get(address) ?? 0;
		if (held >= limits.perClient)
			return {
				ok: false,
				status: 429,
				message: `This client already has ${held} event streams open (at most ${limits.perClient}); close one first`,
			};
		if (this.clients.size >= limits.total)
			return {
				ok: false,
				status: 503,
				message: `The gateway serves at most ${limits.total} event streams at once; try again later`,
			};
		this.perAddress.set(address, held + 1);
		let released = false;
		return {
			ok: true,
			release: () => {
				if (released) return;
				released = true;
				const left = (this.perAddress.get(address) ?? 1) - 1;
				if (left > 0) this.perAddress.set(address, left);
				else this.perAddress.delete(address);
			},
		};
	}
}

/**
 * Answers GET /api/events: an SSE response joined to `stream`, starting from the current
 * figures (`current`, when the stream follows no run yet), closed with its socket. Past the
 * limits per client address (`address`, from src/api/client-address.ts) and in total, a JSON
 * 429 or 503 instead.
 */
export async function openEventStream(
	stream: ProgressStream,
	address: string,
	res: ServerResponse,
	limits: StreamLimits,
	current: () => Promise<unknown>,
): Promise<void> {
	const slot = stream.admit(address, limits);
	if (!slot.ok) {
		res.writeHead(slot.status, {
			"Content-Type": "application/json; charset=utf-8",
			"Retry-After": "5",
		});
		res.end(
			JSON.stringify({
				name: "TooManyStreams",
				message: slot.message,
				code: slot.status,
				type: slot.status === 429 ? "TOO_MANY_STREAMS" : "STREAMS_EXHAUSTED",
				data: limits,
			}),
		);
		return;
	}
	res.on("close", () => slot.release());
	res.writeHead(200, {
		"Content-Type": "text/event-stream; charset=utf-8",
		"Cache-Control": "no-cache, no-transform",
		// The socket is the stream's own: closed with it, so shutdown never waits on an idle keep-alive.
		Connection: "close",
		// nginx buffers responses by default, which would hold events back.
		"X-Accel-Buffering": "no",
	});
	const client: SseClient = { write: (chunk) => res.write(chunk), end: () => res.end() };
	stream.add(client);
	// `res` closes with the connection; the request may close as soon as its (empty) body is read.
	res.on("close", () => {
		stream.remove(client);
		// The server keeps a half-closed socket open until the response ends.
		res.destroy();
	});
	// A client joining mid-run starts from the current figures, not from zero.
	const figures = stream.current() ?? (await current().catch(() => null));
	if (figures && !res.writableEnded) stream.sendTo(client, "progress", figures);
}
