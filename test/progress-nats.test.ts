/**
 * The progress of `npm start` / `npm run cluster` over a real nats-server: while the server is
 * down the line says so instead of going silent, and says when it is back.
 */
import { ServiceBroker } from "moleculer";
import { brokerOptions } from "../src/broker-options";
import { watchProgress, type Terminal } from "../src/cli/job";
import { loadConfig } from "../src/config";
import { startNatsServer, type NatsServer } from "./support/nats-server";

let nats: NatsServer | undefined;
let broker: ServiceBroker | undefined;
afterEach(async () => {
	await broker?.stop();
	await nats?.stop();
});

const until = async (what: string, check: () => boolean, timeoutMs = 15_000) => {
	const deadline = Date.now() + timeoutMs;
	while (!check()) {
		if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
		await new Promise(resolve => setTimeout(resolve, 50));
	}
};

test("while NATS is down the progress line names it and that the run goes on when it is back", async () => {
	nats = await startNatsServer();
	broker = new ServiceBroker(brokerOptions(loadConfig({ TRANSPORTER: nats.url, DATA_DIR: "" }), { logLevel: false, nodeID: "progress-watcher" }));
	// A metrics service answering like the real one, so the line has figures before and after the outage.
	broker.createService({ name: "metrics", actions: { snapshot: () => ({ records: 100, signed: 40, recordsPerSecond: 10, elapsedSeconds: 4 }) } });
	await broker.start();
	const lines: string[] = [];
	const out: Terminal = { say: line => lines.push(`say: ${line}`), progress: line => lines.push(`progress: ${line}`) };
	const stop = watchProgress(broker, out, { isTTY: false } as NodeJS.WriteStream);
	try {
		await until("a progress line", () => lines.some(l => l.includes("40/100")));
		await nats.stop();
		await until("the outage line", () => lines.some(l => /^progress: NATS is unreachable for \d+ s: waiting for the server to come back/.test(l)));
		await nats.start();
		await until("the line saying NATS is back", () => lines.some(l => /^say: NATS is back after \d+\.\d s; the run goes on$/.test(l)));
		const back = lines.findIndex(l => l.startsWith("say: NATS is back"));
		await until("progress after the outage", () => lines.slice(back).some(l => l.includes("40/100")));
	} finally {
		stop();
	}
}, 40_000);
