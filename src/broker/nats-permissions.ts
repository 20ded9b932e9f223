/**
 * Least privilege on NATS: one user per role, with subject permissions where Moleculer's
 * subject layout allows them. With `disableBalancer` (src/broker/broker-options.ts) a call that names
 * no node goes to `<prefix>.REQB.<action>`, one subject per action, so the api and ops users
 * can be kept from the keyring's lease actions (`keyring.acquire`, `renew`, `release`) and
 * from the keyring node's own subject, and from serving as the keyring (subscribing to those).
 *
 * The ops user (the REPL, the audit and export commands, the compose one-shot, the cluster
 * launcher's client) serves nothing, so it may subscribe only to what a node with no services
 * of its own needs. A node connecting as ops runs under the node id `ops.<id>`
 * (`nodeIdFor`, applied by src/broker/broker-options.ts), which NATS can match (`ops.>`; a wildcard
 * covers whole tokens only, so `ops-*` could not be given). Ops may read:
 * - the broadcasts: `<prefix>.INFO`, `DISCOVER`, `HEARTBEAT`, `DISCONNECT`, `PING`;
 * - what is addressed to an ops node: `<prefix>.<EVENT|REQ|RES|DISCOVER|INFO|PING|PONG>.ops.>`
 *   (to its own, and to any other ops node's: they share the user and its rights);
 * - the balanced requests of `$node` (`<prefix>.REQB.$node.>`: the introspection service
 *   every Moleculer node runs and subscribes to, node lists and health, no data of the system);
 * - balanced events of its own listeners only, whose group must be named `ops.<...>`
 *   (`<prefix>.EVENTB.ops.>`, `opsEventGroup`; no service of the system has such a group);
 * - the reconnect notices of src/broker/lost-requests.ts (`<prefix>.X-RECONNECTED`: node ids).
 * It cannot read any service's balanced requests (`<prefix>.REQB.<action>`: batch payloads of
 * `signer.signBatch`, signatures of `records.storeSignatures`, ...), nor what is addressed to
 * a node that is not an ops node (requests and the replies to them: signatures in a signer's
 * reply to the batcher), nor any service's balanced events (`<prefix>.EVENTB.<group>.>`). A
 * subscription NATS refuses breaks Moleculer's connection (its handler is called with no
 * message), so an ops node must not subscribe to anything else: no services of its own, and an
 * event listener only in an `ops.` group. Ops still publishes wherever a node must (INFO,
 * HEARTBEAT, requests), except the lease actions and the keyring's node subjects.
 *
 * What this does not do: the signer and keyring users may publish anything under the prefix,
 * and NATS passwords are not identities. Who may obtain a key is decided by the keyring
 * (enrolled signer credentials, src/keyring/credential-gate.ts), whatever the transport lets
 * through. Messages are not encrypted by NATS unless TLS is configured (docs/deploy.md).
 */
import { mapTransporterUrls, natsEndpoints } from "../nats-tls";

export type NatsRole = "keyring" | "signer" | "api" | "ops";
export const NATS_ROLES: NatsRole[] = ["keyring", "signer", "api", "ops"];

/** Moleculer's subject prefix for a namespace. */
export function subjectPrefix(namespace: string): string {
	return namespace ? `MOL-${namespace}` : "MOL";
}

export const LEASE_ACTIONS = ["keyring.acquire", "keyring.renew", "keyring.release"] as const;

/** The first token of every ops node's id (and of its listeners' event groups). */
export const OPS_TOKEN = "ops";

/** The NATS user a TRANSPORTER URL names, or null. */
export function transporterUser(transporter: string | null | undefined): string | null {
	if (!transporter) return null;
	try {
		return natsEndpoints(transporter).user;
	} catch {
		return null;
	}
}

/** The node id a node runs under: as the ops user, `ops.<nodeID>` (unless it is so already). */
export function nodeIdFor(transporter: string | null | undefined, nodeID: string): string {
	if (transporterUser(transporter) !== OPS_TOKEN || nodeID.startsWith(`${OPS_TOKEN}.`))
		return nodeID;
	return `${OPS_TOKEN}.${nodeID}`;
}

