/**
 * `npm run keys -- <command>`: the operator's commands for the keyring's keys (docs/design.md
 * §5.8), while runs go on.
 *
 *   list [--json]                       every key: active, retired or revoked, and its uses
 *   add --count N                       N new keys, never used, so the next grants take them
 *   retire --key KEY [--reason TEXT]    no new lease on KEY; its current lease runs out; its
 *                                       signatures stand (it stays in the JWKS)
 *   revoke --key KEY --reason TEXT      the same, for a key that was compromised: the audit and
 *                                       the export name since when
 *   rotate-master                       every sealed key and the authority key sealed again under
 *                                       the next master key (DATA_DIR/master.key.next, made here
 *                                       when absent, or KEYRING_MASTER_KEY_NEXT), which then
 *                                       becomes the master key
 *
 * With TRANSPORTER (or --transporter) the running keyring is asked over NATS, with an operator
 * proof made with the batcher credential (BATCHER_KEY, BATCHER_KEY_FILE or DATA_DIR's); without
 * it, this command opens the keyring's store (DATA_DIR or MONGO_URI) as the keyring for a
 * moment, which it refuses while a keyring runs on it.
 */
import os from "node:os";
import { ServiceBroker } from "moleculer";
import { brokerOptions } from "../broker/broker-options";
import { assertNatsReachable, NatsUnreachableError } from "../broker/nats-reach";
import fs from "node:fs";
import path from "node:path";
import { Actions, call, type ActionName, type KeyInfo, type MasterKeyRotation } from "../contract";
import { DomainError } from "../errors";
import { loadCredential } from "../identity/credential";
import { makeProof, operatorOp } from "../identity/proof";
import { Keyring } from "../keyring/keyring";
import { createNextMasterKeyFile, MASTER_KEY_FILE } from "../keyring/master-key";
import { KeyringRoleHeldError } from "../keyring/role";
import { redactUrl } from "../nats-tls";
import { serviceSettings } from "../settings";
import { UserError } from "../user-error";
import { runSubcommands, UsageError, type CliOptions } from "./cli";
import { runningServe } from "./runner";
import { openKeyringStore, quiet } from "./keyring-store";
import { STORE_OPTIONS, storeConfig } from "./store";

const USAGE = `Usage: npm run keys -- <command> [flags]
  list [--json]                      every key: active, retired or revoked, its uses and lease
  add --count N                      add N keys (1 to 1000); the next grants take them
  retire --key KEY [--reason TEXT]   no new lease on KEY; its current lease runs out; its
                                     signatures stand (the last active key is not retired)
  revoke --key KEY --reason TEXT     the same for a compromised key; the audit and the export
                                     name since when, for verifiers to refuse later signatures
  rotate-master                      seal every key again under the next master key: DATA_DIR/
                                     master.key.next (made, 0600, when absent), which then becomes
                                     master.key; or KEYRING_MASTER_KEY_NEXT beside KEYRING_MASTER_KEY
Store flags: --data-dir DIR (DATA_DIR), --mongo-uri URI (MONGO_URI): this command opens the
keyring's store as the keyring for a moment (refused while a keyring runs on it).
--transporter URL (TRANSPORTER), --namespace NAME: ask the running keyring over NATS instead,
with an operator proof made with the batcher credential (BATCHER_KEY or BATCHER_KEY_FILE).`;

/** What the command acts on: the running keyring over the bus, or its store opened here. */
interface KeyOps {
	list(): Promise<KeyInfo[]>;
	add(count: number): Promise<KeyInfo[]>;
	end(op: "retire" | "revoke", keyId: string, reason: string | null): Promise<KeyInfo>;
	rotateMaster(): Promise<MasterKeyRotation>;
	close(): Promise<void>;
}

type Config = ReturnType<typeof storeConfig>;

/** The keyring's store is held by a running keyring: said without the usage text. */
class StoreHeldError extends UserError {}

