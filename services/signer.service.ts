/**
 * signer: stateless, many replicas. `signBatch` leases a key, signs every record of the
 * batch with it, stores the signatures through `records` in one bulk call, and only then
 * releases the lease.
 *
 * On shutdown (SIGTERM) the batches in flight get `shutdownDrainMs` to finish; a batch that
 * cannot hands its lease back unsigned (the batcher retries its records as a new batch), so
 * a stopped signer never leaves a lease held.
 */
import type { Context, ServiceSchema } from "moleculer";
import { appConfig } from "../src/config";
import {
	signBatchParams,
	type Lease, type LeaseChange, type SignBatchParams, type SignBatchResult, type StoreSignaturesResult
} from "../src/contract";
import { createSessionKey, openLeaseKey } from "../src/keyring/session-key";
import type { RecordPayload } from "../src/signer/jws";
import { SignPool } from "../src/signer/sign-pool";

interface SignerSettings {
	leaseTtlMs: number;
	leaseMarginMs: number;
	acquireWaitMs: number;
	/** Once the node is stopping, how long batches in flight may still sign. */
	shutdownDrainMs: number;
}

interface SignerVars {
	session: Awaited<ReturnType<typeof createSessionKey>>;
	pool: SignPool;
	inFlight: Set<Promise<SignBatchResult>>;
	stoppingSince: number | null;
}
interface SignerMethods {
	runBatch(ctx: Context<SignBatchParams>): Promise<SignBatchResult>;
	holdLease(ctx: Context, lease: Lease): { deadline(): number; stop(): void };
	drainDeadline(): number;
	[name: string]: (...args: any[]) => any;
}

export class SignerStoppingError extends Error {
	constructor(nodeID: string) {
		super(`Signer ${nodeID} is stopping; the batch is handed back unsigned`);
		this.name = "SignerStoppingError";
	}
}

const RELEASE_TIMEOUT_MS = 10_000;

/**
 * Records per records.fetch / records.storeSignatures call. Over NATS a message must fit the
 * server's max_payload (1 MB by default; ~300 bytes per signature): a batch of any size (up
 * to 100,000) goes in pieces, and a batch of the usual size in one bulk call.
 */
const TRANSFER_CHUNK = 2_000;

function chunks<T>(items: T[], size: number): T[][] {
	const parts: T[][] = [];
	for (let i = 0; i < items.length; i += size) parts.push(items.slice(i, i + size));
	return parts;
}

const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms).unref());

const SignerService: ServiceSchema<SignerSettings, SignerMethods, SignerVars> = {
	name: "signer",
	settings: {
		leaseTtlMs: appConfig().leaseTtlMs,
		leaseMarginMs: appConfig().leaseMarginMs,
		acquireWaitMs: appConfig().acquireWaitMs,
		// Below the broker's tracking shutdownTimeout (15 s): releases go out before the transport closes.
		shutdownDrainMs: 10_000
	},
	actions: {
		signBatch: {
			params: signBatchParams,
			async handler(ctx: Context<SignBatchParams>): Promise<SignBatchResult> {
				const batch = this.runBatch(ctx);
				this.inFlight.add(batch);
				try {
					return await batch;
				} finally {
					this.inFlight.delete(batch);
				}
			}
		}
	},
	methods: {
		/** Lease, sign, store, release: the whole life of one batch on this signer. */
		async runBatch(ctx: Context<SignBatchParams>): Promise<SignBatchResult> {
			const { batchId, recordIds } = ctx.params;
			const records: RecordPayload[] = [];
			for (const ids of chunks(recordIds, TRANSFER_CHUNK)) records.push(...await ctx.call<RecordPayload[], { ids: string[] }>("records.fetch", { ids }));
			const asked = Date.now();
			const lease = await ctx.call<Lease, object>("keyring.acquire", { holder: this.broker.nodeID, sessionKey: this.session.publicJwk, waitMs: this.settings.acquireWaitMs }, { timeout: this.settings.acquireWaitMs + 10_000 });
			const leaseWaitMs = Date.now() - asked;
			const held = this.holdLease(ctx, lease);
			try {
				if (Date.now() >= this.drainDeadline()) throw new SignerStoppingError(this.broker.nodeID);
				const key = await openLeaseKey(lease.key, this.session.privateKey);
				const signed = await this.pool.sign(key, lease.keyId, records, () => Math.min(held.deadline(), this.drainDeadline()));
				const signatures = signed.map(s => ({ ...s, keyId: lease.keyId, batchId, leaseId: lease.leaseId }));
				const stored: StoreSignaturesResult = { stored: 0, duplicates: 0 };
				for (const part of chunks(signatures, TRANSFER_CHUNK)) {
					const result = await ctx.call<StoreSignaturesResult, object>("records.storeSignatures", { signatures: part });
					stored.stored += result.stored;
					stored.duplicates += result.duplicates;
				}
				return { batchId, keyId: lease.keyId, leaseId: lease.leaseId, signer: this.broker.nodeID, stored: stored.stored, duplicates: stored.duplicates, leaseWaitMs };
			} finally {
				held.stop();
				// Bounded: a release lost in a NATS outage must not hold the batch (the keyring reclaims at expiry).
				await ctx.call<LeaseChange, object>("keyring.release", { leaseId: lease.leaseId }, { timeout: RELEASE_TIMEOUT_MS })
					.catch(err => this.logger.warn(`Release of lease ${lease.leaseId} failed; the keyring reclaims it at expiry: ${(err as Error).message}`));
			}
		},

		/** No deadline while running; once the broker stops, `shutdownDrainMs` from then. */
		drainDeadline(): number {
			if (!this.broker.stopping && this.stoppingSince === null) return Infinity;
			this.stoppingSince ??= Date.now();
			return this.stoppingSince + this.settings.shutdownDrainMs;
		},

		/** Renews the lease while the batch runs; the deadline is its expiry minus the margin. */
		holdLease(ctx: Context, lease: Lease) {
			let expiresAt = Date.parse(lease.expiresAt);
			const everyMs = Math.max(50, Math.floor(this.settings.leaseTtlMs / 3));
			const timer = setInterval(() => {
				// A renewal answered after a whole TTL is worth nothing (one lost in a NATS outage never is).
				ctx.call<LeaseChange, object>("keyring.renew", { leaseId: lease.leaseId }, { timeout: this.settings.leaseTtlMs })
					.then(change => { if (change.changed && change.expiresAt) expiresAt = Date.parse(change.expiresAt); })
					.catch(err => this.logger.warn(`Renewal of lease ${lease.leaseId} failed: ${(err as Error).message}`));
			}, everyMs);
			timer.unref();
			return {
				deadline: () => expiresAt - this.settings.leaseMarginMs,
				stop: () => clearInterval(timer)
			};
		}
	},
	async started() {
		// A fresh X25519 key per process: leased private keys are sealed to it and to nothing else.
		this.session = await createSessionKey();
		this.pool = new SignPool();
		this.inFlight = new Set();
		this.stoppingSince = null;
	},
	async stopped() {
		this.drainDeadline();
		// Each batch ends by the drain deadline (signed, or handed back) and releases its lease
		// while the transport is still up; the pool goes only after that.
		if (this.inFlight?.size) {
			this.logger.info(`Stopping: waiting for ${this.inFlight.size} batch(es) in flight to finish or hand back their leases`);
			await Promise.race([Promise.allSettled([...this.inFlight]), sleep(this.settings.shutdownDrainMs + 5_000)]);
		}
		await this.pool?.destroy();
	}
};

export default SignerService;
