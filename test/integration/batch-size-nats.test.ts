/**
 * A batch size whose batches would not fit one NATS message is refused when the run starts,
 * with the server's own limit (its max_payload, read from the connection), never mid-run.
 */
import { loadConfig } from "../../src/config";
import { createSystem } from "../../src/system";
import { stopBroker } from "../support/broker";
import { startNatsServer, type NatsServer } from "../support/nats-server";

let nats: NatsServer;
beforeAll(async () => {
	nats = await startNatsServer();
});
afterAll(() => nats?.stop());

test("over a default nats-server (1 MB messages) a start with batch size 100,000 is a 422 naming the limit; one that fits runs", async () => {
	const config = loadConfig({
		RECORDS: "2000",
		KEYS: "3",
		DATA_DIR: "",
		TRANSPORTER: nats.url,
		NAMESPACE: `limits-${process.pid}`,
	});
	const broker = createSystem(config, { logLevel: false, nodeID: "limits-node" });
	await broker.start();
	try {
		const refused = await broker.call("batcher.start", { batchSize: 100_000 }).then(
			() => null,
			(err: { message: string; data: { max: number } }) => err,
		);
		expect(refused).toMatchObject({
			code: 422,
			type: "BATCH_TOO_LARGE",
			data: { field: "batchSize", value: 100_000, maxPayload: 1024 * 1024 },
		});
		expect(refused!.message).toContain("at most 1024 KB (its max_payload)");
		expect(refused!.data.max).toBeGreaterThan(10_000);
		expect(await broker.call("batcher.runs")).toEqual([]);
		const run = await broker.call<{ batchSize: number; status: string }, object>(
			"batcher.start",
			{ batchSize: refused!.data.max },
		);
		expect(run).toMatchObject({ batchSize: refused!.data.max, status: "running" });
	} finally {
		await stopBroker(broker);
	}
});