async function overBus(config: Config): Promise<KeyOps> {
	await assertNatsReachable(
		config.transporter!,
		"or leave TRANSPORTER out to open the keyring's store here",
	);
	const credential = loadCredential(serviceSettings(config).batcher.credential);
	const broker = new ServiceBroker(
		brokerOptions(config, {
			logLevel: "warn",
			nodeID: `keys-cli-${os.hostname()}-${process.pid}`,
		}),
	);
	await broker.start();
	try {
		await broker.waitForServices("keyring", 10_000);
	} catch {
		await broker.stop();
		throw new UserError(
			`No keyring answered over ${redactUrl(config.transporter)} (namespace ${config.namespace}) within 10 s: start it, or leave TRANSPORTER out to open its store here`,
		);
	}
	const proof = (op: string) => makeProof(credential, { act: "keys", node: broker.nodeID, op });
	const ask = async <A extends ActionName>(action: A, params: object) => {
		try {
			return await call(broker, action, params as never);
		} catch (err) {
			throw new UserError(`keyring: ${(err as Error).message}`);
		}
	};
	return {
		list: () => ask(Actions.keyring.keys, {}),
		add: (count) =>
			ask(Actions.keyring.addKeys, { count, proof: proof(operatorOp("add", count)) }),
		end: (op, keyId, reason) =>
			ask(op === "retire" ? Actions.keyring.retireKey : Actions.keyring.revokeKey, {
				keyId,
				...(reason ? { reason } : {}),
				proof: proof(operatorOp(op, keyId)),
			}),
		rotateMaster: () =>
			ask(Actions.keyring.rotateMasterKey, {
				proof: proof(operatorOp("rotate", "master-key")),
			}),
		close: () => broker.stop(),
	};
}

async function inStore(config: Config): Promise<KeyOps> {
	const { store, where } = await openKeyringStore(config, "to change keys in");
	let keyring: Keyring;
	try {
		keyring = await Keyring.open(
			{ ...serviceSettings(config).keyring, sweepIntervalMs: 0 },
			{
				store,
				storeName: where,
				identity: {
					holder: `keys-cli-${process.pid}`,
					host: os.hostname(),
					pid: process.pid,
				},
				logger: quiet,
				emit() {},
				// No bus here to tell records on: no keyring runs, so none grants leases either, and
				// the audit counts any signature a lease of before made after the revocation.
				broadcast() {},
			},
		);
	} catch (err) {
		await store.close();
		// It names the keyring holding the store and what to do (ask it over NATS, or stop it).
		if (err instanceof KeyringRoleHeldError) throw new StoreHeldError(err.message);
		throw err;
	}
	const act = async <T>(work: () => Promise<T>) => {
		try {
			return await work();
		} catch (err) {
			if (err instanceof DomainError) throw new UserError(err.message);
			throw err;
		}
	};
	return {
		list: async () => keyring.keyList(),
		add: (count) => act(() => keyring.addKeys(count)),
		end: (op, keyId, reason) =>
			act(() => keyring.endKey(keyId, op === "retire" ? "retired" : "revoked", reason)),
		rotateMaster: () => act(() => keyring.rotateMasterKey()),
		close: async () => {
			await keyring.close();
			await store.close();
		},
	};
}

async function withKeyOps<T>(
	flags: Record<string, unknown>,
	work: (ops: KeyOps) => Promise<T>,
): Promise<T> {
	let config = storeConfig(flags);
	// Beside an npm run serve on the same DATA_DIR: ask its keyring over its NATS, as the REPL
	// joins it (the store is its keyring's while it runs).
	const serve = !config.transporter && config.dataDir ? runningServe(config.dataDir) : null;
	if (serve) {
		process.stderr.write(
			`Asking the keyring of npm run serve (pid ${serve.pid}) over NATS at ${redactUrl(serve.nats)}\n`,
		);
		config = { ...config, transporter: serve.nats, namespace: serve.namespace };
	}
	const ops = config.transporter ? await overBus(config) : await inStore(config);
	try {
		return await work(ops);
	} finally {
		await ops.close();
	}
}

/**
 * The next master key where this command can place it: DATA_DIR/master.key.next beside the
 * master.key of a DATA_DIR at hand (the keyring's, or one it shares), made when absent. Returns
 * the file when it was made here. A keyring with KEYRING_MASTER_KEY takes KEYRING_MASTER_KEY_NEXT.
 */
