/**
 * The system as it runs in production, on one machine: a nats-server, then one OS process
 * per role, each started with the documented moleculer-runner command line on the build
 * (`SERVICEDIR=dist/services SERVICES=<role> moleculer-runner --config dist/moleculer.config.js`),
 * all sharing one DATA_DIR in which each service owns its own store file:
 *
 *   keyring   SERVICES=keyring                   keyring.sqlite (and master.key)
 *   main      SERVICES=records,batcher,metrics   records.sqlite, batcher.sqlite
 *   signer-N  SERVICES=signer                    (no store)
 *
 * so `npm run audit` and `npm run export` read a cluster's stores as they read `npm start`'s.
 * `npm run cluster`, the cluster tests and the benchmark share it: start, wait until every
 * role's node offers its services, kill / pause / restart one role, stop everything.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { brokerOptions } from "../broker/broker-options";
import { loadConfig } from "../config";
import { ensurePrivateDir, privateAppendStream } from "../private-files";
import { NATS_DEFAULT_MAX_PAYLOAD } from "../audit/collect";
import { sleep, systemClock } from "../clock";
import {
	Actions,
	Events,
	call,
	type RunCompletedEvent,
	type RunReport,
	type RunView,
} from "../contract";
import { killOnExit } from "./children";
import { opsEventGroup, roleUrl, type NatsRole } from "../broker/nats-permissions";
import {
	NATS_MAX_PAYLOAD,
	startNatsCluster,
	type LocalNats,
	type NatsClusterOptions,
} from "./nats-cluster";
import type { NatsServer } from "./nats-server";

export type RoleKind = "keyring" | "main" | "signer";

/** What each role's process runs: the `SERVICES` value of its moleculer-runner command. */
/** The NATS user each role connects as (the launcher's own client is "ops"). */
export const NATS_ROLE_OF: Record<RoleKind, NatsRole> = {
	keyring: "keyring",
	main: "api",
	signer: "signer",
};

export const ROLE_SERVICES: Record<RoleKind, string[]> = {
	keyring: ["keyring"],
	main: ["records", "batcher", "metrics"],
	signer: ["signer"],
};

export interface RoleExit {
	code: number | null;
	signal: NodeJS.Signals | null;
}

export interface RoleProcess {
	/** Stable across restarts: `keyring`, `main`, `signer-1`, ... */
	readonly name: string;
	readonly kind: RoleKind;
	/** 1 for the first process of this role, +1 per restart. */
	readonly generation: number;
	/** The Moleculer node id; a restarted role gets a new one (`signer-2.g2`). */
	readonly nodeID: string;
	readonly dataDir: string;
	readonly pid: number;
	readonly child: ChildProcess;
	/** Its Prometheus port, once it has said which (it binds a free one: nothing is probed first). */
	metricsPort: number | null;
	readonly logFile: string;
	readonly exited: Promise<RoleExit>;
	/** True until the process has exited. */
	running(): boolean;
	/** Its stdout and stderr so far (the last 256 KB). */
	output(): string;
}

export interface ClusterOptions {
	/** The cluster's own files: the logs and the nats-server configuration go under it. */
	root: string;
	/** The stores' folder, shared by every role (DATA_DIR); `root` unless given. */
	dataDir?: string;
	/** Signer processes; 3 by default. */
	signers?: number;
	/** Environment for every role on top of this process's (RECORDS, KEYS, BATCH_SIZE, LEASE_TTL_MS, ...). */
	env?: Record<string, string | undefined>;
	/** Join this NATS instead of starting a nats-server. */
	transporter?: string;
	/** The NATS to start (unless `transporter`): servers routed into a cluster, TLS, where each runs. */
	nats?: Omit<NatsClusterOptions, "folder" | "namespace" | "keyringNodes" | "writtenBy">;
	/** Words put before a role's command, e.g. `["ip", "netns", "exec", "h-keyring"]`. */
	rolePrefix?: (kind: RoleKind, name: string) => string[];
	namespace?: string;
	/** LOG_LEVEL of the role processes (default: the env's, else "info"). */
	logLevel?: string;
	/** Log level of the client node (`connect()`); "warn" by default. */
	clientLogLevel?: string | false;
	/** Every line a role prints, as it comes (the CLI shows warnings with it). */
	onLine?: (role: RoleProcess, line: string) => void;
}

