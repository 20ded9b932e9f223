/**
 * `npm run signer -- <command>`: the operator's commands for signer and batcher credentials,
 * written to the keyring's store (DATA_DIR, or MONGO_URI); a running keyring sees a change
 * within 5 s. `--role batcher` works on batcher credentials (the dispatch tickets' signers).
 *
 *   create --name NAME [--out FILE]    a new credential, enrolled; the private part is shown once
 *   keygen --name NAME --out FILE      a new credential, not enrolled (no store at hand): its file,
 *                                      and the enrol command to run where the keyring's store is
 *   enrol --name NAME --public-key K   enrols a public key made elsewhere (JWK JSON, or a file)
 *   list [--json]                      every credential, revoked ones included
 *   revoke --name NAME                 refuses it from now on (its leases run out as usual)
 *   rotate --name NAME [--key-file F]  a new credential, enrolled, written over the node's key
 *                                      file in one rename: the nodes reading it switch within a
 *                                      second; then revoke the old name
 *   authority                          the keyring's public key (sealed in its store under the
 *                                      master key): the KEYRING_PUBLIC_KEY of nodes that do not
 *                                      share its DATA_DIR
 *   logkey --log signatures|leases     a new key for a transparency log's checkpoints
 *                                      (SIGNATURE_LOG_KEY, LEASE_LOG_KEY), for a Secret
 *
 * The embedded default and `npm run cluster` need none of this: their keyring enrols the
 * credentials its signers and batcher share in DATA_DIR. Kubernetes: `keygen` once per role,
 * put the private parts in the Secret (SIGNER_KEY, BATCHER_KEY), and `enrol` them in the
 * keyring's pod (docs/deploy.md).
 */
import fs from "node:fs";
import path from "node:path";
import type { JWK } from "jose";
import { ConfigError, loadConfig, type AppConfig } from "../config";
import {
	CREDENTIAL_FILES,
	CREDENTIAL_VARIABLES,
	CredentialError,
	isOkpPublicKey,
	newCredential,
	serializeCredential,
	SIGNER_NAME,
	thumbprint,
	type CredentialRole,
} from "../identity/credential";
import type { AuthorityKey } from "../identity/authority";
import {
	loadMasterKey,
	loadNextMasterKey,
	opensAuthority,
	unsealAuthority,
} from "../keyring/master-key";
import { storeFile } from "../store/sqlite";
import { rotateCredentialFile } from "../keyring/local-trust";
import type { EnrolledSigner, KeyringStore } from "../keyring/store";
import type { LogName } from "../contract";
import { LOG_ORIGINS } from "../tlog/log-key";
import { generateNoteSigner, signerKeyString, verifierKeyString } from "../tlog/note";
import { runSubcommands, UsageError, type CliOptions, type Subcommand } from "./cli";
import { openKeyringStore } from "./keyring-store";

const STORE = {
	"data-dir": { type: "string" },
	"mongo-uri": { type: "string" },
	role: { type: "string" },
} as const satisfies CliOptions;

const USAGE = `Usage: npm run signer -- <command> [flags]
  create --name NAME [--out FILE]   make a signer credential and enrol it; prints the private part once
                                    (or writes it to FILE, mode 0600): give it to signers as SIGNER_KEY
  keygen --name NAME --out FILE     make a credential without enrolling it (no store needed); prints
                                    its SIGNER_KEY line and the enrol command for its public part
  enrol --name NAME --public-key K  enrol a public key made elsewhere (JWK JSON, or a file holding it)
  list [--json]                     the enrolled credentials, revoked ones included
  revoke --name NAME                refuse a credential from now on (a running keyring sees it within 5 s)
  rotate --name NAME [--key-file F] make a credential, enrol it and write it over the nodes' key file
                                    (SIGNER_KEY_FILE / BATCHER_KEY_FILE, else DATA_DIR's) in one rename:
                                    running nodes switch to it within a second; then revoke the old name
  authority                         print the keyring's public key (KEYRING_PUBLIC_KEY), sealed in its
                                    store under KEYRING_MASTER_KEY or DATA_DIR/master.key
  logkey --log signatures|leases    make a key for a transparency log's checkpoints: prints its
                                    SIGNATURE_LOG_KEY or LEASE_LOG_KEY line and its verifier key
--role signer|batcher               whose credentials (default signer): batchers sign dispatch tickets
Store flags: --data-dir DIR (DATA_DIR), --mongo-uri URI (MONGO_URI)`;

