/**
 * The health middleware behind every probe (src/broker/health.ts), on real brokers: liveness from
 * the moment the broker starts starting, readiness only once services and transport are up,
 * and back to 503 when the NATS server goes away or the broker stops.
 */
import http from "node:http";
import net from "node:net";
import { ServiceBroker, type BrokerOptions } from "moleculer";
import { HealthMiddleware, type ReadinessReport } from "../../src/broker/health";
import { startNatsServer, type NatsServer } from "../support/nats-server";
import { until } from "../support/cluster";
import { stopBroker } from "../support/broker";

interface Reply {
	status: number;
	body: Record<string, unknown>;
}

function request(port: number, path: string, method = "GET"): Promise<Reply> {
	return new Promise((resolve, reject) => {
		const req = http.request({ host: "127.0.0.1", port, path, method, agent: false }, (res) => {
			let text = "";
			res.setEncoding("utf8");
			res.on("data", (chunk) => (text += chunk));
			res.on("end", () =>
				resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : {} }),
			);
		});
		req.on("error", reject);
		req.end();
	});
}

function brokerWith(
	health: ReturnType<typeof HealthMiddleware>,
	options: Partial<BrokerOptions> = {},
): ServiceBroker {
	return new ServiceBroker({
		logger: false,
		nodeID: `health-${process.pid}-${Math.random().toString(36).slice(2, 6)}`,
		middlewares: [health],
		...options,
	});
}

describe("HealthMiddleware", () => {
	test("live while services start, ready only once they have, not ready while stopping, closed after", async () => {
		const health = HealthMiddleware({ port: 0, host: "127.0.0.1" });
		const broker = brokerWith(health);
		let letStart!: () => void;
		const gate = new Promise<void>((resolve) => (letStart = resolve));
		broker.createService({ name: "slow", started: () => gate });
		broker.createService({ name: "quick" });

		const starting = broker.start();
		await until(
			"the health server to listen",
			5_000,
			async () => health.address() !== null,
			50,
		);
		const { port } = health.address()!;

		expect(await request(port, "/health/live")).toEqual({
			status: 200,
			body: expect.objectContaining({ status: "live", nodeID: broker.nodeID }),
		});
		const early = await request(port, "/health/ready");
		expect(early.status).toBe(503);
		expect(early.body).toEqual(
			expect.objectContaining({
				status: "not ready",
				notReady: expect.arrayContaining([
					"broker is not started",
					"service slow is not started",
				]),
			}),
		);

		letStart();
		await starting;
		const ready = await request(port, "/health/ready");
		expect(ready).toEqual({
			status: 200,
			body: {
				status: "ready",
				nodeID: broker.nodeID,
				services: ["slow", "quick"],
				notReady: [],
			} satisfies ReadinessReport,
		});

		expect((await request(port, "/health/ready", "POST")).status).toBe(405);
		expect((await request(port, "/metrics")).status).toBe(404);
		expect((await request(port, "/health/live?probe=1")).status).toBe(200);

		const stopping = broker.stop();
		const during = await request(port, "/health/ready");
		expect(during.status).toBe(503);
		expect(during.body.notReady).toEqual(
			expect.arrayContaining([expect.stringMatching(/^broker is (stopping|not started)$/)]),
		);
		await stopping;
		expect(health.address()).toBeNull();
		await expect(request(port, "/health/live")).rejects.toThrow(/ECONNREFUSED/);
	});

	test("a port the user set that is in use fails the start with a message naming the setting; a taken default gives way to a free port with a warning", async () => {
		const blocker = net.createServer();
		await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
		const { port } = blocker.address() as net.AddressInfo;
		const broker = brokerWith(HealthMiddleware({ port, host: "127.0.0.1" }));
		try {
			await expect(broker.start()).rejects.toThrow(
				`HEALTH_PORT=${port}: the port is already in use, so the health server cannot listen there. Stop the other process, or set HEALTH_PORT to a free port (0 picks any).`,
			);
			await broker.stop().catch(() => undefined);
			const fallback = HealthMiddleware({
				port: { port, variable: "HEALTH_PORT", explicit: false },
				host: "127.0.0.1",
			});
			const second = brokerWith(fallback);
			const warnings: string[] = [];
			second.logger.warn = ((line: string) =>
				warnings.push(line)) as typeof second.logger.warn;
			await second.start();
			try {
				const address = fallback.address()!;
				expect(address.port).not.toBe(port);
				expect((await request(address.port, "/health/live")).status).toBe(200);
				expect(warnings).toContain(
					`Port ${port} (the default of HEALTH_PORT) is in use: the health server listens on port ${address.port} instead. Set HEALTH_PORT to choose one.`,
				);
			} finally {
				await second.stop();
			}
		} finally {
			await new Promise((resolve) => blocker.close(resolve));
		}
	});

	describe("over NATS", () => {
		let nats: NatsServer;
		beforeAll(async () => {
			nats = await startNatsServer();
		});
		afterAll(async () => {
			await nats?.stop();
		});

		test("not ready while the NATS server is down, ready again once the client reconnects", async () => {
			const health = HealthMiddleware({ port: 0, host: "127.0.0.1" });
			const broker = brokerWith(health, {
				transporter: {
					type: "NATS",
					options: { url: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 },
				},
			});
			broker.createService({ name: "echo", actions: { ping: () => "pong" } });
			await broker.start();
			try {
				const { port } = health.address()!;
				expect((await request(port, "/health/ready")).status).toBe(200);

				await nats.stop();
				await until(
					"readiness to drop with NATS gone",
					10_000,
					async () => (await request(port, "/health/ready")).status === 503,
					50,
				);
				const down = await request(port, "/health/ready");
				expect(down.body.notReady).toEqual(["transporter is not connected"]);
				// Liveness stays up: a NATS outage is no reason to restart every pod.
				expect((await request(port, "/health/live")).status).toBe(200);

				await nats.restart();
				await until(
					"readiness after NATS is back",
					15_000,
					async () => (await request(port, "/health/ready")).status === 200,
					50,
				);
			} finally {
				await stopBroker(broker);
			}
		});
	});
});

describe("nats-server test harness", () => {
	test("starts on a free port, restarts on the same one, and stop waits for the exit", async () => {
		const nats = await startNatsServer({ monitor: true });
		try {
			expect(nats.url).toBe(`nats://127.0.0.1:${nats.port}`);
			const firstPid = nats.pid!;
			expect(firstPid).toBeGreaterThan(0);
			const healthz = await new Promise<number>((resolve, reject) =>
				http
					.get(
						{ host: "127.0.0.1", port: nats.monitorPort!, path: "/healthz" },
						(res) => {
							res.resume();
							resolve(res.statusCode ?? 0);
						},
					)
					.on("error", reject),
			);
			expect(healthz).toBe(200);

			await nats.restart();
			expect(nats.pid).not.toBe(firstPid);
			expect(isAlive(firstPid)).toBe(false);

			await nats.kill();
			expect(nats.pid).toBeNull();
			await nats.restart();
			expect(nats.pid).toBeGreaterThan(0);
		} finally {
			const last = nats.pid;
			await nats.stop();
			await nats.stop(); // idempotent
			if (last) expect(isAlive(last)).toBe(false);
		}
	});
});

function isAlive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch {
		return false;
	}
}
