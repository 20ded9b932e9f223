/** GET /api/events: live progress as server-sent events during a real run. */
import { request, startApiSystem, waitFor, type ApiSystem } from "../support/http";

interface SseEvent {
	event: string;
	data: any;
	at: number;
}

/** Reads an event stream into `events` until aborted. */
async function follow(url: string, events: SseEvent[], signal: AbortSignal): Promise<Response> {
	const response = await fetch(url, { signal, headers: { Accept: "text/event-stream" } });
	const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
	let buffer = "";
	void (async () => {
		try {
			for (;;) {
				const { value, done } = await reader.read();
				if (done) return;
				buffer += value;
				let end: number;
				while ((end = buffer.indexOf("\n\n")) >= 0) {
					const block = buffer.slice(0, end);
					buffer = buffer.slice(end + 2);
					const event = /^event: (.*)$/m.exec(block)?.[1];
					const data = /^data: (.*)$/m.exec(block)?.[1];
					if (event && data)
						events.push({ event, data: JSON.parse(data), at: Date.now() });
				}
			}
		} catch {
			// Aborted by the test.
		}
	})();
	return response;
}

describe("server-sent events", () => {
	let system: ApiSystem;

	beforeAll(async () => {
		system = await startApiSystem({
			records: 3000,
			keys: 4,
			window: 2,
			api: { startRateLimit: { window: 60_000, limit: 100 }, progressIntervalMs: 250 },
		});
	});
	afterAll(() => system?.stop());

	test("run.started, progress at most ~4 per second reaching every record, then run.completed", async () => {
		const events: SseEvent[] = [];
		const abort = new AbortController();
		const response = await follow(`${system.baseUrl}/api/events`, events, abort.signal);
		expect(response.status).toBe(200);
		expect(response.headers.get("content-type")).toContain("text/event-stream");
		expect(response.headers.get("cache-control")).toContain("no-cache");

		const completion = system.nextCompletion();
		const started = await request(system.baseUrl, "POST", "/api/batcher/start", {
			body: { batchSize: 5 },
			token: await system.token(),
		});
		expect(started.status).toBe(202);
		await completion;
		await waitFor("the run.completed event on the stream", async () =>
			events.some((e) => e.event === "run.completed"),
		);
		abort.abort();

		const names = events.map((e) => e.event);
		// The first message may be the state at connection time (an idle snapshot).
		const run = events.filter(
			(e) => e.event !== "progress" || e.data.runId === started.body.id,
		);
		expect(run[0]).toMatchObject({
			event: "run.started",
			data: { runId: started.body.id, batchSize: 5, records: 3000 },
		});
		expect(names.at(-1)).toBe("run.completed");
		expect(events.at(-1)!.data).toMatchObject({
			status: "completed",
			report: { runId: started.body.id, signedThisRun: 3000 },
		});

		const progress = run.filter((e) => e.event === "progress");
		expect(progress.length).toBeGreaterThanOrEqual(2);
		expect(progress.at(-1)!.data).toMatchObject({
			runId: started.body.id,
			records: 3000,
			signed: 3000,
			progress: 1,
		});
		for (const { data } of progress)
			expect(data).toEqual(
				expect.objectContaining({
					signed: expect.any(Number),
					records: 3000,
					recordsPerSecond: expect.any(Number),
				}),
			);
		for (let i = 1; i < progress.length; i++)
			expect(progress[i].data.signed).toBeGreaterThanOrEqual(progress[i - 1].data.signed);
		// 600 batch.signed events folded into a handful of messages: at most one per 250 ms (+ the final flush).
		const batches = progress.at(-1)!.data.batches;
		expect(batches).toBe(600);
		const seconds = (run.at(-1)!.at - run[0].at) / 1000;
		expect(progress.length).toBeLessThanOrEqual(Math.ceil(seconds * 4) + 2);
	});

	test("a client joining later gets the current figures first", async () => {
		const events: SseEvent[] = [];
		const abort = new AbortController();
		await follow(`${system.baseUrl}/api/events`, events, abort.signal);
		await waitFor("a first event for the late client", async () => events.length > 0);
		abort.abort();
		expect(events[0]).toMatchObject({
			event: "progress",
			data: { signed: 3000, records: 3000 },
		});
	});
});
