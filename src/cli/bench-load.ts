/**
 * The follow benchmark's load generator, a process of its own (src/cli/bench-follow.ts starts
 * it): POSTs records to /api/records on loopback at a steady rate, `perRequest` records a
 * request, ids `<prefix>-<n>` in order, over kept-alive connections. It prints one line per
 * answered request, `<first n> <count> <status> <epoch ms of the answer>`, and a last line
 * `done <requests> <records sent> <seconds>`, the seconds over which it sent them (from the start
 * to its last request's send: the answers still on their way are not the sending rate); the
 * benchmark matches the answers to the stored signatures.
 */
import http from "node:http";
import { parseArgs } from "node:util";

const { values } = parseArgs({
	options: {
		url: { type: "string" },
		token: { type: "string" },
		rate: { type: "string" },
		seconds: { type: "string" },
		"per-request": { type: "string" },
		prefix: { type: "string", default: "load" },
		/** Requests in flight at most: past it, the generator is the one that cannot keep up. */
		"max-in-flight": { type: "string", default: "64" },
	},
});

const url = new URL(`${values.url}/api/records`);
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const perRequest = Math.max(1, Math.min(1000, Number(values["per-request"])));
const maxInFlight = Number(values["max-in-flight"]);
const agent = new http.Agent({ keepAlive: true, maxSockets: maxInFlight });
const data = "x".repeat(32);
/** Epoch milliseconds with sub-millisecond precision: the same clock as the benchmark's. */
const epochNow = () => performance.timeOrigin + performance.now();

let lines: string[] = [];
const flush = () => {
	if (lines.length) process.stdout.write(lines.join("\n") + "\n");
	lines = [];
};

function post(first: number, count: number): Promise<void> {
	const records = [];
	for (let n = first; n < first + count; n++) records.push({ id: `${values.prefix}-${n}`, data });
	const body = JSON.stringify({ records });
	return new Promise((resolve) => {
		const req = http.request(
			url,
			{
				method: "POST",
				agent,
				headers: {
					"Content-Type": "application/json",
					"Content-Length": Buffer.byteLength(body),
					Authorization: `Bearer ${values.token}`,
				},
			},
			(res) => {
				res.resume();
				res.on("end", () => {
					lines.push(`${first} ${count} ${res.statusCode} ${epochNow().toFixed(2)}`);
					if (lines.length >= 256) flush();
					resolve();
				});
			},
		);
		req.on("error", (err) => {
			lines.push(`${first} ${count} error ${epochNow().toFixed(2)} ${err.message}`);
			resolve();
		});
		req.end(body);
	});
}

async function main(): Promise<void> {
	const started = performance.now();
	const total = Math.round(rate * seconds);
	const inFlight = new Set<Promise<void>>();
	let sent = 0;
	let requests = 0;
	let lastSend = started;
	while (sent < total) {
		// As many records as the rate allows by now, a request at a time.
		const due = Math.min(total, Math.floor((rate * (performance.now() - started)) / 1000));
		// A request once its records are all due: the records' rate is the rate asked.
		while (due - sent >= Math.min(perRequest, total - sent) && inFlight.size < maxInFlight) {
			const count = Math.min(perRequest, total - sent);
			const request: Promise<void> = post(sent, count).finally(() =>
				inFlight.delete(request),
			);
			inFlight.add(request);
			sent += count;
			requests++;
			lastSend = performance.now();
		}
		await new Promise((resolve) => setTimeout(resolve, 2));
	}
	await Promise.all(inFlight);
	flush();
	// A request goes once its records are due: the last one when all of them are.
	const sendingSeconds = (lastSend - started) / 1000;
	process.stdout.write(`done ${requests} ${sent} ${sendingSeconds.toFixed(3)}\n`);
	agent.destroy();
}

void main();
