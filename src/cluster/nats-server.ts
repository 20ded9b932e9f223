/**
 * A real `nats-server` for `npm run cluster` and for tests that go over the transport
 * (docs/contributing.md: tests use a real nats-server, never a mock). Debian ships it:
 * `apt-get install -y nats-server`.
 *
 *   const nats = await startNatsServer();
 *   // ... TRANSPORTER=nats.url ...
 *   await nats.restart();   // same port: clients reconnect
 *   await nats.stop();      // waits for the process to exit
 *
 * Every server started here is killed when the process exits, so a failed or interrupted
 * test (or cluster) leaves no orphan behind.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { sleep } from "../clock";
import { UserError } from "../user-error";
import { killOnExit } from "./children";

export interface NatsServerOptions {
	/** Client port; 0 (default): nats-server picks a free one and reports it. `restart()` keeps whichever port was used. */
	port?: number;
	/** Also open the HTTP monitoring endpoint (`/healthz`, `/varz`) on a free port. */
	monitor?: boolean;
	/** Extra nats-server arguments, e.g. `["--user", "u", "--pass", "p"]`. */
	args?: string[];
	/** The address it listens on (clients, monitoring); 127.0.0.1 by default. */
	host?: string;
	/** Words put before the binary, e.g. `["ip", "netns", "exec", "h1"]` (a network namespace). */
	prefix?: string[];
	/** How long to wait for the server to accept connections. */
	readyTimeoutMs?: number;
	/**
	 * Its own process group: a Ctrl-C in the terminal then reaches only the caller, which
	 * stops its broker before this server (still killed when the caller exits).
	 */
	detached?: boolean;
}

export interface NatsServer {
	/** `nats://127.0.0.1:<port>`, what TRANSPORTER takes. */
	readonly url: string;
	readonly port: number;
	/** HTTP monitoring port when `monitor` was asked for, else null. */
	readonly monitorPort: number | null;
	/** The route port of a `cluster {}` block, as it reported it; null without one. */
	readonly clusterPort: number | null;
	/** The address it listens on. */
	readonly host: string;
	/** Pid of the current server process, null while stopped. */
	readonly pid: number | null;
	/** SIGTERM (SIGKILL after a grace period) and wait for the process to exit. Idempotent. */
	stop(): Promise<void>;
	/** SIGKILL, as a crash would, and wait for the exit. */
	kill(): Promise<void>;
	/** Stop (if running) and start again on the same ports. */
	restart(): Promise<void>;
	/** Start again after `stop()` or `kill()`, on the same ports (nothing if running). */
	start(): Promise<void>;
	/** Output so far, for assertion messages. */
	log(): string;
}

const DEBIAN_PACKAGE = "nats-server";
const FALLBACK_PATHS = [
	"/usr/sbin/nats-server",
	"/usr/bin/nats-server",
	"/usr/local/bin/nats-server",
];
const STOP_GRACE_MS = 5_000;

/** Finds the binary: `NATS_SERVER_BIN`, then PATH, then Debian's location. */
export function findNatsServer(): string {
	const candidates = [
		process.env.NATS_SERVER_BIN,
		...(process.env.PATH ?? "")
			.split(path.delimiter)
			.filter(Boolean)
			.map((dir) => path.join(dir, "nats-server")),
		...FALLBACK_PATHS,
	].filter((candidate): candidate is string => Boolean(candidate));
	for (const candidate of candidates) {
		try {
			fs.accessSync(candidate, fs.constants.X_OK);
			if (fs.statSync(candidate).isFile()) return candidate;
		} catch {
			// not this one
		}
	}
	throw new UserError(
		`nats-server not found (looked at NATS_SERVER_BIN, PATH and ${FALLBACK_PATHS.join(", ")}). ` +
			`Install the Debian package: apt-get install -y ${DEBIAN_PACKAGE}`,
	);
}

/** Ports freePort gave out in this process: the OS may offer a port it just took back again. */
const givenOut = new Set<number>();

/**
 * A port that was free a moment ago (the OS picks it), and not one this function gave out
 * before in this process: asked for three in a row, the OS once offered the same port twice, and
 * a node's health and metrics servers then fought over it. Another process may still take it
 * before it is bound: only for tests that must know a port before starting what binds it.
 */
export async function freePort(): Promise<number> {
	for (;;) {
		const port = await probePort();
		if (givenOut.has(port)) continue;
		givenOut.add(port);
		return port;
	}
}

/** A port the OS picks for a listener opened and closed at once. */
function probePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const probe = net.createServer();
		probe.unref();
		probe.once("error", reject);
		probe.listen(0, "127.0.0.1", () => {
			const { port } = probe.address() as net.AddressInfo;
			probe.close(() => resolve(port));
		});
	});
}

/** Resolves once a client can connect and reads the server's INFO line. */
async function waitUntilAccepting(
	host: string,
	port: number,
	child: ChildProcess,
	timeoutMs: number,
	output: () => string,
): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		if (child.exitCode !== null || child.signalCode !== null)
			throw new Error(
				`nats-server exited (${child.exitCode ?? child.signalCode}) before accepting connections:\n${output()}`,
			);
		if (await readsInfo(host, port)) return;
		if (Date.now() > deadline)
			throw new Error(
				`nats-server did not accept connections on port ${port} within ${timeoutMs} ms:\n${output()}`,
			);
		await sleep(50);
	}
}

