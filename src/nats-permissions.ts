/**
 * Least privilege on NATS: one user per role, with subject permissions where Moleculer's
 * subject layout allows them. With `disableBalancer` (src/broker-options.ts) a call that names
 * no node goes to `<prefix>.REQB.<action>`, one subject per action, so the api and ops users
 * can be kept from the keyring's lease actions (`keyring.acquire`, `renew`, `release`) and
 * from the keyring node's own subject, and from serving as the keyring (subscribing to those).
 *
 * What this does not do: the signer and keyring users may publish anything under the prefix,
 * and NATS passwords are not identities. Who may obtain a key is decided by the keyring
 * (enrolled signer credentials, src/keyring/signer-gate.ts), whatever the transport lets
 * through. Messages are not encrypted by NATS unless TLS is configured (docs/deploy.md).
 */

export type NatsRole = "keyring" | "signer" | "api" | "ops";
export const NATS_ROLES: NatsRole[] = ["keyring", "signer", "api", "ops"];

/** Moleculer's subject prefix for a namespace. */
export function subjectPrefix(namespace: string): string {
	return namespace ? `MOL-${namespace}` : "MOL";
}

export const LEASE_ACTIONS = ["keyring.acquire", "keyring.renew", "keyring.release"] as const;

export interface RolePermissions {
	publish: { allow: string[]; deny?: string[] };
	subscribe: { allow: string[]; deny?: string[] };
}

/**
 * The permissions of each role's user. `keyringNodes`: the node ids a keyring may run as (the
 * subjects of requests to one node are `<prefix>.REQ.<nodeID>`; a dotted id gets its `.>` too).
 */
export function rolePermissions(namespace: string, keyringNodes: string[]): Record<NatsRole, RolePermissions> {
	const p = subjectPrefix(namespace);
	const all = [`${p}.>`];
	const keyringNodeSubjects = keyringNodes.flatMap(node => [`${p}.REQ.${node}`, `${p}.REQ.${node}.>`]);
	const outsiders: RolePermissions = {
		publish: { allow: all, deny: [...LEASE_ACTIONS.map(action => `${p}.REQB.${action}`), ...keyringNodeSubjects] },
		subscribe: { allow: all, deny: [`${p}.REQB.keyring.>`, ...keyringNodeSubjects] }
	};
	return {
		keyring: { publish: { allow: all }, subscribe: { allow: all } },
		// Signers reach the lease actions (their credential is checked there) but cannot serve as the keyring.
		signer: { publish: { allow: all }, subscribe: { allow: all, deny: [`${p}.REQB.keyring.>`, ...keyringNodeSubjects] } },
		api: outsiders,
		ops: outsiders
	};
}

const list = (subjects: string[]) => `[${subjects.map(s => JSON.stringify(s)).join(", ")}]`;

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
export function authorizationBlock(namespace: string, keyringNodes: string[], passwords: Record<NatsRole, string>): string {
	const permissions = rolePermissions(namespace, keyringNodes);
	const users = NATS_ROLES.map(role => `    {\n      user: ${JSON.stringify(role)}\n      password: ${passwords[role]}\n${permissionBlock(permissions[role], "      ")}\n    }`);
	return `authorization {\n  users: [\n${users.join(",\n")}\n  ]\n}\n`;
}

/** `nats://user:password@host:port` for a role. */
export function roleUrl(url: string, role: NatsRole, password: string): string {
	const parsed = new URL(url);
	parsed.username = role;
	parsed.password = password;
	return parsed.toString().replace(/\/$/, "");
}
