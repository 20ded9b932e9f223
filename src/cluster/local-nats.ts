/**
 * A nats-server on 127.0.0.1 for processes of this machine: `npm run cluster` and
 * `npm run serve` (so that `npm run repl` can join it). One NATS user per role with least
 * privilege (src/broker/nats-permissions.ts), fresh random passwords, and the configuration file
 * (mode 0600) in the caller's folder.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { authorizationBlock, NATS_ROLES, roleUrl, type NatsRole } from "../broker/nats-permissions";
import { startNatsServer, type NatsServer } from "./nats-server";

/**
 * The max_payload of a local nats-server: a `signer.signBatch` of the largest batch
 * (100,000 record ids, ~1.6 MB) and the batch documents the audit pages must fit.
 */
export const NATS_MAX_PAYLOAD = 8 * 1024 * 1024;

export interface LocalNats {
	readonly server: NatsServer;
	readonly passwords: Record<NatsRole, string>;
	/** TRANSPORTER for a role: its own user on this server. */
	url(role: NatsRole): string;
}

/**
 * Starts nats-server with a user per role; `keyringNodes` are the node ids the keyring runs
 * under (their node-addressed subjects are the keyring user's only).
 */
export async function startLocalNats(
	folder: string,
	namespace: string,
	keyringNodes: string[],
	writtenBy: string,
	detached = false,
): Promise<LocalNats> {
	const passwords = Object.fromEntries(
		NATS_ROLES.map((role) => [role, randomBytes(18).toString("base64url")]),
	) as Record<NatsRole, string>;
	const quoted = Object.fromEntries(
		NATS_ROLES.map((role) => [role, JSON.stringify(passwords[role])]),
	) as Record<NatsRole, string>;
	const config = path.join(folder, "nats-server.conf");
	fs.mkdirSync(folder, { recursive: true, mode: 0o700 });
	fs.writeFileSync(
		config,
		`# written by ${writtenBy}\nmax_payload: ${NATS_MAX_PAYLOAD}\n${authorizationBlock(namespace, keyringNodes, quoted)}`,
		{ mode: 0o600 },
	);
	const server = await startNatsServer({ args: ["-c", config], detached });
	return { server, passwords, url: (role) => roleUrl(server.url, role, passwords[role]) };
}
