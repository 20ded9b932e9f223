/**
 * Moleculer's Prometheus reporter, bound as every listener here is (src/broker/listen.ts): a taken
 * METRICS_PORT the user did not set gives way to a free port with a warning, one the user
 * set stops the node with a message naming it. Moleculer's own reporter leaves the listen
 * error unhandled, which crashed `npm run repl` next to `npm run serve`. Registered by name
 * ("ListeningPrometheus"), so the broker options stay plain data.
 */
import http from "node:http";
import { MetricReporters, type BrokerOptions, type MetricRegistry } from "moleculer";
import { listen, type PortChoice } from "./listen";

export interface ListeningPrometheusOptions {
	port: PortChoice;
	path?: string;
}

export class ListeningPrometheusReporter extends MetricReporters.Prometheus {
	private readonly choice: PortChoice;

	constructor(options: ListeningPrometheusOptions) {
		super({ port: options.port.port, path: options.path ?? "/metrics" });
		this.choice = options.port;
	}

	override init(registry: MetricRegistry): void {
		// The base reporter's init (registry, logger, filters), not the Prometheus one that listens.
		MetricReporters.Base.prototype.init.call(this, registry);
		const opts = this.opts as typeof this.opts & {
			defaultLabels: (registry: MetricRegistry) => Record<string, unknown>;
		};
		(this as unknown as { defaultLabels: Record<string, unknown> }).defaultLabels =
			typeof opts.defaultLabels === "function"
				? opts.defaultLabels.call(this, registry)
				: opts.defaultLabels;
		this.server = http.createServer();
		this.server.on("request", this.handler.bind(this));
		const logger = (
			this as unknown as { logger: { info(line: string): void; warn(line: string): void } }
		).logger;
		listen(this.server, this.choice, "Prometheus metrics endpoint", (line) =>
			logger.warn(line),
		).then(
			({ port }) =>
				logger.info(`Prometheus metrics on http://0.0.0.0:${port}${this.opts.path}`),
			(err: Error) => registry.broker.fatal(err.message, err, true),
		);
	}

	override stop(): Promise<void> {
		if (!this.server?.listening) return Promise.resolve();
		return super.stop();
	}
}

MetricReporters.register(
	"ListeningPrometheus",
	ListeningPrometheusReporter as unknown as MetricReporters.Base,
);

type ReporterOption = NonNullable<
	Exclude<
		Extract<NonNullable<BrokerOptions["metrics"]>, object>["reporter"],
		unknown[] | string | null
	>
>;

/** The broker's `metrics.reporter` entry for this reporter (Moleculer's typings list only its own names). */
export function listeningPrometheus(options: ListeningPrometheusOptions): ReporterOption {
	return { type: "ListeningPrometheus", options } as unknown as ReporterOption;
}