/** How a run ended, from its run.completed event or, if that was missed, from the stored run. */
export interface RunEnding {
	status: RunView["status"];
	error: string | null;
	report: RunReport | null;
}

export class ClusterError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "ClusterError";
	}
}

const OUTPUT_LIMIT = 256 * 1024;

/** The project folder (with package.json): the launcher runs from src/ under jest and from dist/. */
export function projectRoot(from = __dirname): string {
	for (let dir = from; ; dir = path.dirname(dir)) {
		if (fs.existsSync(path.join(dir, "package.json"))) return dir;
		if (path.dirname(dir) === dir) throw new ClusterError(`no package.json above ${from}`);
	}
}

/** Polls `check` until it returns a value other than false/undefined/null, or throws on timeout. */
export async function until<T>(
	what: string,
	timeoutMs: number,
	check: () => T | false | null | undefined | Promise<T | false | null | undefined>,
	intervalMs = 100,
): Promise<T> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const value = await check();
		if (value !== false && value !== null && value !== undefined) return value;
		if (Date.now() > deadline)
			throw new ClusterError(`timed out after ${timeoutMs} ms waiting for ${what}`);
		await sleep(intervalMs);
	}
}

export class Cluster {
	private readonly roles = new Map<string, RoleProcess>();
	private client: ServiceBroker | null = null;
	private connecting: Promise<ServiceBroker> | null = null;
	private readonly completions: Array<(event: RunCompletedEvent) => void> = [];
	private stopped = false;
	readonly root: string;
	readonly dataDir: string;
	readonly logDir: string;
	readonly namespace: string;
	readonly projectDir = projectRoot();

	private constructor(
		private readonly options: ClusterOptions,
		readonly transporter: string,
		/** The nats-servers this launcher started (null when it joined `transporter`). */
		readonly local: LocalNats | null,
	) {
		this.nats = local?.server ?? null;
		this.natsPasswords = local?.passwords ?? null;
		this.natsEnv = local?.env() ?? {};
		this.root = path.resolve(options.root);
		this.dataDir = path.resolve(options.dataDir ?? options.root);
		this.logDir = path.join(this.root, "logs");
		this.namespace = options.namespace ?? "signing";
		this.maxPayload = local ? NATS_MAX_PAYLOAD : NATS_DEFAULT_MAX_PAYLOAD;
	}

	/** The first nats-server this launcher started, or null. */
	readonly nats: NatsServer | null;
	/** Each NATS role's password, when this launcher started nats-server (else the given TRANSPORTER is used as is). */
	private readonly natsPasswords: Record<NatsRole, string> | null;
	/** NATS_CA_FILE, NATS_CERT_FILE, NATS_KEY_FILE for every node, when its NATS runs TLS. */
	readonly natsEnv: Record<string, string>;

	/** TRANSPORTER for a NATS role: its own user on the launcher's nats-server(s). */
	natsUrl(role: NatsRole): string {
		return this.natsPasswords
			? roleUrl(this.transporter, role, this.natsPasswords[role])
			: this.transporter;
	}

	/** The largest message the cluster's NATS takes (assumed the default when not ours). */
	readonly maxPayload: number;

	/**
	 * Starts nats-server (unless `transporter` is given), the keyring, the main node and the
	 * signers, without waiting for them: `ready()` does that.
	 */
	static async start(options: ClusterOptions): Promise<Cluster> {
		const projectDir = projectRoot();
		for (const file of ["dist/moleculer.config.js", "dist/services/keyring.service.js"])
			if (!fs.existsSync(path.join(projectDir, file)))
				throw new ClusterError(`${file} is missing: build first (npm run build)`);
		// The logs say what the roles did, with their DATA_DIR: 0700 and 0600 like the stores.
		ensurePrivateDir(path.join(options.root, "logs"));
		// Unless joining one: a nats-server with one user per role, fresh passwords per cluster.
		const local = options.transporter
			? null
			: await startNatsCluster({
					...options.nats,
					folder: options.root,
					namespace: options.namespace ?? "signing",
					keyringNodes: ["keyring"],
					writtenBy: "the cluster launcher",
					// Its own process group: a Ctrl-C in the terminal reaches the nodes, which stop
					// and say goodbye on the bus, and `stop()` ends the server after them. In the
					// terminal's group it died at once and every node logged "DISCONNECT" as an error.
					detached: true,
				});
		const cluster = new Cluster(options, options.transporter ?? local!.urls, local);
		try {
			await cluster.startRole("keyring", "keyring");
			await cluster.startRole("main", "main");
			for (let i = 1; i <= (options.signers ?? 3); i++)
				await cluster.startRole("signer", `signer-${i}`);
		} catch (err) {
			await cluster.stop();
			throw err;
		}
		return cluster;
	}