function roleOf(value: unknown): CredentialRole {
	if (value === undefined || value === "signer") return "signer";
	if (value === "batcher") return "batcher";
	throw new UsageError(`--role must be signer or batcher, got ${JSON.stringify(value)}`);
}

const Role = (role: CredentialRole) => (role === "signer" ? "Signer" : "Batcher");

function storeConfig(flags: { "data-dir"?: string; "mongo-uri"?: string }): AppConfig {
	try {
		return loadConfig(process.env, flags);
	} catch (err) {
		if (err instanceof ConfigError) throw new UsageError(err.message);
		throw err;
	}
}

function requireName(name: string | undefined): string {
	if (!name) throw new UsageError("--name is required");
	if (!SIGNER_NAME.test(name))
		throw new UsageError(
			`--name must be 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit; got ${JSON.stringify(name)}`,
		);
	return name;
}

function publicKeyFrom(text: string): JWK {
	const source = fs.existsSync(text) ? fs.readFileSync(text, "utf8") : text;
	let jwk: JWK;
	try {
		jwk = JSON.parse(source) as JWK;
	} catch {
		throw new UsageError(
			"--public-key must be an Ed25519 public JWK (JSON) or a file holding one",
		);
	}
	if (!isOkpPublicKey(jwk, "Ed25519"))
		throw new UsageError(
			"--public-key must be an Ed25519 public JWK: kty OKP, crv Ed25519, x of 32 bytes",
		);
	if (jwk.d !== undefined)
		throw new UsageError("--public-key holds a private key (d): enrol only the public part");
	return { kty: "OKP", crv: "Ed25519", x: jwk.x };
}

async function enrol(
	store: KeyringStore,
	where: string,
	role: CredentialRole,
	signer: EnrolledSigner,
): Promise<string> {
	const outcome = await store.enrol(role, signer);
	if (outcome === "name-taken")
		throw new UsageError(
			`The name "${signer.name}" is taken in ${where} (by another key, or revoked): choose another name`,
		);
	return outcome === "enrolled"
		? `Enrolled ${role} "${signer.name}" (key ${thumbprint(signer.publicJwk)}) in ${where}`
		: `${Role(role)} "${signer.name}" was already enrolled with this key in ${where}`;
}

