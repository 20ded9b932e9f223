/**
 * signer: stateless, many replicas. `signBatch` leases a key, signs every record of the
 * batch with it, stores the signatures through `records`, and only then releases the lease.
 * The batch's life is src/signer/signer.ts; this file wires it to the broker.
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { systemClock } from "../src/clock";
import { appConfig } from "../src/config";
import { Actions, call, signBatchParams, type SignBatchParams, type SignBatchResult } from "../src/contract";
import { LeaseKeyOpener } from "../src/keyring/key-transport";
import type { SigningKey } from "../src/signer/jws";
import { serviceSettings } from "../src/settings";
import { SignPool } from "../src/signer/sign-pool";
import { Signer, type BatchCalls, type SignerOptions } from "../src/signer/signer";

interface SignerVars {
	keys: LeaseKeyOpener;
	pool: SignPool;
	signer: Signer<SigningKey>;
}

/** Every call of one batch goes out under the request that carries it. */
function batchCalls(ctx: Context, keys: LeaseKeyOpener): BatchCalls {
	return {
		storeSignatures: batch => call(ctx, Actions.records.storeSignatures, batch),
		acquire: (waitMs, timeout) => call(ctx, Actions.keyring.acquire, { holder: ctx.broker.nodeID, sessionKey: keys.session.publicJwk, waitMs }, { timeout }),
		renew: (leaseId, timeout) => call(ctx, Actions.keyring.renew, { leaseId }, { timeout }),
		release: (leaseId, timeout) => call(ctx, Actions.keyring.release, { leaseId }, { timeout })
	};
}

export function createSignerService(settings: SignerOptions): ServiceSchema {
	const schema: ServiceSchema<SignerOptions, Record<string, never>, SignerVars> = {
		name: "signer",
		settings,
		actions: {
			signBatch: {
				params: signBatchParams,
				handler(ctx: Context<SignBatchParams>): Promise<SignBatchResult> {
					return this.signer.signBatch(ctx.params, batchCalls(ctx, this.keys));
				}
			}
		},
		async started() {
			// A fresh X25519 session key per process: leased private keys are sealed to it and to nothing else.
			this.keys = new LeaseKeyOpener();
			this.pool = new SignPool(this.settings.signingThreads || undefined);
			this.signer = new Signer<SigningKey>(this.settings, {
				nodeID: this.broker.nodeID,
				keys: { open: lease => this.keys.open(lease), sign: (key, keyId, records, deadline) => this.pool.sign(key, keyId, records, deadline) },
				clock: systemClock,
				logger: this.logger,
				nodeStopping: () => this.broker.stopping
			});
		},
		async stopped() {
			// Each batch ends by the drain deadline (signed, or handed back) and releases its lease
			// while the transport is still up; the pool goes only after that.
			await this.signer?.stop();
			await this.pool?.destroy();
		}
	};
	return schema as unknown as ServiceSchema;
}

/** moleculer-runner: the settings come from the environment, assembled in src/settings.ts. */
export default (_broker: ServiceBroker) => createSignerService(serviceSettings(appConfig()).signer);
