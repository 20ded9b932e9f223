/**
 * A NATS cluster of nats-servers on this machine (`npm run cluster -- --nats 3 [--tls]`, the
 * bench, the fault tests): each server with nats-server's own `cluster {}` block and routes to
 * the others, the same users per role (src/broker/nats-permissions.ts) and, with TLS, one CA and
 * certificates made by the openssl command (src/cluster/nats-certs.ts) for client connections
 * (clients must show a certificate of that CA) and routes alike.
 *
 * Route ports are the servers' own choice: the first server starts with none to join, each next
 * one routes to those already up, and once all run every configuration names every route, so a
 * server restarted later (same ports) rejoins the whole cluster.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { NATS_ROLES, authorizationBlock, roleUrl, type NatsRole } from "../broker/nats-permissions";
import { makeNatsCertificates, type NatsCertificates } from "./nats-certs";
import { startNatsServer, type NatsServer } from "./nats-server";

/**
 * The max_payload of a local nats-server: a `signer.signBatch` of the largest batch
 * (100,000 record ids, ~1.6 MB) and the batch documents the audit pages must fit.
 */
export const NATS_MAX_PAYLOAD = 8 * 1024 * 1024;

/** Where one server runs: its address, and what its command is run under (a network namespace). */
export interface NatsPlacement {
	host: string;
	prefix?: string[];
}

export interface NatsClusterOptions {
	/** Its configuration files (0600) go here, and the certificates under `tls/`. */
	folder: string;
	namespace: string;
	/** The node ids the keyring runs under (their node-addressed subjects are the keyring user's only). */
	keyringNodes: string[];
	/** Named in the first line of each configuration file. */
	writtenBy: string;
	/** nats-servers; 1 (no cluster block) by default. */
	size?: number;
	/** Clients and routes over TLS, with certificates made in `folder/tls`. */
	tls?: boolean;
	/** Where each server runs; all on 127.0.0.1 by default. */
	placement?: NatsPlacement[];
	/** Also open each server's HTTP monitoring port (`/connz`, `/routez`). */
	monitor?: boolean;
	/** Each server in its own process group (see NatsServerOptions). */
	detached?: boolean;
}

export interface LocalNats {
	/** The first server (the only one unless `size` > 1). */
	readonly server: NatsServer;
	readonly servers: NatsServer[];
	readonly passwords: Record<NatsRole, string>;
	/** The certificates, with `tls`. */
	readonly certs: NatsCertificates | null;
	/** Every server's URL, without credentials: `tls://127.0.0.1:4222,tls://...`. */
	readonly urls: string;
	/** TRANSPORTER for a role: its own user, on every server of the cluster. */
	url(role: NatsRole): string;
	/** What a node needs beside TRANSPORTER: NATS_CA_FILE, NATS_CERT_FILE, NATS_KEY_FILE with TLS. */
	env(): Record<string, string>;
	/** Stops every server. */
	stop(): Promise<void>;
}

const quote = JSON.stringify;

function tlsBlock(certs: NatsCertificates, indent: string): string {
	return [
		`${indent}tls {`,
		`${indent}  cert_file: ${quote(certs.serverCert)}`,
		`${indent}  key_file: ${quote(certs.serverKey)}`,
		`${indent}  ca_file: ${quote(certs.caFile)}`,
		// Every client and every route must show a certificate of this CA.
		`${indent}  verify: true`,
		`${indent}  timeout: 5`,
		`${indent}}`,
	].join("\n");
}

interface ServerSetup {
	index: number;
	name: string;
	file: string;
	placement: NatsPlacement;
}

/** Starts `size` routed nats-servers (one user per role, fresh passwords) and waits until each accepts clients. */
export async function startNatsCluster(options: NatsClusterOptions): Promise<LocalNats> {
	const size = options.size ?? 1;
	const passwords = Object.fromEntries(
		NATS_ROLES.map((role) => [role, randomBytes(18).toString("base64url")]),
	) as Record<NatsRole, string>;
	const quoted = Object.fromEntries(
		NATS_ROLES.map((role) => [role, quote(passwords[role])]),
	) as Record<NatsRole, string>;
	const routePassword = randomBytes(18).toString("base64url");
	fs.mkdirSync(options.folder, { recursive: true, mode: 0o700 });
	const placements = Array.from(
		{ length: size },
		(_, i) => options.placement?.[i] ?? { host: "127.0.0.1" },
	);
	const certs = options.tls
		? await makeNatsCertificates(
				path.join(options.folder, "tls"),
				placements.map((placement) => placement.host),
			)
		: null;
	const authorization = authorizationBlock(options.namespace, options.keyringNodes, quoted);
	const setups: ServerSetup[] = placements.map((placement, index) => ({
		index,
		name: `nats-${index + 1}`,
		file: path.join(
			options.folder,
			size === 1 ? "nats-server.conf" : `nats-server-${index + 1}.conf`,
		),
		placement,
	}));
	const routeUrl = (server: NatsServer) =>
		certs
			? `nats-route://${server.host}:${server.clusterPort}`
			: `nats-route://route:${routePassword}@${server.host}:${server.clusterPort}`;
	const write = (setup: ServerSetup, listenPort: number | null, routes: NatsServer[]) => {
		const cluster =
			size === 1
				? ""
				: [
						"cluster {",
						`  name: "record-signer"`,
						`  listen: ${quote(`${setup.placement.host}:${listenPort ?? -1}`)}`,
						certs
							? tlsBlock(certs, "  ")
							: `  authorization { user: "route", password: ${quote(routePassword)} }`,
						`  routes: [${routes.map((route) => quote(routeUrl(route))).join(", ")}]`,
						"}",
						"",
					].join("\n");
		fs.writeFileSync(
			setup.file,
			[
				`# written by ${options.writtenBy}`,
				`server_name: ${quote(setup.name)}`,
				`max_payload: ${NATS_MAX_PAYLOAD}`,
				certs ? tlsBlock(certs, "") : "",
				cluster,
				authorization,
			].join("\n"),
			{ mode: 0o600 },
		);
	};
	const servers: NatsServer[] = [];
	const stop = () => Promise.all(servers.map((server) => server.stop())).then(() => undefined);
	try {
		for (const setup of setups) {
			write(setup, null, [...servers]);
			servers.push(
				await startNatsServer({
					args: ["-c", setup.file],
					host: setup.placement.host,
					prefix: setup.placement.prefix,
					monitor: options.monitor,
					detached: options.detached,
				}),
			);
		}
		// Every server names every other one from now on: one restarted rejoins them all.
		if (size > 1)
			for (const setup of setups)
				write(
					setup,
					servers[setup.index].clusterPort,
					servers.filter((_, i) => i !== setup.index),
				);
	} catch (err) {
		await stop();
		throw err;
	}
	const scheme = certs ? "tls" : "nats";
	const list = servers.map((server) => `${scheme}://${server.host}:${server.port}`).join(",");
	return {
		server: servers[0],
		servers,
		passwords,
		certs,
		urls: list,
		url: (role) => roleUrl(list, role, passwords[role]),
		env: (): Record<string, string> =>
			certs
				? {
						NATS_CA_FILE: certs.caFile,
						NATS_CERT_FILE: certs.clientCert,
						NATS_KEY_FILE: certs.clientKey,
					}
				: {},
		stop,
	};
}