/** The event group for a listener of an ops node: the only balanced events ops may subscribe to. */
export function opsEventGroup(name: string): string {
	return `${OPS_TOKEN}.${name}`;
}

/** Broadcast packets every node receives (`<prefix>.<CMD>`). */
const BROADCASTS = ["INFO", "DISCOVER", "HEARTBEAT", "DISCONNECT", "PING"];
/** Packets addressed to one node (`<prefix>.<CMD>.<nodeID>`). */
const TARGETED = ["EVENT", "REQ", "RES", "DISCOVER", "INFO", "PING", "PONG"];

export interface RolePermissions {
	publish: { allow: string[]; deny?: string[] };
	subscribe: { allow: string[]; deny?: string[] };
}

/**
 * The permissions of each role's user. `keyringNodes`: the node ids a keyring may run as (the
 * subjects of requests to one node are `<prefix>.REQ.<nodeID>`; a dotted id gets its `.>` too).
 */
export function rolePermissions(
	namespace: string,
	keyringNodes: string[],
): Record<NatsRole, RolePermissions> {
	const p = subjectPrefix(namespace);
	const all = [`${p}.>`];
	const keyringNodeSubjects = keyringNodes.flatMap((node) => [
		`${p}.REQ.${node}`,
		`${p}.REQ.${node}.>`,
	]);
	const noLeases = {
		allow: all,
		deny: [...LEASE_ACTIONS.map((action) => `${p}.REQB.${action}`), ...keyringNodeSubjects],
	};
	const opsNode = `${OPS_TOKEN}.>`;
	return {
		keyring: { publish: { allow: all }, subscribe: { allow: all } },
		// Signers reach the lease actions (their credential is checked there) but cannot serve as the keyring.
		signer: {
			publish: { allow: all },
			subscribe: { allow: all, deny: [`${p}.REQB.keyring.>`, ...keyringNodeSubjects] },
		},
		api: {
			publish: noLeases,
			subscribe: { allow: all, deny: [`${p}.REQB.keyring.>`, ...keyringNodeSubjects] },
		},
		// What a node with no services needs, and nothing else (the file comment).
		ops: {
			publish: noLeases,
			subscribe: {
				allow: [
					...BROADCASTS.map((cmd) => `${p}.${cmd}`),
					...TARGETED.map((cmd) => `${p}.${cmd}.${opsNode}`),
					`${p}.REQB.$node.>`,
					`${p}.EVENTB.${opsNode}`,
					`${p}.X-RECONNECTED`,
				],
			},
		},
	};
}

const list = (subjects: string[]) => `[${subjects.map((s) => JSON.stringify(s)).join(", ")}]`;

function permissionBlock(permissions: RolePermissions, indent: string): string {
	const side = (name: string, rules: { allow: string[]; deny?: string[] }) =>
		`${indent}  ${name}: { allow: ${list(rules.allow)}${rules.deny?.length ? `, deny: ${list(rules.deny)}` : ""} }`;
	return `${indent}permissions: {\n${side("publish", permissions.publish)}\n${side("subscribe", permissions.subscribe)}\n${indent}}`;
}

/**
 * The `authorization` block of a nats-server configuration: one user per role. `passwords`
 * gives each role's password as it is written into the file: a quoted literal, or `$VAR`
 * (nats-server reads it from the environment).
 */
export function authorizationBlock(
	namespace: string,
	keyringNodes: string[],
	passwords: Record<NatsRole, string>,
): string {
	const permissions = rolePermissions(namespace, keyringNodes);
	const users = NATS_ROLES.map(
		(role) =>
			`    {\n      user: ${JSON.stringify(role)}\n      password: ${passwords[role]}\n${permissionBlock(permissions[role], "      ")}\n    }`,
	);
	return `authorization {\n  users: [\n${users.join(",\n")}\n  ]\n}\n`;
}

/** `nats://user:password@host:port` for a role: each URL of a list (a NATS cluster) gets them. */
export function roleUrl(url: string, role: NatsRole, password: string): string {
	return mapTransporterUrls(url, (parsed) => {
		parsed.username = role;
		parsed.password = password;
	});
}
