/**
 * NATS over TLS with real certificates (made by the openssl command, src/cluster/nats-certs.ts)
 * and a real NATS cluster of three routed nats-servers (src/cluster/nats-cluster.ts): the
 * certificate files are private, TRANSPORTER's list with NATS_CA_FILE / NATS_CERT_FILE /
 * NATS_KEY_FILE connects brokers over TLS through any member, and a key that is not the
 * certificate's is refused by name. The parsing itself is test/unit/nats-tls.test.ts.
 */
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { brokerOptions } from "../../src/broker/broker-options";
import { startNatsCluster, type LocalNats } from "../../src/cluster/nats-cluster";
import { ConfigError, loadConfig } from "../../src/config";
import { stopBroker } from "../support/broker";
import { until } from "../support/cluster";

let dir: string;
let nats: LocalNats;
const brokers: ServiceBroker[] = [];

beforeAll(async () => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "nats-tls-"));
	nats = await startNatsCluster({
		folder: dir,
		namespace: "nats-tls",
		keyringNodes: ["keyring"],
		writtenBy: "test/integration/nats-tls.test.ts",
		size: 3,
		tls: true,
		monitor: true,
	});
}, 60_000);

afterAll(async () => {
	await Promise.all(brokers.map((broker) => stopBroker(broker)));
	await nats?.stop();
	fs.rmSync(dir, { recursive: true, force: true });
});

function getJson(port: number, route: string): Promise<Record<string, unknown>> {
	return new Promise((resolve, reject) => {
		http.get({ host: "127.0.0.1", port, path: route }, (res) => {
			let body = "";
			res.on("data", (chunk) => (body += chunk));
			res.on("end", () => resolve(JSON.parse(body) as Record<string, unknown>));
		}).on("error", reject);
	});
}

test("the certificates are made in a 0700 folder, every file 0600, and the servers route to each other over TLS", async () => {
	const certs = nats.certs!;
	expect(fs.statSync(certs.dir).mode & 0o777).toBe(0o700);
	const files = fs.readdirSync(certs.dir).sort();
	expect(files).toEqual([
		"ca-key.pem",
		"ca.pem",
		"client-key.pem",
		"client.pem",
		"server-key.pem",
		"server.pem",
	]);
	for (const file of files)
		expect(fs.statSync(path.join(certs.dir, file)).mode & 0o777).toBe(0o600);
	expect(nats.url("ops").split(",")).toHaveLength(3);
	expect(nats.url("ops")).toMatch(/^tls:\/\/ops:[^@]+@127\.0\.0\.1:\d+,tls:\/\/ops:/);
	// Each member routes to the two others (a full mesh), over TLS.
	for (const server of nats.servers)
		await until(`${server.url} to route to both other members`, 20_000, async () => {
			const routez = await getJson(server.monitorPort!, "/routez");
			return routez.num_routes === 2;
		});
	const varz = await getJson(nats.servers[0].monitorPort!, "/varz");
	expect(varz).toMatchObject({ tls_required: true, tls_verify: true });
	expect((varz.cluster as { tls_required?: boolean }).tls_required).toBe(true);
});

test("two brokers given every URL and the TLS files connect over TLS and call each other across the cluster", async () => {
	const env = { ...nats.env(), NAMESPACE: "nats-tls", DATA_DIR: "" };
	// Each broker is given the list with its first member first; nats.js picks a member itself.
	const callee = new ServiceBroker(
		brokerOptions(loadConfig({ ...env, TRANSPORTER: nats.url("keyring") }), {
			logLevel: false,
			nodeID: "keyring",
		}),
	);
	callee.createService({ name: "echo", actions: { say: (ctx) => ctx.params } });
	const caller = new ServiceBroker(
		brokerOptions(loadConfig({ ...env, TRANSPORTER: nats.url("signer") }), {
			logLevel: false,
			nodeID: "caller",
		}),
	);
	brokers.push(callee, caller);
	await Promise.all([callee.start(), caller.start()]);
	await caller.waitForServices("echo", 20_000);
	expect(await caller.call("echo.say", { over: "tls" })).toEqual({ over: "tls" });
	// Both connections are TLS connections, counted by the servers they chose.
	const connections = await Promise.all(
		nats.servers.map((server) => getJson(server.monitorPort!, "/connz?auth=true")),
	);
	const users = connections.flatMap((connz) =>
		(
			(connz.connections as Array<{ authorized_user?: string; tls_version?: string }>) ?? []
		).map(
			(connection) =>
				`${connection.authorized_user}:${connection.tls_version ? "tls" : "plain"}`,
		),
	);
	expect(users.sort()).toEqual(["keyring:tls", "signer:tls"]);
}, 60_000);

test("a key that is not the client certificate's, or a CA file holding a key, stops the node naming the variable", () => {
	const certs = nats.certs!;
	const base = { TRANSPORTER: nats.url("ops"), DATA_DIR: "" };
	expect(loadConfig({ ...base, ...nats.env() }).natsTls).toMatchObject({
		caFile: certs.caFile,
		certFile: certs.clientCert,
	});
	const mismatched = { ...base, ...nats.env(), NATS_KEY_FILE: certs.serverKey };
	expect(() => loadConfig(mismatched)).toThrow(ConfigError);
	expect(() => loadConfig(mismatched)).toThrow(
		`NATS_KEY_FILE ${certs.serverKey} is not the private key of NATS_CERT_FILE ${certs.clientCert}`,
	);
	expect(() => loadConfig({ ...base, NATS_CA_FILE: certs.serverKey })).toThrow(
		`NATS_CA_FILE ${certs.serverKey} holds no valid certificate`,
	);
	expect(() =>
		loadConfig({
			...base,
			NATS_CERT_FILE: certs.clientCert,
			NATS_KEY_FILE: certs.caFile,
		}),
	).toThrow(`NATS_KEY_FILE ${certs.caFile} holds no valid private key`);
});
