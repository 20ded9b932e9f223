/**
 * Every broker option in one place, derived from the validated configuration. The
 * `moleculer.config.ts` file (used by moleculer-runner), the CLI commands and the tests all
 * build their brokers from here so that they behave alike.
 */
import os from "node:os";
import type { BrokerOptions } from "moleculer";
import { loadCredential } from "../identity/credential";
import { replCommands } from "./repl-commands";
import { credentialSettings, portChoice, type AppConfig } from "../config";
import { DomainErrorsMiddleware } from "../errors";
import { HealthMiddleware } from "./health";
import { LocalFirstMiddleware } from "./local-first";
import { jsonLogFormatter, textLogFormatter } from "../log-format";
import { FailLostRequestsMiddleware } from "./lost-requests";
import { FlatArrayValidator } from "./flat-array-validator";
import { listeningPrometheus } from "./metrics-reporter";
import { nodeIdFor } from "./nats-permissions";
import { natsTransporterOptions } from "../nats-tls";
import { PacketGuardMiddleware } from "./packet-guard";
import { ReplErrorsMiddleware } from "./repl-errors";
import { StopOnceMiddleware } from "./stop-once";
import { SteadySubscriptionsMiddleware } from "./balanced-subscriptions";

export interface BrokerOverrides {
	nodeID?: string;
	/** Expose Prometheus metrics on `config.metricsPort` (long-running nodes). */
	prometheus?: boolean;
	logLevel?: string | false;
	/** Serve `/health/live` and `/health/ready` on `config.healthPort` (long-running nodes). */
	health?: boolean;
}

export function brokerOptions(config: AppConfig, overrides: BrokerOverrides = {}): BrokerOptions {
	const logLevel = overrides.logLevel ?? config.logLevel;
	const prometheus = overrides.prometheus ?? false;
	return {
		namespace: config.namespace,
		// As the NATS user ops, `ops.<id>`: the only node subjects ops may read (src/broker/nats-permissions.ts).
		nodeID: nodeIdFor(
			config.transporter,
			overrides.nodeID ?? config.nodeId ?? `${os.hostname()}-${process.pid}`,
		),
		transporter: config.transporter
			? {
					type: "NATS",
					options: {
						// One server or a cluster, over TLS or not (src/nats-tls.ts).
						...natsTransporterOptions(config.transporter, config.natsTls),
						// Keep reconnecting: a restarted nats-server must not strand a node.
						maxReconnectAttempts: -1,
						reconnectTimeWait: 500,
					},
				}
			: null,
		// Secrets are masked in every line; LOG_FORMAT=json writes one object per line (src/log-format.ts).
		logger:
			logLevel === false
				? false
				: {
						type: "Console",
						options: {
							level: logLevel,
							formatter:
								config.logFormat === "json" ? jsonLogFormatter : textLogFormatter,
							colors: false,
						},
					},
		// A dead node is noticed within seconds, not after Moleculer's defaults.
		heartbeatInterval: 2,
		heartbeatTimeout: 6,
		requestTimeout: 30_000,
		// Retrying is the batcher's job (as new batches, docs/design.md §7.4), never a blind re-send.
		retryPolicy: { enabled: false },
		// Over NATS a call naming no node goes to one subject per action, balanced by NATS: what
		// lets per-role NATS users be kept from the keyring's lease actions (src/broker/nats-permissions.ts).
		disableBalancer: Boolean(config.transporter),
		circuitBreaker: { enabled: false },
		registry: { strategy: "RoundRobin", preferLocal: true },
		// Graceful shutdown: wait for in-flight requests before the services stop.
		tracking: { enabled: true, shutdownTimeout: 15_000 },
		// Metrics only where something exports them: measuring every call costs the event loop
		// time a one-shot job (npm start, the benchmark) spends better on signing.
		metrics: prometheus
			? {
					enabled: true,
					reporter: [
						listeningPrometheus({
							port: portChoice(config, "metricsPort"),
							path: "/metrics",
						}),
					],
				}
			: { enabled: false },
		validator: new FlatArrayValidator(),
		middlewares: [
			// First registered is innermost: LocalFirst sees a call before FailLostRequests sends it out.
			// PacketGuard wraps only the handling of incoming packets (none of the others does):
			// a forged INFO naming this node must not stop it.
			...(config.transporter
				? [
						PacketGuardMiddleware(),
						FailLostRequestsMiddleware(),
						LocalFirstMiddleware(),
						// Re-announcing services re-makes the action subscriptions: with no gap.
						SteadySubscriptionsMiddleware(),
					]
				: []),
			// Always there: the gateway's /health/ready uses its check; the HTTP server only on long-running nodes.
			HealthMiddleware({ port: overrides.health ? portChoice(config, "healthPort") : null }),
			// The logic's DomainErrors become Moleculer errors at the edge of every local action (src/errors.ts).
			DomainErrorsMiddleware(),
			// A second broker.stop() (the REPL's exit, then its closed input) waits for the first.
			StopOnceMiddleware(),
			// A refusal answered to the REPL's `call` prints its message, not a stack trace.
			ReplErrorsMiddleware(),
		],
		// `progress` in the REPL: live figures of the active run.
		// moleculer's typings say `args: string[]`; moleculer-repl passes `{ options }`, as used.
		replOptions: {
			customCommands: replCommands(undefined, () =>
				loadCredential(credentialSettings(config, "batcher")),
			) as unknown as NonNullable<BrokerOptions["replOptions"]>["customCommands"],
		},
	};
}
