/**
 * src/broker/lost-requests.ts over a real nats-server, two brokers: a call given up (aborted) or past
 * its timeout is settled all the way down, so no context stays tracked and a stop is immediate.
 */
import { Errors, ServiceBroker } from "moleculer";
import { brokerOptions } from "../../src/broker/broker-options";
import { loadConfig } from "../../src/config";
import { RequestAbortedError } from "../../src/broker/lost-requests";
import { natsClient } from "../../src/broker/nats-status";
import { startNatsServer, type NatsServer } from "../support/nats-server";
import { stopBroker } from "../support/broker";

let nats: NatsServer;
let caller: ServiceBroker;
let callee: ServiceBroker;

beforeAll(async () => {
	nats = await startNatsServer();
	const config = loadConfig({ TRANSPORTER: nats.url, DATA_DIR: "", NAMESPACE: "lost-requests" });
	callee = new ServiceBroker(brokerOptions(config, { logLevel: false, nodeID: "callee" }));
	// Answers only after every caller here has given up: as a reply that will not come in time.
	callee.createService({
		name: "silent",
		actions: { wait: () => new Promise((resolve) => setTimeout(resolve, 1_500)) },
	});
	caller = new ServiceBroker(brokerOptions(config, { logLevel: false, nodeID: "caller" }));
	await Promise.all([callee.start(), caller.start()]);
	await caller.waitForServices("silent", 10_000);
}, 30_000);

afterAll(async () => {
	await Promise.all([stopBroker(caller), stopBroker(callee)]);
	await nats?.stop();
});

const tracked = (broker: ServiceBroker) =>
	(broker as unknown as { _trackedContexts: unknown[] })._trackedContexts.length;
const pending = (broker: ServiceBroker) =>
	(broker.transit as unknown as { pendingRequests: Map<string, unknown> }).pendingRequests.size;

test("a call past its timeout is answered with RequestTimeoutError and leaves nothing tracked or pending", async () => {
	const err = await caller.call("silent.wait", {}, { timeout: 300 }).catch((e: Error) => e);
	expect(err).toBeInstanceOf(Errors.RequestTimeoutError);
	// Moleculer's own timeout answers the caller; the middleware settles the request just after.
	await new Promise((resolve) => setTimeout(resolve, 300));
	expect({ tracked: tracked(caller), pending: pending(caller) }).toEqual({
		tracked: 0,
		pending: 0,
	});
});

test("an aborted call fails at once with RequestAbortedError naming why, and leaves nothing tracked or pending", async () => {
	const abort = new AbortController();
	const call = caller
		.call("silent.wait", {}, { timeout: 60_000, signal: abort.signal } as object)
		.catch((e: Error) => e);
	await new Promise((resolve) => setTimeout(resolve, 100));
	expect(pending(caller)).toBe(1);
	abort.abort(new Error("the batch was found lost"));
	const err = await call;
	expect(err).toBeInstanceOf(RequestAbortedError);
	// A call naming no node is balanced by NATS (disableBalancer): the message names the action only.
	expect((err as Error).message).toBe(
		"Request 'silent.wait' was given up: the batch was found lost",
	);
	const targeted = caller
		.call("silent.wait", {}, {
			timeout: 60_000,
			nodeID: "callee",
			signal: AbortSignal.timeout(50),
		} as object)
		.catch((e: Error) => e);
	expect(await targeted).toMatchObject({
		message: expect.stringMatching(/^Request 'silent\.wait' to 'callee' was given up: /),
	});
	expect({ tracked: tracked(caller), pending: pending(caller) }).toEqual({
		tracked: 0,
		pending: 0,
	});
	// Already aborted: refused before anything is sent.
	await expect(
		caller.call("silent.wait", {}, { signal: abort.signal } as object),
	).rejects.toBeInstanceOf(RequestAbortedError);
});

test("a balanced call (naming no node) is failed at once when a node serving its action says it reconnected: it may have been dropped while that node was away", async () => {
	const call = caller.call("silent.wait", {}, { timeout: 60_000 }).catch((e: Error) => e);
	await new Promise((resolve) => setTimeout(resolve, 100));
	expect(pending(caller)).toBe(1);
	// The notice the callee sends on reconnecting (src/broker/lost-requests.ts), on its own NATS connection.
	const prefix = (callee.transit as unknown as { tx: { prefix: string } }).tx.prefix;
	(natsClient(callee) as unknown as { publish(subject: string, data: Uint8Array): void }).publish(
		`${prefix}.X-RECONNECTED`,
		Buffer.from(JSON.stringify({ nodeID: "callee" })),
	);
	const started = Date.now();
	const err = await call;
	expect(err).toBeInstanceOf(Errors.RequestRejectedError);
	expect(Date.now() - started).toBeLessThan(1_000);
	expect(pending(caller)).toBe(0);
	// A node that does not serve the action leaves the call alone.
	const other = caller.call("silent.wait", {}, { timeout: 60_000 }).catch((e: Error) => e);
	await new Promise((resolve) => setTimeout(resolve, 100));
	(natsClient(callee) as unknown as { publish(subject: string, data: Uint8Array): void }).publish(
		`${prefix}.X-RECONNECTED`,
		Buffer.from(JSON.stringify({ nodeID: "someone-else" })),
	);
	await new Promise((resolve) => setTimeout(resolve, 300));
	expect(pending(caller)).toBe(1);
	expect(await other).toBe(undefined);
});
