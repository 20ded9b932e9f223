/**
 * signer: stateless, many replicas. `signBatch` leases a key, signs every record of the
 * batch with it, stores the signatures through `records`, and only then releases the lease.
 * The batch's life is src/signer/signer.ts; this file wires it to the broker.
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { systemClock } from "../src/clock";
import { appConfig } from "../src/config";
import {
	signBatchParams,
	type Lease,
	type SignBatchParams,
	type SignBatchResult,
} from "../src/contract";
import { LeaseKeyOpener } from "../src/keyring/key-transport";
import { LeaseSecret } from "../src/signer/lease-secret";
import { Token, type TokenKeyRef } from "../src/pkcs11/token";
import { busChecks } from "../src/identity/bus-checks";
import { transparencyLogs } from "../src/tlog/log-switch";
import { CredentialSource } from "../src/identity/credential";
import { RequestMacKey } from "../src/identity/request-mac";
import { checkTicketForBatch } from "../src/identity/ticket";
import { loggedRefusal } from "../src/errors";
import { serviceSettings, type SignerSettings } from "../src/settings";
import { SignPool, type PoolKey } from "../src/signer/sign-pool";
import { faultFromEnv } from "../src/signer/faults";
import { Signer } from "../src/signer/signer";
import { batchCallsOnBus } from "../src/signer/signer-bus";

interface SignerVars {
	keys: LeaseKeyOpener;
	/** Its credential, read again when its file changes: each batch keeps the one it began with (§6.1). */
	credentials: CredentialSource;
	/** Its request MAC key for the keyring, once it knows the keyring's key (docs/design.md §6.9). */
	macKey: RequestMacKey;
	pool: SignPool;
	signer: Signer<PoolKey>;
	/** KEY_STORE=pkcs11: the token, checked at start and held while the signing threads use it. */
	token: Token | null;
}

/** Prometheus name signing_lease_release_failures_total: releases lost (the lease then expires). */
const RELEASE_FAILURES = "signing.lease.release.failures";

/** The schema, typed for its own settings, methods and vars. */
export type SignerSchema = ServiceSchema<
	SignerSettings & { $secureSettings: string[] },
	Record<string, never>,
	SignerVars
>;

export function createSignerService(settings: SignerSettings): SignerSchema {
	const schema: SignerSchema = {
		name: "signer",
		// Service settings travel to every node in INFO packets: the credential and the token's PIN must not.
		settings: { ...settings, $secureSettings: ["credential", "token"] },
		actions: {
			signBatch: {
				params: signBatchParams,
				handler(ctx: Context<SignBatchParams>): Promise<SignBatchResult> {
					// A batch the batcher did not send to this node is refused before any lease is asked for.
					try {
						if (busChecks.on)
							checkTicketForBatch(ctx.params.ticket, ctx.params, this.broker.nodeID);
					} catch (err) {
						throw loggedRefusal(
							err,
							this.logger,
							`signer.signBatch of batch ${ctx.params.batchId}`,
							ctx.nodeID ?? this.broker.nodeID,
						);
					}
					// The batch's lease is acquired, renewed, released and stored under this one credential,
					// the one its lease token binds (cnf), even if the credential is rotated meanwhile.
					const credential = this.credentials.current();
					const calls = batchCallsOnBus({
						request: ctx,
						node: this.broker.nodeID,
						ticket: ctx.params.ticket,
						sessionKey: this.keys.session.publicJwk,
						credential,
						macKey: this.macKey.current(credential),
					});
					return this.signer.signBatch(ctx.params, calls);
				},
			},
			/** The batches this node is working on: the batcher asks, to find a batch lost in transit. */
			inFlight: {
				handler(): { batchIds: string[] } {
					return { batchIds: this.signer.batchIds() };
				},
			},
		},
		async started() {
			// Who this signer is to the keyring: a credential it enrolled (src/identity/credential.ts).
			this.credentials = new CredentialSource(this.settings.credential, {
				switched: (next, previous) =>
					this.logger.info(
						`Signer credential rotated: new batches use "${next.name}" from ${next.source}; batches under "${previous.name}" keep it to their end`,
					),
				unreadable: (err) =>
					this.logger.warn(
						`Keeping the signer credential in use: its file changed but ${err.message}`,
					),
			});
			this.macKey = new RequestMacKey("signer", this.settings.trust);
			const credential = this.credentials.current();
			this.logger.info(`Signer credential "${credential.name}" from ${credential.source}`);
			// A fresh X25519 session key per process: leased private keys are sealed to it and to nothing else.
			this.keys = new LeaseKeyOpener();
			// KEY_STORE=pkcs11: a module, token or PIN that does not work stops the node here, naming the variable.
			this.token = this.settings.token ? await Token.open(this.settings.token) : null;
			if (this.token)
				this.logger.info(
					`Signing in token "${this.token.settings.tokenLabel}" of ${this.token.settings.module}, a session per signing thread`,
				);
			this.pool = new SignPool(
				this.settings.signingThreads || undefined,
				this.settings.token,
			);
			const metrics = this.broker.isMetricsEnabled() ? this.broker.metrics : null;
			metrics?.register({
				type: "counter",
				name: RELEASE_FAILURES,
				description: "Lease releases that failed; the lease waited for its expiry",
				unit: "lease",
			});
			const afterStore = faultFromEnv(process.env.SIGNER_FAULT, (line) =>
				this.logger.warn(line),
			);
			this.signer = new Signer<PoolKey>(this.settings, {
				nodeID: this.broker.nodeID,
				// A software lease's key, opened into libsodium's guarded memory, lives until its batch is
				// signed (or fails to be): wiped then, before the signatures are stored and the lease
				// released. A token lease's key is a reference: the threads sign in the token.
				keys: {
					open: async (lease) =>
						this.token ? tokenKeyOf(lease) : this.keys.openSecret(lease),
					// With the bus checks, the signing threads also hash what the store proofs sign, and
					// with records in this process, the signatures' leaves in its log (it takes them by
					// the pieces' identity: src/tlog/piece-leaves.ts).
					sign: (key, keyId, records, deadline, storedUnder) =>
						this.pool
							.sign(key, keyId, records, deadline, {
								groups: busChecks.on,
								leaves:
									transparencyLogs.on && this.broker.getLocalService("records")
										? storedUnder
										: undefined,
							})
							.finally(() => {
								if (key instanceof LeaseSecret) key.dispose();
							}),
				},
				clock: systemClock,
				logger: this.logger,
				nodeStopping: () => this.broker.stopping,
				onReleaseFailed: () => metrics?.increment(RELEASE_FAILURES),
				...(afterStore ? { afterStore } : {}),
			});
		},
		async stopped() {
			// Each batch ends by the drain deadline (signed, or handed back) and releases its lease
			// while the transport is still up; the pool goes only after that.
			await this.signer?.stop();
			await this.pool?.destroy();
			this.token?.close();
		},
	};
	return schema;
}

/** The token key a lease grants; a software lease carries a sealed key this signer cannot sign with. */
function tokenKeyOf(lease: Lease): TokenKeyRef {
	if (!lease.tokenKey)
		throw new Error(
			`lease ${lease.leaseId} carries a sealed software key, but this signer has KEY_STORE=pkcs11: the keyring and its signers need the same KEY_STORE`,
		);
	return lease.tokenKey;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) => createSignerService(serviceSettings(appConfig()).signer);