function nextMasterKeyFile(config: Config): string | null {
	if (config.masterKey || !config.dataDir) return null;
	if (!fs.existsSync(path.join(config.dataDir, MASTER_KEY_FILE))) return null;
	const { file, created } = createNextMasterKeyFile(config.dataDir);
	return created ? file : null;
}

function describe(key: KeyInfo): string {
	const state = key.state === "active" ? "active " : `${key.state} since ${key.since}`;
	const lease = key.leased ? `, leased to ${key.holder} (${key.leaseId})` : "";
	return `${key.keyId}  ${state}  ${key.uses} use(s)${lease}`;
}

function keyFlag(value: unknown): string {
	if (typeof value !== "string" || !value) throw new UsageError("--key is required (a key id)");
	return value;
}

/** The longest reason a key's retirement or revocation keeps (keyChangeParams in src/contract.ts). */
const MAX_REASON = 500;

/** --reason, checked here so that a long one is named before anything connects. */
function reasonFlag(value: unknown): string | null {
	if (typeof value !== "string") return null;
	if (value.length > MAX_REASON)
		throw new UsageError(
			`--reason must be at most ${MAX_REASON} characters, got ${value.length}`,
		);
	return value;
}

const COMMON = { ...STORE_OPTIONS } as const satisfies CliOptions;

void runSubcommands(
	"keys",
	USAGE,
	{
		list: {
			options: { ...COMMON, json: { type: "boolean" } },
			run: (values) =>
				withKeyOps(values, async (ops) => {
					const keys = await ops.list();
					if (values.json) return JSON.stringify(keys, null, 2);
					const active = keys.filter((k) => k.state === "active").length;
					return [...keys.map(describe), `${keys.length} key(s), ${active} active`].join(
						"\n",
					);
				}),
		},
		add: {
			options: { ...COMMON, count: { type: "string" } },
			run: (values) => {
				const count = Number(values.count);
				if (!Number.isInteger(count) || count < 1 || count > 1000)
					throw new UsageError(
						`--count must be an integer from 1 to 1000, got ${JSON.stringify(values.count ?? null)}`,
					);
				return withKeyOps(values, async (ops) => {
					const added = await ops.add(count);
					return `Added ${added.length} key(s), granted next: ${added.map((k) => k.keyId).join(", ")}`;
				});
			},
		},
		retire: {
			options: { ...COMMON, key: { type: "string" }, reason: { type: "string" } },
			run: (values) => {
				const keyId = keyFlag(values.key);
				const reason = reasonFlag(values.reason);
				return withKeyOps(values, async (ops) =>
					describe(await ops.end("retire", keyId, reason)),
				);
			},
		},
		"rotate-master": {
			options: { ...COMMON },
			run: (values) => {
				const config = storeConfig(values);
				const made = nextMasterKeyFile(config);
				return withKeyOps(values, async (ops) => {
					const rotation = await ops.rotateMaster();
					return [
						...(made ? [`Made the next master key ${made} (mode 0600)`] : []),
						`Rotated the master key at ${rotation.at}: ${rotation.sealedKeys} sealed key(s) and the keyring's authority key are sealed under ${rotation.masterKey}; the old master key opens nothing now`,
						...(config.masterKey || !config.dataDir
							? [
									"Set KEYRING_MASTER_KEY to KEYRING_MASTER_KEY_NEXT's value (and remove KEYRING_MASTER_KEY_NEXT) before the keyring restarts",
								]
							: []),
					].join("\n");
				});
			},
		},
		revoke: {
			options: { ...COMMON, key: { type: "string" }, reason: { type: "string" } },
			run: (values) => {
				const keyId = keyFlag(values.key);
				if (typeof values.reason !== "string" || !values.reason.trim())
					throw new UsageError(
						"--reason is required: say why the key is revoked (it is kept with the revocation)",
					);
				const reason = reasonFlag(values.reason)!;
				return withKeyOps(values, async (ops) =>
					describe(await ops.end("revoke", keyId, reason)),
				);
			},
		},
	},
	// A NATS that is not there, or a store another keyring holds, is not a misuse of the command:
	// its line, without the usage.
	(err) =>
		err instanceof UserError &&
		!(err instanceof NatsUnreachableError) &&
		!(err instanceof StoreHeldError),
);