	// ------------------------------------------------------------ roles

	role(name: string): RoleProcess {
		const role = this.roles.get(name);
		if (!role)
			throw new ClusterError(`no role ${name} (have ${[...this.roles.keys()].join(", ")})`);
		return role;
	}

	/** Every role, current generation, in start order. */
	list(): RoleProcess[] {
		return [...this.roles.values()];
	}

	signers(): RoleProcess[] {
		return this.list().filter((role) => role.kind === "signer");
	}

	/** The moleculer-runner command line of a role, as README documents it. */
	command(): { file: string; args: string[] } {
		const runner = path.join(
			path.dirname(require.resolve("moleculer")),
			"bin",
			"moleculer-runner.js",
		);
		return {
			file: process.execPath,
			args: [
				"--disable-warning=DEP0174",
				"--disable-warning=ExperimentalWarning",
				runner,
				"--config",
				path.join(this.projectDir, "dist", "moleculer.config.js"),
			],
		};
	}

	/**
	 * Starts a process of `kind` named `name` (a new generation if that name ran before, on the
	 * shared DATA_DIR); `env` adds to the cluster's (e.g. a second keyring on a DATA_DIR of its own).
	 */
	async startRole(
		kind: RoleKind,
		name: string,
		env: Record<string, string | undefined> = {},
	): Promise<RoleProcess> {
		if (this.stopped) throw new ClusterError("the cluster is stopped");
		const previous = this.roles.get(name);
		if (previous?.running())
			throw new ClusterError(`${name} is still running (pid ${previous.pid})`);
		const generation = (previous?.generation ?? 0) + 1;
		const nodeID = generation === 1 ? name : `${name}.g${generation}`;
		const dataDir = env.DATA_DIR ?? this.dataDir;
		// Ports the OS picks as each process binds, so no other process can take them first; the
		// metrics port is read from the line the process prints.
		const metricsPort = 0;
		const healthPort = 0;
		// The signers share this machine's cores: more signing threads than cores only adds switching.
		const signingThreads = String(
			Math.max(1, Math.floor(os.availableParallelism() / (this.options.signers ?? 3))),
		);
		const childEnv: NodeJS.ProcessEnv = {
			...process.env,
			...this.options.env,
			LOG_LEVEL:
				this.options.logLevel ??
				this.options.env?.LOG_LEVEL ??
				process.env.LOG_LEVEL ??
				"info",
			...(kind === "signer" &&
			!process.env.SIGNING_THREADS &&
			!this.options.env?.SIGNING_THREADS
				? { SIGNING_THREADS: signingThreads }
				: {}),
			...this.natsEnv,
			...env,
			SERVICEDIR: path.join(this.projectDir, "dist", "services"),
			SERVICES: ROLE_SERVICES[kind].join(","),
			TRANSPORTER: env.TRANSPORTER ?? this.natsUrl(NATS_ROLE_OF[kind]),
			// A role may be started in another namespace: a second cluster on the same store.
			NAMESPACE: env.NAMESPACE ?? this.namespace,
			NODE_ID: nodeID,
			DATA_DIR: dataDir,
			METRICS_PORT: String(metricsPort),
			HEALTH_PORT: String(healthPort),
		};
		const command = this.command();
		const [file, ...args] = [
			...(this.options.rolePrefix?.(kind, name) ?? []),
			command.file,
			...command.args,
		];
		const child = spawn(file, args, {
			cwd: this.projectDir,
			env: childEnv,
			stdio: ["ignore", "pipe", "pipe"],
		});
		killOnExit(child);
		const logFile = path.join(this.logDir, `${name}.log`);
		const log = privateAppendStream(logFile);
		log.write(
			`--- ${new Date().toISOString()} ${nodeID} (pid ${child.pid}) SERVICES=${childEnv.SERVICES} DATA_DIR=${dataDir}\n`,
		);
		let output = "";
		let exited = false;
		const role: RoleProcess = {
			name,
			kind,
			generation,
			nodeID,
			dataDir,
			metricsPort: null,
			logFile,
			child,
			pid: child.pid ?? -1,
			exited: new Promise<RoleExit>((resolve) =>
				child.once("exit", (code, signal) => {
					exited = true;
					resolve({ code, signal });
				}),
			),
			running: () => !exited,
			output: () => output,
		};
		let partial = "";
		const onData = (chunk: Buffer) => {
			const text = chunk.toString("utf8");
			output = (output + text).slice(-OUTPUT_LIMIT);
			log.write(text);
			role.metricsPort ??=
				Number(/Prometheus metrics on http:\/\/[^:\s]+:(\d+)\//.exec(text)?.[1]) || null;
			if (!this.options.onLine) return;
			const lines = (partial + text).split("\n");
			partial = lines.pop() ?? "";
			for (const line of lines) if (line.trim()) this.options.onLine(role, line);
		};
		child.stdout!.on("data", onData);
		child.stderr!.on("data", onData);
		void role.exited.then(({ code, signal }) =>
			log.end(`--- exited: ${signal ?? `code ${code}`}\n`),
		);
		await new Promise<void>((resolve, reject) => {
			child.once("spawn", () => resolve());
			child.once("error", (err) =>
				reject(new ClusterError(`cannot start ${name}: ${err.message}`)),
			);
		});
		this.roles.set(name, role);
		return role;
	}

	/** Sends `signal` (SIGKILL by default, like a crash) and waits for the process to end. */
	async kill(name: string, signal: NodeJS.Signals = "SIGKILL"): Promise<RoleExit> {
		const role = this.role(name);
		if (role.running()) {
			role.child.kill(signal);
			// A stopped process acts on SIGTERM only once continued.
			if (signal !== "SIGKILL" && signal !== "SIGSTOP") role.child.kill("SIGCONT");
		}
		return role.exited;
	}

	/** SIGSTOP: the whole process freezes (all its threads), as a stalled VM or a debugger would. */
	pause(name: string): void {
		this.role(name).child.kill("SIGSTOP");
	}

	resume(name: string): void {
		this.role(name).child.kill("SIGCONT");
	}

	/** Starts role `name` again (same kind, same DATA_DIR) once its process has ended. */
	async restart(
		name: string,
		env: Record<string, string | undefined> = {},
	): Promise<RoleProcess> {
		const role = this.role(name);
		if (role.running()) await this.kill(name);
		return this.startRole(role.kind, name, env);
	}

	// ------------------------------------------------------------ the client node

	/** A client node on the cluster's NATS (no services of its own but a watcher): calls, audit, events. */
	connect(): Promise<ServiceBroker> {
		this.connecting ??= this.startClient().catch((err) => {
			this.connecting = null;
			throw err;
		});
		return this.connecting;
	}

	private async startClient(): Promise<ServiceBroker> {
		const config = loadConfig({
			...this.natsEnv,
			TRANSPORTER: this.natsUrl("ops"),
			NAMESPACE: this.namespace,
			DATA_DIR: "",
		});
		const broker = new ServiceBroker({
			...brokerOptions(config, {
				nodeID: `client-${os.hostname()}-${process.pid}-${Date.now().toString(36)}`,
				logLevel: this.options.clientLogLevel ?? "warn",
			}),
			// The process running the cluster handles its own signals, and stopping the client
			// must not wait for a call that a dead node will never answer.
			skipProcessEventRegistration: true,
			tracking: { enabled: false },
		});
		const name = `cluster-watch-${process.pid}-${Date.now().toString(36)}`;
		broker.createService({
			name,
			events: {
				[Events.runCompleted]: {
					// Its own group: run.completed is a balanced event, and no other client may take it.
					// Under `ops.`: the only balanced events the ops user may subscribe to.
					group: opsEventGroup(name),
					handler: (ctx: { params: RunCompletedEvent }) => {
						for (const waiter of this.completions.splice(0)) waiter(ctx.params);
					},
				},
			},
		});
		await broker.start();
		this.client = broker;
		return broker;
	}

	/** True when the role's current node is up and offers every service of its role. */
	offers(role: RoleProcess): boolean {
		const broker = this.client;
		if (!broker || !role.running()) return false;
		const node = broker.registry.nodes.get(role.nodeID);
		if (!node?.available) return false;
		const offered = new Set(
			broker.registry
				.getServiceList({ onlyAvailable: true })
				.filter((s) => s.nodeID === role.nodeID)
				.map((s) => s.name),
		);
		return ROLE_SERVICES[role.kind].every((service) => offered.has(service));
	}

	/**
	 * Waits until every running role's node offers its services (the main node only after
	 * seeding, the keyring only after its election). A role that exits meanwhile is an error
	 * quoting the end of its output.
	 */
	async ready(timeoutMs = 120_000, names?: string[]): Promise<void> {
		await this.connect();
		// Every role by default: one that already exited (a port taken, a bad setting) is an error, not skipped.
		const waited = () => (names ? names.map((name) => this.role(name)) : this.list());
		await until(
			"every role to offer its services",
			timeoutMs,
			() => {
				for (const role of waited())
					if (!role.running())
						throw new ClusterError(
							`${role.name} (${role.nodeID}) exited while starting:\n${tail(role.output())}`,
						);
				return waited().every((role) => this.offers(role));
			},
			100,
		);
	}

	/** Waits until the client no longer sees `nodeID` (a killed node's heartbeats stopped). */
	async gone(nodeID: string, timeoutMs = 30_000): Promise<void> {
		const broker = await this.connect();
		await until(
			`node ${nodeID} to be seen as gone`,
			timeoutMs,
			() => !broker.registry.nodes.get(nodeID)?.available,
			100,
		);
	}

	// ------------------------------------------------------------ runs

	/** Calls `batcher.start` (or takes over the active run) and returns the run. */
	async startRun(batchSize?: number): Promise<RunView> {
		const broker = await this.connect();
		return call(broker, Actions.batcher.start, batchSize === undefined ? {} : { batchSize });
	}

	/**
	 * Resolves when run `runId` ends: on its run.completed event, or, should that be missed
	 * (the batcher node restarted, NATS was down), when `batcher.get` says it is no longer running.
	 */
	async runEnded(runId: string, timeoutMs = 600_000): Promise<RunEnding> {
		const broker = await this.connect();
		let ended: RunEnding | null = null;
		const listen = () =>
			this.completions.push((event) => {
				if (event.report?.runId === runId)
					ended = { status: event.status, error: event.error, report: event.report };
				else if (!ended) listen();
			});
		listen();
		let lastPoll = 0;
		return until(
			`run ${runId} to end`,
			timeoutMs,
			async () => {
				if (ended) return ended;
				if (Date.now() - lastPoll < 1_000) return null;
				lastPoll = Date.now();
				const run = await call(
					broker,
					Actions.batcher.get,
					{ runId },
					{ timeout: 5_000 },
				).catch(() => null);
				return run && run.status !== "running"
					? { status: run.status, error: run.error ?? null, report: run.report ?? null }
					: null;
			},
			50,
		);
	}

	// ------------------------------------------------------------ stop

	/**
	 * SIGTERM in dependency order (the main node first so no batch starts, then the signers,
	 * which finish or hand back their batches, then the keyring), SIGKILL after `graceMs`;
	 * then the client node and the nats-server this cluster started.
	 */
	async stop(graceMs = 30_000): Promise<void> {
		this.stopped = true;
		const terminate = async (roles: RoleProcess[]) => {
			await Promise.all(
				roles
					.filter((role) => role.running())
					.map(async (role) => {
						role.child.kill("SIGCONT");
						role.child.kill("SIGTERM");
						const timer = setTimeout(() => role.child.kill("SIGKILL"), graceMs);
						await role.exited;
						clearTimeout(timer);
					}),
			);
		};
		// The client first: nothing waits on it, and it must not outlive the nats-server reconnecting.
		const client = this.client ?? (await this.connecting?.catch(() => null)) ?? null;
		if (client) {
			this.client = null;
			this.connecting = null;
			await Promise.race([client.stop(), systemClock.sleep(5_000)]);
		}
		const all = this.list();
		await terminate(all.filter((role) => role.kind === "main"));
		await terminate(all.filter((role) => role.kind === "signer"));
		await terminate(all.filter((role) => role.kind === "keyring"));
		await terminate(all);
		await this.local?.stop();
	}
}

export function tail(text: string, lines = 30): string {
	return text.trimEnd().split("\n").slice(-lines).join("\n");
}
