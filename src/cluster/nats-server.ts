/**
 * A real `nats-server` for `npm run cluster` and for tests that go over the transport
 * (DESIGN: tests use a real nats-server, never a mock). Debian ships it:
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
import path from "node:path";
import { sleep } from "../clock";
import { killOnExit } from "./children";

export interface NatsServerOptions {
	/** Client port; 0 (default) picks a free one. `restart()` keeps whichever port was used. */
	port?: number;
	/** Also open the HTTP monitoring endpoint (`/healthz`, `/varz`) on a free port. */
	monitor?: boolean;
	/** Extra nats-server arguments, e.g. `["--user", "u", "--pass", "p"]`. */
	args?: string[];
	/** How long to wait for the server to accept connections. */
	readyTimeoutMs?: number;
}

export interface NatsServer {
	/** `nats://127.0.0.1:<port>`, what TRANSPORTER takes. */
	readonly url: string;
	readonly port: number;
	/** HTTP monitoring port when `monitor` was asked for, else null. */
	readonly monitorPort: number | null;
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
const FALLBACK_PATHS = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"];
const STOP_GRACE_MS = 5_000;

/** Finds the binary: `NATS_SERVER_BIN`, then PATH, then Debian's location. */
export function findNatsServer(): string {
	const candidates = [
		process.env.NATS_SERVER_BIN,
		...(process.env.PATH ?? "").split(path.delimiter).filter(Boolean).map(dir => path.join(dir, "nats-server")),
		...FALLBACK_PATHS
	].filter((candidate): candidate is string => Boolean(candidate));
	for (const candidate of candidates) {
		try {
			fs.accessSync(candidate, fs.constants.X_OK);
			if (fs.statSync(candidate).isFile()) return candidate;
		} catch {
			// not this one
		}
	}
	throw new Error(
		`nats-server not found (looked at NATS_SERVER_BIN, PATH and ${FALLBACK_PATHS.join(", ")}). ` +
		`Install the Debian package: apt-get install -y ${DEBIAN_PACKAGE}`
	);
}

/** A port that was free a moment ago (the OS picks it). */
export function freePort(): Promise<number> {
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
async function waitUntilAccepting(port: number, child: ChildProcess, timeoutMs: number, output: () => string): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		if (child.exitCode !== null || child.signalCode !== null)
			throw new Error(`nats-server exited (${child.exitCode ?? child.signalCode}) before accepting connections:\n${output()}`);
		if (await readsInfo(port)) return;
		if (Date.now() > deadline) throw new Error(`nats-server did not accept connections on port ${port} within ${timeoutMs} ms:\n${output()}`);
		await sleep(50);
	}
}

function readsInfo(port: number): Promise<boolean> {
	return new Promise(resolve => {
		const socket = net.connect({ port, host: "127.0.0.1" });
		let received = "";
		const done = (ok: boolean) => {
			socket.destroy();
			resolve(ok);
		};
		socket.setTimeout(1_000, () => done(false));
		socket.on("data", chunk => {
			received += chunk.toString("utf8");
			if (received.startsWith("INFO ")) done(true);
		});
		socket.on("error", () => done(false));
		socket.on("close", () => done(received.startsWith("INFO ")));
	});
}

function waitForExit(child: ChildProcess): Promise<void> {
	if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
	return new Promise(resolve => child.once("exit", () => resolve()));
}

export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
	const binary = findNatsServer();
	const port = options.port || await freePort();
	const monitorPort = options.monitor ? await freePort() : null;
	const readyTimeoutMs = options.readyTimeoutMs ?? 10_000;
	let child: ChildProcess | null = null;
	let output = "";

	async function start(): Promise<void> {
		const args = ["-a", "127.0.0.1", "-p", String(port), ...(monitorPort ? ["-m", String(monitorPort)] : []), ...(options.args ?? [])];
		const spawned = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
		child = spawned;
		killOnExit(spawned);
		const keep = (chunk: Buffer) => {
			// Bounded: a long crash test must not grow this without limit.
			output = (output + chunk.toString("utf8")).slice(-20_000);
		};
		spawned.stdout?.on("data", keep);
		spawned.stderr?.on("data", keep);
		const spawnError = new Promise<never>((_, reject) => spawned.once("error", err => reject(new Error(`Cannot start ${binary}: ${err.message}`))));
		try {
			await Promise.race([waitUntilAccepting(port, spawned, readyTimeoutMs, () => output), spawnError]);
		} catch (err) {
			await stopChild("SIGKILL");
			throw err;
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
		url: `nats://127.0.0.1:${port}`,
		port,
		monitorPort,
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
		log: () => output
	};
}
