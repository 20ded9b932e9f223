/**
 * keyring: owns `keys` and `leases`. A single instance: it generates or loads the Ed25519
 * keys, grants leases from the LRU queue of free keys, renews, releases and reclaims them,
 * and serves the public JWKS. The behaviour lives in src/keyring/; this file wires it up.
 *
 * Only one keyring grants leases: over NATS an election among keyring nodes runs before any
 * store opens (src/keyring/election.ts), and in the store the keyring claims the keyring role
 * with a fencing number that every write it makes carries (src/keyring/role.ts), so a second
 * keyring on one store is refused by the store itself. One that loses refuses to start and
 * says why; it never offers the `keyring` service, so no signer can reach it.
 *
 * Only an enrolled signer obtains, renews or releases a lease: each request carries a proof
 * signed with its credential, checked by src/keyring/credential-gate.ts; the holder is the node
 * the proof names. A key is granted only for a batch the batcher recorded: the acquire carries
 * its dispatch ticket, signed by an enrolled batcher, for the proven node, taken once. The
 * grant comes with a lease token signed with the keyring's authority key, which records checks
 * offline. A refusal is logged with the caller's node id.
 */
import os from "node:os";
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import { describeStore, StoreMixin } from "../mixins/store.mixin";
import { sleep, systemClock, type Clock } from "../src/clock";
import { appConfig } from "../src/config";
import { acquireParams, Actions, call, leaseRefParams, type AcquireParams, type ClaimReply, type Lease, type LeaseChange, type LeaseRef } from "../src/contract";
import { electKeyring, ELECTION_SERVICE, type ElectionBus, type KeyringElection } from "../src/keyring/election";
import { parseAuthorityKey, publishAuthority, TrustAnchorError } from "../src/identity/authority";
import { busChecks } from "../src/identity/bus-checks";
import { credentialFile, localCredential, type CredentialRole } from "../src/identity/credential";
import { issueLeaseToken, ownLeaseToken } from "../src/identity/lease-token";
import type { ProofAction } from "../src/identity/proof";
import { BatchRefusedError } from "../src/identity/ticket";
import { Keyring } from "../src/keyring/keyring";
import { CredentialGate, SignerRefusedError, type ProofContext, type ProvenSigner } from "../src/keyring/credential-gate";
import { MongoKeyringStore } from "../src/keyring/mongo-store";
import { SqliteKeyringStore } from "../src/keyring/sqlite-store";
import type { KeyringStore } from "../src/keyring/store";
import { serviceSettings, type KeyringSettings } from "../src/settings";

interface KeyringVars {
	store: KeyringStore;
	keyring: Keyring;
	/** Enrolled signers: lease requests' proofs. */
	signers: CredentialGate;
	/** Enrolled batchers: dispatch tickets. */
	batchers: CredentialGate;
	election: KeyringElection | null;
	/** Set when another active keyring showed up: this one grants and renews nothing more. */
	fencedBy: string | null;
}

/** The election over this broker's transporter. */
function electionBus(broker: ServiceBroker): ElectionBus {
	return {
		nodeID: broker.nodeID,
		namespace: broker.namespace,
		async offer(onClaim) {
			broker.createService({
				name: ELECTION_SERVICE,
				actions: { claim: { params: { nodeID: { type: "string", min: 1 } }, handler: (ctx: Context<{ nodeID: string }>): ClaimReply => onClaim(ctx.params.nodeID) } }
			});
			while (!broker.registry.getServiceList({ onlyLocal: true }).some(s => s.name === ELECTION_SERVICE)) await sleep(20);
		},
		peers: () => otherKeyringNodes(broker, [ELECTION_SERVICE, "keyring"]),
		ask: (peer, timeout) => call(broker, Actions.keyring.claim, { nodeID: broker.nodeID }, { nodeID: peer, timeout }),
		sleep
	};
}

function otherKeyringNodes(broker: ServiceBroker, services: string[]): string[] {
	const peers = new Set<string>();
	for (const service of broker.registry.getServiceList({ onlyAvailable: true }))
		if (services.includes(service.name) && service.nodeID && service.nodeID !== broker.nodeID) peers.add(service.nodeID);
	return [...peers].sort();
}

/** Runs before the store opens (the last mixin's `started` runs first): a keyring that loses the election never touches a store. */
const KeyringElectionGuard: Partial<ServiceSchema<KeyringSettings, Record<string, never>, KeyringVars>> = {
	async started() {
		const { settings, broker } = this;
		this.election = this.fencedBy = null;
		if (!broker.transit) return;
		try {
			const { election, peers } = await electKeyring(electionBus(broker), settings);
			this.election = election;
			this.logger.info(`Elected the active keyring on NATS namespace '${broker.namespace}'${peers.length ? ` (over ${peers.join(", ")})` : " (no other keyring node in sight)"}`);
		} catch (err) {
			this.logger.error((err as Error).message);
			throw err;
		}
	}
};