function readsInfo(host: string, port: number): Promise<boolean> {
	return new Promise((resolve) => {
		const socket = net.connect({ port, host });
		let received = "";
		const done = (ok: boolean) => {
			socket.destroy();
			resolve(ok);
		};
		socket.setTimeout(1_000, () => done(false));
		socket.on("data", (chunk) => {
			received += chunk.toString("utf8");
			if (received.startsWith("INFO ")) done(true);
		});
		socket.on("error", () => done(false));
		socket.on("close", () => done(received.startsWith("INFO ")));
	});
}

function waitForExit(child: ChildProcess): Promise<void> {
	if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
	return new Promise((resolve) => child.once("exit", () => resolve()));
}

/**
 * The ports a nats-server started with `-p -1` (and `-m -1`) bound: it writes them to a
 * `.ports` file once it listens, so nothing is probed free first and taken by another.
 */
async function portsFromFile(
	dir: string,
	child: ChildProcess,
	timeoutMs: number,
	output: () => string,
): Promise<{ port: number; monitorPort: number | null; clusterPort: number | null }> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		if (child.exitCode !== null || child.signalCode !== null)
			throw new Error(
				`nats-server exited (${child.exitCode ?? child.signalCode}) before listening:\n${output()}`,
			);
		const file = fs.readdirSync(dir).find((name) => name.endsWith(".ports"));
		if (file) {
			try {
				const ports = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8")) as {
					nats?: string[];
					monitoring?: string[];
					cluster?: string[];
				};
				const port = Number(new URL(ports.nats![0]).port);
				return {
					port,
					monitorPort: ports.monitoring?.length
						? Number(new URL(ports.monitoring[0]).port)
						: null,
					clusterPort: ports.cluster?.length
						? Number(new URL(ports.cluster[0]).port)
						: null,
				};
			} catch {
				// written but not complete yet
			}
		}
		if (Date.now() > deadline)
			throw new Error(
				`nats-server did not report its ports within ${timeoutMs} ms:\n${output()}`,
			);
		await sleep(20);
	}
}

export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
	const binary = findNatsServer();
	// 0: the server's own choice (-1 to nats-server), learnt from its ports file; kept for restarts.
	let port = options.port ?? 0;
	let monitorPort: number | null = options.monitor ? 0 : null;
	let clusterPort: number | null = null;
	const host = options.host ?? "127.0.0.1";
	const readyTimeoutMs = options.readyTimeoutMs ?? 10_000;
	let child: ChildProcess | null = null;
	let output = "";

	async function start(): Promise<void> {
		const portsDir =
			port === 0 || monitorPort === 0
				? fs.mkdtempSync(path.join(os.tmpdir(), "nats-ports-"))
				: null;
		const args = [
			"-a",
			host,
			"-p",
			String(port || -1),
			...(monitorPort !== null ? ["-m", String(monitorPort || -1)] : []),
			...(portsDir ? ["--ports_file_dir", portsDir] : []),
			...(options.args ?? []),
		];
		const [file, ...words] = [...(options.prefix ?? []), binary, ...args];
		const spawned = spawn(file, words, {
			stdio: ["ignore", "pipe", "pipe"],
			detached: options.detached ?? false,
		});
		child = spawned;
		killOnExit(spawned);
		const keep = (chunk: Buffer) => {
			// Bounded: a long crash test must not grow this without limit.
			output = (output + chunk.toString("utf8")).slice(-20_000);
		};
		spawned.stdout?.on("data", keep);
		spawned.stderr?.on("data", keep);
		const spawnError = new Promise<never>((_, reject) =>
			spawned.once("error", (err) =>
				reject(new Error(`Cannot start ${binary}: ${err.message}`)),
			),
		);
		try {
			if (portsDir)
				({ port, monitorPort, clusterPort } = await Promise.race([
					portsFromFile(portsDir, spawned, readyTimeoutMs, () => output),
					spawnError,
				]));
			await Promise.race([
				waitUntilAccepting(host, port, spawned, readyTimeoutMs, () => output),
				spawnError,
			]);
		} catch (err) {
			await stopChild("SIGKILL");
			throw err;
		} finally {
			if (portsDir) fs.rmSync(portsDir, { recursive: true, force: true });
		}
	}

	async function stopChild(signal: NodeJS.Signals): Promise<void> {
		const current = child;
		child = null;
		if (!current) return;
		const exited = waitForExit(current);
		current.kill(signal);
		const escalate = setTimeout(() => current.kill("SIGKILL"), STOP_GRACE_MS);
		await exited;
		clearTimeout(escalate);
	}

	await start();

	return {
		url: `nats://${host}:${port}`,
		port,
		host,
		monitorPort: monitorPort || null,
		get clusterPort() {
			return clusterPort;
		},
		get pid() {
			return child?.pid ?? null;
		},
		stop: () => stopChild("SIGTERM"),
		kill: () => stopChild("SIGKILL"),
		async restart() {
			await stopChild("SIGTERM");
			await start();
		},
		async start() {
			if (!child) await start();
		},
		log: () => output,
	};
}
