/**
 * One forged INFO packet must not stop a node (issue 18). Moleculer takes an INFO naming this
 * node as its sender under another instanceID for a node id conflict and calls `broker.fatal`;
 * node ids are predictable (`keyring`) and every NATS user may publish INFO. On a real
 * nats-server, the packet is published with the `nats` client as Moleculer's JSON serializer
 * writes it: to the keyring of a cluster with per-role users (as the ops user), and to a node
 * built with the project's broker options on a nats-server with no users. The other nodes,
 * which took the forged INFO for the node's (no services), have its services back within
 * seconds: the node announces itself again. And the ops user
 * gets no subscription it does not need: the balanced requests (signatures, batch payloads),
 * other nodes' subjects and the services' balanced events are refused to it.
 */
import { randomUUID } from "node:crypto";
import { Loggers, ServiceBroker } from "moleculer";
import { connect, type NatsConnection, type NatsError } from "nats";
import { brokerOptions } from "../../src/broker/broker-options";
import type { Cluster } from "../../src/cluster/launcher";
import { loadConfig } from "../../src/config";
import type { KeyringStatus } from "../../src/contract";
import { nodeIdFor, subjectPrefix } from "../../src/broker/nats-permissions";
import { scenario, startTestCluster, stopTestCluster, until } from "../support/cluster";
import { stopBroker } from "../support/broker";
import { startNatsServer, type NatsServer } from "../support/nats-server";

const DROPPED =
	/Dropped an INFO packet claiming to be this node: sender "(.+?)", instanceID "(.+?)"/;

/** An INFO packet as Moleculer's JSON serializer writes it, claiming to be `sender`. */
function forgedInfo(sender: string, instanceID: string): Uint8Array {
	return Buffer.from(
		JSON.stringify({
			ver: "5",
			sender,
			instanceID,
			services: [],
			ipList: ["203.0.113.9"],
			hostname: "forger",
			client: { type: "nodejs", version: "0.15.2", langVersion: process.version },
			config: {},
			seq: 1,
			metadata: {},
		}),
	);
}

/** A plain NATS connection (the `nats` package), as `user` when the URL names one. */
async function natsClient(url: string): Promise<NatsConnection> {
	const parsed = new URL(url);
	return connect({
		servers: `${parsed.hostname}:${parsed.port}`,
		...(parsed.username
			? {
					user: decodeURIComponent(parsed.username),
					pass: decodeURIComponent(parsed.password),
				}
			: {}),
	});
}

async function publishForged(
	url: string,
	namespace: string,
	sender: string,
	instanceID: string,
): Promise<void> {
	const nc = await natsClient(url);
	try {
		nc.publish(`${subjectPrefix(namespace)}.INFO`, forgedInfo(sender, instanceID));
		await nc.flush();
	} finally {
		await nc.close();
	}
}