const COMMANDS: Record<string, Subcommand> = {
	create: {
		options: { ...STORE, name: { type: "string" }, out: { type: "string" } },
		async run(values) {
			const name = requireName(values.name as string | undefined);
			const role = roleOf(values.role);
			const vars = CREDENTIAL_VARIABLES[role];
			const out = values.out as string | undefined;
			if (out && fs.existsSync(out))
				throw new UsageError(`--out ${out} exists: a credential is never written over`);
			const { store, where } = await openKeyringStore(
				storeConfig(values),
				"to enrol signers in",
			);
			try {
				const credential = newCredential(name);
				const line = await enrol(store, where, role, {
					name,
					publicJwk: credential.publicJwk,
					enrolledAt: new Date().toISOString(),
					revokedAt: null,
				});
				const secret = serializeCredential(credential);
				if (out) {
					fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
					fs.writeFileSync(out, secret + "\n", { mode: 0o600, flag: "wx" });
					return `${line}\nIts private part is in ${out} (mode 0600): give it to the ${role}s as ${vars.file}, or its content as ${vars.key}.`;
				}
				return `${line}\nIts private part, shown once (give it to the ${role}s as ${vars.key}, e.g. in a Kubernetes Secret):\n${secret}`;
			} finally {
				await store.close();
			}
		},
	},
	keygen: {
		options: { name: { type: "string" }, out: { type: "string" }, role: { type: "string" } },
		async run(values) {
			const name = requireName(values.name as string | undefined);
			const role = roleOf(values.role);
			const out = values.out as string | undefined;
			if (!out)
				throw new UsageError(
					"--out FILE is required: the private part is written there (mode 0600), never printed",
				);
			if (fs.existsSync(out))
				throw new UsageError(`--out ${out} exists: a credential is never written over`);
			const credential = newCredential(name);
			const secret = serializeCredential(credential);
			fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
			fs.writeFileSync(out, secret + "\n", { mode: 0o600, flag: "wx" });
			const { kty, crv, x } = credential.publicJwk;
			return [
				`Made ${role} credential "${name}" (key ${thumbprint(credential.publicJwk)}) in ${out} (mode 0600). Not enrolled yet.`,
				`For a Kubernetes Secret env file (k8s/secrets/record-signer.env):`,
				`  ${CREDENTIAL_VARIABLES[role].key}=${Buffer.from(secret).toString("base64")}`,
				`Enrol its public part where the keyring's store is, e.g. in the keyring's pod:`,
				`  kubectl -n record-signer exec keyring-0 -- node --disable-warning=ExperimentalWarning dist/src/cli/signer.js enrol${role === "signer" ? "" : " --role batcher"} --name ${name} --public-key '${JSON.stringify({ kty, crv, x })}'`,
			].join("\n");
		},
	},
	enrol: {
		options: { ...STORE, name: { type: "string" }, "public-key": { type: "string" } },
		async run(values) {
			const name = requireName(values.name as string | undefined);
			if (typeof values["public-key"] !== "string")
				throw new UsageError("--public-key is required");
			const role = roleOf(values.role);
			const publicJwk = { ...publicKeyFrom(values["public-key"]), kid: name };
			const { store, where } = await openKeyringStore(
				storeConfig(values),
				"to enrol signers in",
			);
			try {
				return await enrol(store, where, role, {
					name,
					publicJwk,
					enrolledAt: new Date().toISOString(),
					revokedAt: null,
				});
			} finally {
				await store.close();
			}
		},
	},
	list: {
		options: { ...STORE, json: { type: "boolean" } },
		async run(values) {
			const role = roleOf(values.role);
			const { store, where } = await openKeyringStore(
				storeConfig(values),
				"to enrol signers in",
			);
			try {
				const signers = await store.enrolled(role);
				if (values.json)
					return JSON.stringify(
						signers.map((s) => ({
							name: s.name,
							key: thumbprint(s.publicJwk),
							enrolledAt: s.enrolledAt,
							revokedAt: s.revokedAt,
						})),
						null,
						2,
					);
				if (!signers.length) return `No ${role} is enrolled in ${where}`;
				return [
					`${Role(role)}s enrolled in ${where}:`,
					...signers.map(
						(s) =>
							`  ${s.name.padEnd(24)} key ${thumbprint(s.publicJwk)}  enrolled ${s.enrolledAt}${s.revokedAt ? `  REVOKED ${s.revokedAt}` : ""}`,
					),
				].join("\n");
			} finally {
				await store.close();
			}
		},
	},
	revoke: {
		options: { ...STORE, name: { type: "string" } },
		async run(values) {
			const name = requireName(values.name as string | undefined);
			const role = roleOf(values.role);
			const { store, where } = await openKeyringStore(
				storeConfig(values),
				"to enrol signers in",
			);
			try {
				const known = (await store.enrolled(role)).find((s) => s.name === name);
				if (!known)
					throw new UsageError(
						`No ${role} "${name}" is enrolled in ${where} (npm run signer -- list${role === "signer" ? "" : " --role batcher"})`,
					);
				if (!(await store.revoke(role, name, new Date().toISOString())))
					return `${Role(role)} "${name}" was revoked already (${known.revokedAt})`;
				return `Revoked ${role} "${name}" in ${where}: a running keyring refuses it within 5 s; leases it holds run out as usual`;
			} finally {
				await store.close();
			}
		},
	},
};

COMMANDS.rotate = {
	options: { ...STORE, name: { type: "string" }, "key-file": { type: "string" } },
	async run(values) {
		const name = requireName(values.name as string | undefined);
		const role = roleOf(values.role);
		const config = storeConfig(values);
		const vars = CREDENTIAL_VARIABLES[role];
		if ((role === "signer" ? config.signerKey : config.batcherKey) && !values["key-file"])
			throw new UsageError(
				`The ${role}s' credential comes from ${vars.key}: make a new one with keygen, enrol it, put it in ${vars.key} (the Secret) and roll the nodes, then revoke the old name`,
			);
		const file =
			(values["key-file"] as string | undefined) ??
			(role === "signer" ? config.signerKeyFile : config.batcherKeyFile) ??
			(config.dataDir ? path.join(config.dataDir, CREDENTIAL_FILES[role]) : null);
		if (!file || !fs.existsSync(file))
			throw new UsageError(
				`No ${role} credential file to rotate${file ? ` at ${file}` : ""}: pass --key-file, or set ${vars.file} or DATA_DIR`,
			);
		const { store, where } = await openKeyringStore(config, "to enrol signers in");
		try {
			const { previous, next } = await rotateCredentialFile(store, role, file, name);
			return [
				`Enrolled ${role} "${name}" (key ${thumbprint(next.publicJwk)}) in ${where} and wrote it to ${file} (mode 0600)`,
				`Nodes reading ${file} switch to it within a second for what they begin from now on; what they began under "${previous.name}" ends under it.`,
				`Once those leases and batches have ended (a lease lives LEASE_TTL_MS), revoke the old one:`,
				`  npm run signer -- revoke --name ${previous.name}${role === "signer" ? "" : " --role batcher"}`,
			].join("\n");
		} finally {
			await store.close();
		}
	},
};