const KeyringStoreMixin = StoreMixin<SqliteKeyringStore | MongoKeyringStore>({
	owner: "keyring",
	collections: ["keys", "leases"],
	embedded: (dataDir, log) => SqliteKeyringStore.open(dataDir, log),
	mongo: (uri, service) => MongoKeyringStore.open(uri, service)
});

interface KeyringMethods {
	admit(ctx: Context, action: ProofAction, proof: string, context: Omit<ProofContext, "callerNode">): Promise<ProvenSigner>;
	logRefusal<T>(ctx: Context, action: ProofAction, check: () => Promise<T>): Promise<T>;
	enrolLocal(role: CredentialRole): Promise<void>;
	publishAuthority(): void;
}

/** What a test may give the keyring besides its settings: a clock it moves by hand. */
export interface KeyringServiceDeps {
	clock?: Clock;
}

export function createKeyringService(settings: KeyringSettings, deps: KeyringServiceDeps = {}): ServiceSchema {
	const schema: ServiceSchema<KeyringSettings & { $secureSettings: string[] }, KeyringMethods, KeyringVars> = {
		name: "keyring",
		mixins: [KeyringStoreMixin, KeyringElectionGuard as Partial<ServiceSchema>],
		// Service settings travel to every node in INFO packets: the master key and a MONGO_URI's credentials must not.
		settings: { ...settings, $secureSettings: ["masterKey", "mongoUri"] },
		actions: {
			/**
			 * Grants the least recently used free key to the proven signer for the batch its ticket
			 * names, its private key sealed to `sessionKey`, with the lease token records takes.
			 */
			acquire: {
				params: acquireParams,
				async handler(ctx: Context<AcquireParams>): Promise<Lease> {
					const { sessionKey, waitMs, proof, ticket } = ctx.params;
					const signer = await this.admit(ctx, "acquire", proof, { sessionKey: sessionKey.x });
					const batch = busChecks.on ? await this.logRefusal(ctx, "acquire", () => this.batchers.checkTicket(ticket, signer.node)) : null;
					const lease = await this.keyring.acquire({ holder: signer.node, sessionKey, ...(waitMs === undefined ? {} : { waitMs }) });
					const until = Date.parse(lease.expiresAt) + this.settings.leaseGraceMs;
					const token = batch ? issueLeaseToken(this.keyring.authority, { lid: lease.leaseId, key: lease.keyId, node: signer.node, cnf: signer.x, bid: batch.bid, ids: batch.ids, exp: until }) : "";
					return { ...lease, token };
				}
			},
			/** Extends the proven holder's lease; with its current token, answers a fresh one for the new expiry. */
			renew: {
				params: leaseRefParams,
				async handler(ctx: Context<LeaseRef>): Promise<LeaseChange> {
					const { leaseId, proof, token } = ctx.params;
					await this.admit(ctx, "renew", proof, { leaseId, holder: this.keyring.holderOf(leaseId) });
					const change = await this.keyring.renew(leaseId);
					const current = change.changed && change.expiresAt ? ownLeaseToken(this.keyring.authority, token) : null;
					if (!current || current.lid !== leaseId) return change;
					const { iat: _issued, ...claims } = current;
					return { ...change, token: issueLeaseToken(this.keyring.authority, { ...claims, exp: Date.parse(change.expiresAt!) + this.settings.leaseGraceMs }) };
				}
			},
			release: {
				params: leaseRefParams,
				async handler(ctx: Context<LeaseRef>) {
					await this.admit(ctx, "release", ctx.params.proof, { leaseId: ctx.params.leaseId, holder: this.keyring.holderOf(ctx.params.leaseId) });
					return this.keyring.release(ctx.params.leaseId);
				}
			},
			jwks: { handler() { return this.keyring.jwks(); } },
			keys: { handler() { return this.keyring.keyList(); } },
			status: { handler() { return this.keyring.status(); } }
		},
		methods: {
			/** The signer a lease request proves, or a 403 logged with the caller's node id. */
			admit(ctx: Context, action: ProofAction, proof: string, context: Omit<ProofContext, "callerNode">): Promise<ProvenSigner> {
				const local = !ctx.nodeID || ctx.nodeID === this.broker.nodeID;
				return this.logRefusal(ctx, action, () => this.signers.check(action, proof, { ...context, callerNode: local ? null : ctx.nodeID! }));
			},
			/** Runs a check; a refusal (403) is logged with the caller's node id. */
			async logRefusal<T>(ctx: Context, action: ProofAction, check: () => Promise<T>): Promise<T> {
				try {
					return await check();
				} catch (err) {
					if (err instanceof SignerRefusedError || err instanceof BatchRefusedError) this.logger.warn(`Refused keyring.${action} from node ${ctx.nodeID ?? this.broker.nodeID}: ${err.message}`);
					throw err;
				}
			},
			/**
			 * Records checks lease tokens with the authority key's public half: KEYRING_PUBLIC_KEY must
			 * be it, and it is written where records nodes sharing DATA_DIR (or a volume) find it.
			 */
			publishAuthority(): void {
				const { authority } = this.keyring;
				const { publicKey, publicKeyFile } = this.settings;
				if (publicKey && parseAuthorityKey(publicKey, "KEYRING_PUBLIC_KEY").kid !== authority.kid)
					throw new TrustAnchorError(`KEYRING_PUBLIC_KEY is not this keyring's public key, which is ${authority.publicJwk.x} (from its master key): records would refuse every lease token. Set it to what \`npm run signer -- authority\` prints`);
				try {
					publishAuthority(authority, publicKey ? null : publicKeyFile);
					this.logger.info(`Lease tokens are signed with the keyring key ${authority.publicJwk.x}${publicKey ? " (KEYRING_PUBLIC_KEY)" : publicKeyFile ? `, published in ${publicKeyFile}` : ""}`);
				} catch (err) {
					this.logger.warn(`Could not write the keyring's public key to ${publicKeyFile} (${(err as Error).message}): records nodes that do not run in this process need KEYRING_PUBLIC_KEY=${authority.publicJwk.x}`);
				}
			},
			/** The `role` credential shared through DATA_DIR (or SIGNER_KEY_FILE / BATCHER_KEY_FILE), enrolled by itself the first time. */
			async enrolLocal(role: CredentialRole): Promise<void> {
				const where = this.settings.enrolLocal[role];
				if (where === null) return;
				const credential = where === "" ? localCredential("", role) : credentialFile(where, true);
				const outcome = await this.store.enrol(role, { name: credential.name, publicJwk: credential.publicJwk, enrolledAt: new Date().toISOString(), revokedAt: null });
				if (outcome === "enrolled") this.logger.info(`Enrolled the ${role} credential "${credential.name}" of ${credential.source}`);
				else if (outcome === "name-taken") this.logger.warn(`The ${role} credential "${credential.name}" of ${credential.source} is revoked (or its name taken by another key): ${role}s using it are refused. Delete the file to have a new one made and enrolled.`);
			}
		},
		events: {
			// A signer that left cannot use a key: do not grant it one it waited for.
			"$node.disconnected"(ctx: Context<{ node: { id: string } }>) {
				const dropped = this.keyring?.dropWaiters(ctx.params.node.id) ?? 0;
				if (dropped) this.logger.info(`Node ${ctx.params.node.id} left: turned away its ${dropped} waiting acquire(s)`);
			},
			/**
			 * A second active keyring can only appear after a partition or a paused process healed.
			 * Both sides stop granting at once; restarted, they elect one again.
			 */
			"$services.changed"() {
				if (this.election?.state !== "active" || this.fencedBy) return;
				const [rival] = otherKeyringNodes(this.broker, ["keyring"]);
				if (!rival) return;
				this.fencedBy = rival;
				this.election.fence();
				// Renewals and acquires (waiting ones too) are turned away; releases keep working.
				void this.keyring?.fence(() => new Errors.MoleculerRetryableError(`This keyring no longer grants or renews leases: keyring node '${rival}' is active too`, 503, "KEYRING_CONFLICT", { other: rival }));
				this.logger.error(`Keyring node '${rival}' is active too: this keyring stops granting and renewing leases now. Two keyrings must never both grant; restart one of them alone.`);
				// Under moleculer-runner the process ends, so a supervisor can restart it into a fresh election.
				if ((this.broker as { runner?: unknown }).runner) void this.broker.stop().finally(() => process.exit(1));
			}
		},
		async started() {
			// Proofs are dated by the signers' wall clocks: checked against this machine's, whatever clock the leases run on.
			this.signers = new CredentialGate(this.store, "signer", systemClock);
			this.batchers = new CredentialGate(this.store, "batcher", systemClock);
			await this.enrolLocal("signer");
			await this.enrolLocal("batcher");
			this.keyring = await Keyring.open(this.settings, {
				store: this.store,
				storeName: describeStore(this.settings, "keyring"),
				identity: { holder: this.broker.nodeID, host: os.hostname(), pid: process.pid },
				logger: this.logger,
				clock: deps.clock,
				emit: (event, payload) => {
					this.broker.emit(event, payload).catch(err => this.logger.warn(`Could not emit ${event}: ${(err as Error).message}`));
				}
			});
			this.publishAuthority();
		},
		async stopped() {
			// Runs before the mixin closes the stores: the change in progress finishes first.
			await this.keyring?.close();
		}
	};
	return schema as unknown as ServiceSchema;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) => createKeyringService(serviceSettings(appConfig()).keyring);