describe("on a cluster with per-role NATS users", () => {
	let cluster: Cluster | undefined;

	beforeAll(async () => {
		cluster = await startTestCluster({ records: 300, keys: 2, batchSize: 100, signers: 1 });
	}, 120_000);

	afterAll(() => stopTestCluster(cluster));

	test(
		"a forged INFO claiming to be the keyring, published as the ops user: dropped with a warning, the keyring keeps serving and a run completes",
		() =>
			scenario(
				() => cluster,
				async () => {
					const keyring = cluster!.role("keyring");
					const forgedInstance = randomUUID();
					await publishForged(
						cluster!.natsUrl("ops"),
						cluster!.namespace,
						keyring.nodeID,
						forgedInstance,
					);

					const [, sender, instance] = await until(
						"the keyring's warning",
						10_000,
						() => keyring.output().match(DROPPED),
						100,
					);
					expect({ sender, instance }).toEqual({
						sender: keyring.nodeID,
						instance: forgedInstance,
					});
					expect(keyring.output()).not.toMatch(/nodeID conflict/);
					// Its process is alive, and it answers: the other nodes have its services back (it announced itself again).
					expect(keyring.running()).toBe(true);
					const broker = await cluster!.connect();
					const status = await until(
						"keyring.status to answer",
						5_000,
						() =>
							broker
								.call<KeyringStatus, object>(
									"keyring.status",
									{},
									{ timeout: 2_000 },
								)
								.catch(() => null),
						100,
					);
					expect(status).toMatchObject({ free: 2 });
					const run = await cluster!.startRun(100);
					expect((await cluster!.runEnded(run.runId, 60_000)).status).toBe("completed");
					expect(keyring.running()).toBe(true);
					expect(keyring.output()).not.toMatch(/nodeID conflict/);
				},
			),
		90_000,
	);

	test(
		"the ops user reads the broadcasts and ops nodes' subjects only: no balanced requests, no other node's subjects, no services' balanced events",
		() =>
			scenario(
				() => cluster,
				async () => {
					const p = subjectPrefix(cluster!.namespace);
					const nc = await natsClient(cluster!.natsUrl("ops"));
					try {
						const refused = new Map<string, string>();
						const tryToSubscribe = (subject: string) =>
							nc.subscribe(subject, {
								callback: (err: NatsError | null) => {
									if (err) refused.set(subject, err.code);
								},
							});
						const signer = cluster!.signers()[0].nodeID;
						const denied = [
							`${p}.>`,
							`${p}.REQB.>`,
							`${p}.REQB.records.storeSignatures`,
							`${p}.REQB.signer.signBatch`,
							`${p}.REQB.keyring.status`,
							`${p}.REQ.${signer}`,
							`${p}.RES.${signer}`,
							`${p}.REQ.keyring`,
							`${p}.RES.main`,
							`${p}.EVENT.main`,
							`${p}.EVENTB.>`,
							`${p}.EVENTB.api.run.completed`,
						];
						const allowed = [
							`${p}.INFO`,
							`${p}.HEARTBEAT`,
							`${p}.DISCONNECT`,
							`${p}.DISCOVER`,
							`${p}.PING`,
							`${p}.X-RECONNECTED`,
							`${p}.RES.ops.probe`,
							`${p}.REQ.ops.probe`,
							`${p}.PONG.ops.probe`,
							`${p}.REQB.$node.list`,
							`${p}.EVENTB.ops.probe.run.completed`,
						];
						for (const subject of [...denied, ...allowed]) tryToSubscribe(subject);
						await nc.flush();
						await until(
							"NATS's answers",
							5_000,
							() => refused.size >= denied.length || null,
							50,
						).catch(() => null);
						expect([...refused.keys()].sort()).toEqual([...denied].sort());
						expect(new Set(refused.values())).toEqual(
							new Set(["PERMISSIONS_VIOLATION"]),
						);
					} finally {
						await nc.close();
					}
					// A node joining as ops (the REPL's way) runs as ops.<id> and is served.
					const config = loadConfig({
						TRANSPORTER: cluster!.natsUrl("ops"),
						NAMESPACE: cluster!.namespace,
						DATA_DIR: "",
					});
					expect(nodeIdFor(config.transporter, "repl-1")).toBe("ops.repl-1");
					const repl = new ServiceBroker({
						...brokerOptions(config, { nodeID: "repl-1", logLevel: false }),
						skipProcessEventRegistration: true,
					});
					try {
						await repl.start();
						expect(repl.nodeID).toBe("ops.repl-1");
						await repl.waitForServices(["keyring", "records"], 10_000);
						expect(
							await repl.call<KeyringStatus, object>("keyring.status", {}),
						).toMatchObject({ free: 2 });
						expect(
							(await repl.call<object[], object>("$node.list", {})).length,
						).toBeGreaterThan(2);
					} finally {
						await stopBroker(repl);
					}
				},
			),
		60_000,
	);
});