COMMANDS.authority = {
	options: {
		"data-dir": { type: "string" },
		"mongo-uri": { type: "string" },
		json: { type: "boolean" },
	},
	async run(values) {
		const config = storeConfig(values);
		if (!config.masterKey && !config.dataDir)
			throw new UsageError(
				"Neither KEYRING_MASTER_KEY nor DATA_DIR is set: the keyring's public key comes from its master key",
			);
		if (!config.masterKey && !fs.existsSync(path.join(config.dataDir, "master.key")))
			throw new UsageError(
				`No master key in ${config.dataDir}: start the keyring once, pass --data-dir, or set KEYRING_MASTER_KEY`,
			);
		const { authority, source } = await keyringAuthority(config);
		if (values.json) return JSON.stringify(authority.publicJwk);
		return [
			`The keyring's public key (${source}): give it to records nodes that do not share the keyring's DATA_DIR as`,
			`KEYRING_PUBLIC_KEY=${authority.publicJwk.x}`,
		].join("\n");
	},
};

/** The variable each log's key goes in. */
const LOG_KEY_VARIABLES: Record<LogName, string> = {
	signatures: "SIGNATURE_LOG_KEY",
	leases: "LEASE_LOG_KEY",
};

COMMANDS.logkey = {
	options: { log: { type: "string" } },
	async run(values) {
		const log = values.log as string | undefined;
		if (log !== "signatures" && log !== "leases")
			throw new UsageError(
				`--log must be signatures or leases, got ${JSON.stringify(log ?? null)}`,
			);
		// Named like the key a node makes on first start: the log's origin (docs/design.md §8.4).
		const signer = generateNoteSigner(LOG_ORIGINS[log]);
		return [
			`A new key for the ${log} log's checkpoints: put it in the Secret as`,
			`${LOG_KEY_VARIABLES[log]}=${signerKeyString(signer)}`,
			`Its verifier key (public: give it to whoever checks the checkpoints):`,
			verifierKeyString(signer),
		].join("\n");
	},
};

/**
 * The keyring's authority key: sealed in its store under the master key (or the next one, a
 * rotation that stopped before its file swap), or, before the keyring first sealed it there,
 * derived from the master key as that keyring will (docs/design.md §5.1).
 */
async function keyringAuthority(
	config: AppConfig,
): Promise<{ authority: AuthorityKey; source: string }> {
	const master = await loadMasterKey(config, false);
	const hasStore = config.mongoUri || fs.existsSync(storeFile(config.dataDir, "keyring"));
	if (!hasStore) return { authority: master.derivedAuthority, source: `from ${master.source}` };
	const { store, where } = await openKeyringStore(config, "to read the keyring's key from");
	try {
		const sealed = await store.sealedAuthority();
		if (sealed === null)
			return { authority: master.derivedAuthority, source: `from ${master.source}` };
		const next = await loadNextMasterKey(config);
		const opener = (await opensAuthority(sealed, master)) ? master : next;
		if (!opener || !(await opensAuthority(sealed, opener)))
			throw new UsageError(
				`The master key from ${master.source} does not open the keyring's authority key in ${where}: it is not the key the store is sealed with`,
			);
		return {
			authority: await unsealAuthority(sealed, opener),
			source: `sealed in ${where} under ${opener.source}`,
		};
	} finally {
		await store.close();
	}
}

void runSubcommands("signer", USAGE, COMMANDS, (err) => err instanceof CredentialError);
