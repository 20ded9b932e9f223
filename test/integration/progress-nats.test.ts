/**
 * The progress of `npm run cluster` over a real nats-server, during a real run: the stores and
 * the batcher on one node, the signer on another, the progress watched from a third, as the
 * launcher's client node watches it. While the server is down the line says so instead of going
 * silent; once it is back it says so, and the run goes on: its figures move again and it
 * completes with every record signed.
 */
import type { ServiceBroker } from "moleculer";
import { watchProgress, type Terminal } from "../../src/cli/job";
import { loadConfig } from "../../src/config";
import { createSystem } from "../../src/system";
import { until } from "../support/cluster";
import { stopBroker } from "../support/broker";
import { startNatsServer, type NatsServer } from "../support/nats-server";
import { watchCompletions } from "../support/system";

const RECORDS = 6_000;

let nats: NatsServer | undefined;
const brokers: ServiceBroker[] = [];
afterEach(async () => {
	for (const broker of brokers.splice(0).reverse())
		await stopBroker(broker).catch(() => undefined);
	await nats?.stop();
	nats = undefined;
});

/** The signed count of a progress line (`… 1,234/6,000 · …`), or null for another line. */
function signedOf(line: string): number | null {
	const match = /^progress: .* ([\d,]+)\/([\d,]+) · /.exec(line);
	return match ? Number(match[1].replace(/,/g, "")) : null;
}

test("while NATS is down the progress line names it and that the run goes on when it is back", async () => {
	nats = await startNatsServer();
	// Small batches, one at a time, on one signing thread: the run lasts past the outage.
	const config = loadConfig({
		TRANSPORTER: nats.url,
		NAMESPACE: `progress-${process.pid}`,
		DATA_DIR: "",
		RECORDS: String(RECORDS),
		KEYS: "3",
		BATCH_SIZE: "10",
		WINDOW: "1",
		SIGNING_THREADS: "1",
	});
	const main = createSystem(config, {
		logLevel: false,
		nodeID: "main",
		services: ["records", "keyring", "batcher", "metrics"],
	});
	const signer = createSystem(config, {
		logLevel: false,
		nodeID: "signer-1",
		services: ["signer"],
	});
	const watcher = createSystem(config, {
		logLevel: false,
		nodeID: "progress-watcher",
		services: [],
	});
	brokers.push(main, signer, watcher);
	const nextCompletion = watchCompletions(main);
	await Promise.all(brokers.map((broker) => broker.start()));
	await watcher.waitForServices(["batcher", "metrics", "signer"], 10_000);

	const lines: string[] = [];
	const out: Terminal = {
		say: (line) => lines.push(`say: ${line}`),
		progress: (line) => lines.push(`progress: ${line}`),
	};
	const stop = watchProgress(watcher, out, { isTTY: true } as NodeJS.WriteStream);
	try {
		let ended: Awaited<ReturnType<typeof nextCompletion>> | undefined;
		void nextCompletion().then((event) => (ended = event));
		await watcher.call("batcher.start", {});
		await until(
			"a progress line of the run under way",
			15_000,
			() =>
				lines
					.map(signedOf)
					.find((signed) => signed !== null && signed > 0 && signed < RECORDS),
			50,
		);

		await nats.stop();
		await until(
			"the outage line",
			15_000,
			() =>
				lines.some((l) =>
					/^progress: NATS is unreachable for \d+ s: waiting for the server to come back/.test(
						l,
					),
				),
			50,
		);
		const signedWhileDown = ((await main.call("records.progress")) as { signed: number })
			.signed;
		expect(signedWhileDown).toBeLessThan(RECORDS);
		await nats.start();
		await until(
			"the line saying NATS is back",
			15_000,
			() => lines.some((l) => /^say: NATS is back after \d+\.\d s; the run goes on$/.test(l)),
			50,
		);
		const back = lines.findIndex((l) => l.startsWith("say: NATS is back"));

		// The run goes on: the line moves past what was signed when the server went down, and the run completes.
		await until(
			`a progress line after the outage past ${signedWhileDown} signed`,
			30_000,
			() =>
				lines
					.slice(back)
					.map(signedOf)
					.some((signed) => signed !== null && signed > signedWhileDown),
			50,
		);
		expect(
			await until("the run to complete after the outage", 60_000, () => ended, 100),
		).toMatchObject({ status: "completed", report: { records: RECORDS } });
		expect(await main.call("records.progress")).toEqual({ records: RECORDS, signed: RECORDS });
	} finally {
		stop();
	}
}, 120_000);