/** Every log line of a broker, for assertions. */
class CapturedLogs extends Loggers.Base<{ level?: "info" }> {
	readonly lines: string[] = [];
	override getLogHandler(bindings: { mod?: string }) {
		return (type: string, args: unknown[]) => {
			this.lines.push(
				`${type.toUpperCase()} ${bindings?.mod ?? ""}: ${args.map((arg) => (arg instanceof Error ? arg.message : typeof arg === "string" ? arg : JSON.stringify(arg))).join(" ")}`,
			);
		};
	}
}

describe("on a nats-server with no users", () => {
	let nats: NatsServer | undefined;
	const brokers: ServiceBroker[] = [];

	afterAll(async () => {
		for (const broker of brokers) await stopBroker(broker).catch(() => undefined);
		await nats?.stop();
	});

	test("a forged INFO claiming a node's own id does not stop it: dropped with a warning once per instance, the node keeps serving", async () => {
		nats = await startNatsServer();
		const config = loadConfig({
			TRANSPORTER: nats.url,
			NAMESPACE: `guard-${process.pid}`,
			DATA_DIR: "",
		});
		const logs = new CapturedLogs();
		const victim = new ServiceBroker({
			...brokerOptions(config, { nodeID: "keyring" }),
			logger: logs,
			skipProcessEventRegistration: true,
		});
		brokers.push(victim);
		// Moleculer's fatal exits the process: here it would only be recorded (and fail the test).
		const fatal = jest.spyOn(victim, "fatal").mockImplementation(() => undefined as never);
		victim.createService({
			name: "probe",
			actions: { hello: () => `hello from ${victim.instanceID}` },
		});
		await victim.start();
		const caller = new ServiceBroker({
			...brokerOptions(config, { nodeID: "caller", logLevel: false }),
			skipProcessEventRegistration: true,
		});
		brokers.push(caller);
		await caller.start();
		await caller.waitForServices("probe", 10_000);
		// Past the victim's own announcements of its start (debounced): what restores it below is its answer to the forgery.
		await new Promise((resolve) => setTimeout(resolve, 1_500));

		const forgedInstance = randomUUID();
		await publishForged(nats.url, config.namespace, "keyring", forgedInstance);
		await publishForged(nats.url, config.namespace, "keyring", forgedInstance);
		await until(
			"the warning",
			10_000,
			() => logs.lines.some((line) => DROPPED.test(line)) || null,
			50,
		);
		// The same forged instance again within the minute: dropped, not logged again.
		await new Promise((resolve) => setTimeout(resolve, 500));
		const warnings = logs.lines.filter((line) => DROPPED.test(line));
		expect(warnings).toHaveLength(1);
		expect(warnings[0]).toMatch(/^WARN packet-guard: /);
		expect(warnings[0].match(DROPPED)!.slice(1)).toEqual(["keyring", forgedInstance]);
		expect(fatal).not.toHaveBeenCalled();
		expect(logs.lines.join("\n")).not.toMatch(/nodeID conflict/);

		// Still running, still connected, still serving: the caller, which took the forged INFO
		// for the victim's (no services), has them back once the victim announced itself again.
		expect((victim as unknown as { started: boolean }).started).toBe(true);
		expect(victim.transit?.connected).toBe(true);
		const answer = await until(
			"probe.hello to answer",
			5_000,
			() =>
				caller
					.call<string, object>("probe.hello", {}, { timeout: 2_000 })
					.catch(() => null),
			100,
		);
		expect(caller.registry.nodes.get("keyring")?.instanceID).toBe(victim.instanceID);
		expect(answer).toBe(`hello from ${victim.instanceID}`);
		// Its own INFO, and every other packet, still go through: it answers a node that joins now.
		const late = new ServiceBroker({
			...brokerOptions(config, { nodeID: "late", logLevel: false }),
			skipProcessEventRegistration: true,
		});
		brokers.push(late);
		await late.start();
		await late.waitForServices("probe", 10_000);
		expect(await late.call("probe.hello", {})).toBe(answer);
	}, 60_000);
});
