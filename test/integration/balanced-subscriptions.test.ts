/**
 * Calls are not lost to a node's per-action NATS subscriptions over a real nats-server
 * (src/broker/balanced-subscriptions.ts). As Moleculer makes them, a node subscribes to its
 * actions only at its debounced announcement, a second after its services start, while a caller
 * already knows them from the reply to its DISCOVER; and each announcement drops them all and
 * makes them again. A request published then had no subscriber, and its caller waited out its
 * timeout: about 40 of them in this test without the middleware.
 */
import type { ServiceBroker } from "moleculer";
import { loadConfig } from "../../src/config";
import { createSystem } from "../../src/system";
import { stopBroker } from "../support/broker";
import { startNatsServer, type NatsServer } from "../support/nats-server";

let nats: NatsServer | undefined;
const brokers: ServiceBroker[] = [];
afterAll(async () => {
	for (const broker of brokers.reverse()) await stopBroker(broker).catch(() => undefined);
	await nats?.stop();
});

test("a node that starts services while another calls it answers every call: none is lost to its re-subscribing", async () => {
	nats = await startNatsServer();
	const config = loadConfig({
		TRANSPORTER: nats.url,
		NAMESPACE: `steady-${process.pid}`,
		DATA_DIR: "",
	});
	const server = createSystem(config, { logLevel: false, nodeID: "server", services: [] });
	server.createService({ name: "echo", actions: { hi: (ctx) => ctx.params } });
	const client = createSystem(config, { logLevel: false, nodeID: "client", services: [] });
	brokers.push(server, client);
	await server.start();
	await client.start();
	await client.waitForServices(["echo"], 10_000);

	// Callers keep 20 calls in flight while the server starts a service every 1.2 s: each one
	// re-announces its services (a second after, Moleculer's debounce) and re-makes its subscriptions.
	let stop = false;
	let answered = 0;
	const lost: string[] = [];
	const callers = Array.from({ length: 20 }, async (_, caller) => {
		for (let n = 0; !stop; n++) {
			try {
				await client.call("echo.hi", { caller, n }, { timeout: 3_000 });
				answered++;
			} catch (err) {
				lost.push((err as Error).message);
			}
		}
	});
	for (let i = 0; i < 4; i++) {
		await new Promise((resolve) => setTimeout(resolve, 1_200));
		await server.createService({ name: `extra-${i}`, actions: { ping: () => "pong" } });
	}
	await new Promise((resolve) => setTimeout(resolve, 1_500));
	stop = true;
	await Promise.all(callers);
	expect(lost).toEqual([]);
	expect(answered).toBeGreaterThan(1_000);
}, 60_000);
