/**
 * Liveness and readiness over plain HTTP on every node, whatever its role (`SERVICES`), so
 * Kubernetes probes and Docker health checks work for the signer and keyring nodes that
 * have no API gateway:
 *
 * - `GET /health/live`  200 while the process runs (its event loop answers).
 * - `GET /health/ready` 200 once the broker is started, every local service has started and
 *   the transporter (if any) is connected; otherwise 503 with the reasons in the JSON body.
 *
 * The port comes in as a parameter (`HEALTH_PORT` is read once, in src/config.ts). Without a
 * port the middleware serves nothing but still tracks readiness: the API gateway answers its
 * own `/health/ready` with the same check (`readinessOf`), plus the services it needs.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Middleware, Service, ServiceBroker } from "moleculer";
import { listen, type PortChoice } from "./listen";
import { natsClient, watchNatsStatus } from "./nats-status";

export interface HealthOptions {
	/**
	 * TCP port; 0 picks a free one (tests), see `address()`; null serves nothing. A number is
	 * taken as set by the user; a PortChoice says (a taken default gives way, src/broker/listen.ts).
	 */
	port: number | PortChoice | null;
	/** Interface to bind; all of them by default, since kubelet probes the pod IP. */
	host?: string;
}

export interface ReadinessReport {
	status: "ready" | "not ready";
	nodeID: string;
	/** Local services by full name, internal (`$node`) ones left out. */
	services: string[];
	/** Why the node is not ready; empty when it is. */
	notReady: string[];
}

export type HealthMiddleware = Middleware & {
	/** Where the health server listens, once the broker is starting; null before and after. */
	address(): AddressInfo | null;
};

/** Readiness of a node; `required` adds services that must be reachable (locally or remotely). */
export type Readiness = (required?: string[]) => ReadinessReport;

const checks = new WeakMap<ServiceBroker, Readiness>();

/** A condition a node is ready only without: it returns why not, or null. */
export type ReadinessCondition = () => string | null;

const conditions = new WeakMap<ServiceBroker, Map<string, ReadinessCondition>>();

/** Adds `condition` to `broker`'s readiness (a service's store, say); returns how to take it away. */
export function addReadinessCondition(
	broker: ServiceBroker,
	name: string,
	condition: ReadinessCondition,
): () => void {
	let of = conditions.get(broker);
	if (!of) conditions.set(broker, (of = new Map()));
	of.set(name, condition);
	return () => of.delete(name);
}

/** The readiness check of `broker`'s health middleware, if it has one. */
export function readinessOf(broker: ServiceBroker): Readiness | null {
	return checks.get(broker) ?? null;
}

/**
 * Moleculer middleware serving the health routes. The server starts in the broker's
 * `starting` hook, not `started`, so liveness answers while services start (seeding 100,000
 * records can outlast a liveness probe's patience) and readiness says what is still missing.
 */
export function HealthMiddleware(options: HealthOptions): HealthMiddleware {
	let server: http.Server | null = null;
	const startedServices = new Set<Service>();
	// Unplanned NATS disconnects leave Moleculer's `connected` flags untouched, so track them here.
	let transportDown = false;

	function readiness(broker: ServiceBroker, required: string[] = []): ReadinessReport {
		const notReady: string[] = [];
		if (broker.stopping) notReady.push("broker is stopping");
		else if (!broker.started) notReady.push("broker is not started");
		for (const service of broker.services)
			if (!startedServices.has(service))
				notReady.push(`service ${service.fullName} is not started`);
		const transit = broker.transit;
		if (transit) {
			const client = natsClient(broker);
			if (
				!transit.connected ||
				!transit.tx.connected ||
				transportDown ||
				client?.isClosed?.()
			)
				notReady.push("transporter is not connected");
		}
		if (required.length) {
			const reachable = new Set(
				broker.registry
					.getServiceList({ onlyAvailable: true })
					.map((service) => service.name),
			);
			for (const name of required)
				if (!reachable.has(name)) notReady.push(`service ${name} is not reachable`);
		}
		for (const condition of conditions.get(broker)?.values() ?? []) {
			const reason = condition();
			if (reason) notReady.push(reason);
		}
		return {
			status: notReady.length === 0 ? "ready" : "not ready",
			nodeID: broker.nodeID,
			services: broker.services
				.map((service) => service.fullName)
				.filter((name) => !name.startsWith("$")),
			notReady,
		};
	}

	function watchTransport(broker: ServiceBroker): void {
		watchNatsStatus(broker, (type) => {
			if (type === "disconnect") transportDown = true;
			else if (type === "reconnect") transportDown = false;
		});
	}

	function handle(
		broker: ServiceBroker,
		req: http.IncomingMessage,
		res: http.ServerResponse,
	): void {
		const path = (req.url ?? "/").split("?")[0];
		const send = (code: number, body: object) => {
			res.writeHead(code, {
				"Content-Type": "application/json; charset=utf-8",
				"Cache-Control": "no-store",
			});
			res.end(req.method === "HEAD" ? undefined : JSON.stringify(body));
		};
		if (req.method !== "GET" && req.method !== "HEAD") {
			res.setHeader("Allow", "GET, HEAD");
			return send(405, { error: "method not allowed" });
		}
		if (path === "/health/live")
			return send(200, {
				status: "live",
				nodeID: broker.nodeID,
				uptimeSeconds: Math.round(process.uptime()),
			});
		if (path === "/health/ready") {
			const report = readiness(broker);
			return send(report.status === "ready" ? 200 : 503, report);
		}
		send(404, { error: "not found", routes: ["/health/live", "/health/ready"] });
	}

	return {
		name: "Health",

		created(broker: ServiceBroker) {
			checks.set(broker, (required) => readiness(broker, required));
		},

		serviceStarted(service: Service) {
			startedServices.add(service);
			return Promise.resolve();
		},

		serviceStopping(service: Service) {
			startedServices.delete(service);
			return Promise.resolve();
		},

		starting(broker: ServiceBroker) {
			if (options.port === null) return Promise.resolve();
			const choice: PortChoice =
				typeof options.port === "number"
					? { port: options.port, variable: "HEALTH_PORT", explicit: true }
					: options.port;
			const listening = http.createServer((req, res) => handle(broker, req, res));
			return listen(
				listening,
				choice,
				"health server",
				(line) => broker.logger.warn(line),
				options.host,
			).then(({ port }) => {
				server = listening;
				broker.logger.info(
					`Health checks on http://${options.host ?? "0.0.0.0"}:${port}/health/live and /health/ready`,
				);
			});
		},

		started(broker: ServiceBroker) {
			watchTransport(broker);
			return Promise.resolve();
		},

		stopped() {
			const closing = server;
			server = null;
			if (!closing) return Promise.resolve();
			return new Promise<void>((resolve) => {
				closing.close(() => resolve());
				// Probes use keep-alive; idle sockets would hold close() open.
				closing.closeAllConnections();
			});
		},

		address() {
			return server ? (server.address() as AddressInfo) : null;
		},
	};
}
