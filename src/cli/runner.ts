/**
 * What `moleculer.config` gives moleculer-runner, beyond the broker options every node gets:
 *
 * - `npm run serve` (every service in one process on the embedded store, no TRANSPORTER)
 *   also starts a nats-server on 127.0.0.1 and writes `DATA_DIR/serve.json` (mode 0600) once
 *   it runs, so `npm run repl` in another terminal can join it. Without nats-server installed,
 *   or with SERVE_NATS=off, it runs as before, alone.
 * - `npm run dev` (`--hot --repl`) is served the same way, with its REPL in the terminal.
 * - `npm run repl` (the runner with `--repl`) joins a running `npm run serve` on the same
 *   DATA_DIR over that NATS, as the ops user and with no services of its own; with
 *   TRANSPORTER set and no SERVICES it joins that cluster the same way. Otherwise it runs every
 *   service itself, as `npm run serve` would.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { BrokerOptions, Middleware, ServiceBroker } from "moleculer";
import { brokerOptions } from "../broker/broker-options";
import { assertNatsReachable } from "../broker/nats-reach";
import { redactUrl } from "../nats-tls";
import { startLocalNats, type LocalNats } from "../cluster/local-nats";
import { findNatsServer } from "../cluster/nats-server";
import { useAppConfig, type AppConfig } from "../config";
import { processAlive } from "../process-alive";

/** What `npm run serve` writes for the REPLs that join it. */
export interface ServeFile {
	pid: number;
	nodeID: string;
	namespace: string;
	/** TRANSPORTER for a REPL: the ops user (no lease actions). */
	nats: string;
	/** The nats-server's pid: a later serve stops it if this serve died without doing so. */
	natsPid: number | null;
	/** The gateway's address, when this node runs it. */
	api: string | null;
	startedAt: string;
}

export const SERVE_FILE = "serve.json";

/** moleculer-runner's `this` in a config function: its parsed flags. */
export interface RunnerContext {
	flags?: { repl?: boolean; hot?: boolean };
}

const say = (line: string) => process.stderr.write(`${line}\n`);

function readServeFile(dataDir: string): ServeFile | null {
	try {
		return JSON.parse(fs.readFileSync(path.join(dataDir, SERVE_FILE), "utf8")) as ServeFile;
	} catch {
		return null;
	}
}

/** The serve.json of a `npm run serve` that still runs on `dataDir`, or null. */
export function runningServe(dataDir: string): ServeFile | null {
	const serve = readServeFile(dataDir);
	return serve && processAlive(serve.pid) ? serve : null;
}

/** Broker options for this moleculer-runner process (see the file comment). */
export async function runnerBrokerOptions(
	config: AppConfig,
	runner: RunnerContext | undefined,
	env: NodeJS.ProcessEnv = process.env,
): Promise<BrokerOptions> {
	const allServices = !env.SERVICES;
	// moleculer-runner then sets every option whose upper-cased name is in the environment:
	// TRANSPORTER would replace the options built from it (a tls:// list, the certificates).
	delete env.TRANSPORTER;
	// `npm run dev` (--hot --repl) runs the services like serve; a plain --repl is a REPL that joins.
	if (runner?.flags?.repl && !runner.flags.hot) {
		if (!allServices) return brokerOptions(config, { prometheus: true, health: true });
		if (config.transporter) {
			await assertNatsReachable(
				config.transporter,
				"or leave TRANSPORTER out to join an npm run serve on this DATA_DIR",
			);
			return joinOnly(
				config,
				`Joining the cluster at ${redactUrl(config.transporter)} (namespace ${config.namespace}) with no services of its own`,
				env,
			);
		}
		const serve = config.dataDir ? runningServe(config.dataDir) : null;
		if (serve)
			return joinOnly(
				{ ...config, transporter: serve.nats, namespace: serve.namespace },
				`Joining npm run serve (pid ${serve.pid}${serve.api ? `, API ${serve.api}` : ""}) over NATS at ${redactUrl(serve.nats)}, with no services of its own`,
				env,
			);
		return brokerOptions(config, { prometheus: true, health: true });
	}
	if (!allServices || config.transporter || !config.dataDir || !config.serveNats)
		return brokerOptions(config, { prometheus: true, health: true });
	return serveWithNats(config);
}

/** A REPL node: the given transport, no services loaded, no listeners. */
function joinOnly(config: AppConfig, line: string, env: NodeJS.ProcessEnv): BrokerOptions {
	// The runner loads every service of SERVICEDIR when it is set: a REPL that joins loads none.
	delete env.SERVICEDIR;
	useAppConfig(config);
	say(line);
	return brokerOptions(config);
}

/** All services plus a local nats-server, with serve.json written once they run and removed at the end. */
async function serveWithNats(config: AppConfig): Promise<BrokerOptions> {
	try {
		findNatsServer();
	} catch {
		say(
			"nats-server is not installed, so no other process can join this one (npm run repl would start a second system): apt-get install -y nats-server",
		);
		return brokerOptions(config, { prometheus: true, health: true });
	}
	stopOrphanedNats(config.dataDir);
	const nodeID = config.nodeId ?? `${os.hostname()}-${process.pid}`;
	// Detached: Ctrl-C stops this broker first, which then stops the server.
	const nats = await startLocalNats(
		path.join(config.dataDir, "serve"),
		config.namespace,
		[nodeID],
		"npm run serve",
		true,
	);
	const served: AppConfig = { ...config, nodeId: nodeID, transporter: nats.url("keyring") };
	useAppConfig(served);
	const options = brokerOptions(served, { prometheus: true, health: true });
	options.middlewares = [...(options.middlewares ?? []), serveFileMiddleware(served, nats)];
	return options;
}

/** The nats-server of a serve on `dataDir` that was killed (kill -9) before it could stop it. */
function stopOrphanedNats(dataDir: string): void {
	const serve = readServeFile(dataDir);
	if (!serve || processAlive(serve.pid)) return;
	try {
		const ours =
			serve.natsPid &&
			fs
				.readFileSync(`/proc/${serve.natsPid}/cmdline`, "utf8")
				.includes(path.join(dataDir, "serve", "nats-server.conf"));
		if (ours) process.kill(serve.natsPid!, "SIGTERM");
	} catch {
		// gone already
	}
	fs.rmSync(path.join(dataDir, SERVE_FILE), { force: true });
}

function serveFileMiddleware(config: AppConfig, nats: LocalNats): Middleware {
	const file = path.join(config.dataDir, SERVE_FILE);
	let written = false;
	return {
		name: "ServeFile",
		async started(broker: ServiceBroker) {
			const api = broker.getLocalService("api") as unknown as
				{ server?: { address(): { port: number } | string | null } } | undefined;
			const address = api?.server?.address();
			const serve: ServeFile = {
				pid: process.pid,
				nodeID: broker.nodeID,
				namespace: config.namespace,
				nats: nats.url("ops"),
				natsPid: nats.server.pid,
				api:
					address && typeof address === "object"
						? `http://127.0.0.1:${address.port}`
						: null,
				startedAt: new Date().toISOString(),
			};
			fs.writeFileSync(file, `${JSON.stringify(serve, null, 2)}\n`, { mode: 0o600 });
			written = true;
			broker.logger.info(
				`A REPL can join this process: npm run repl (DATA_DIR=${config.dataDir}); NATS at ${nats.server.url}`,
			);
		},
		// First thing on the way down: no REPL should try to join from now on.
		async stopping() {
			if (written) fs.rmSync(file, { force: true });
		},
		async stopped() {
			await nats.server.stop();
		},
	} as Middleware;
}
