/**
 * A signer's whole behaviour, without a broker: the life of one batch (lease a key, sign
 * every record of the batch with it, store the signatures, then release), the lease's
 * renewal while the batch runs, and the bounded drain when the node stops.
 *
 * A signer never signs after its lease's `expiresAt - leaseMarginMs` by its own clock, and a
 * batch that cannot finish hands its lease back unsigned: the batcher retries its records
 * as a new batch.
 */
import type { Clock } from "../clock";
import type {
	Lease,
	LeaseChange,
	RecordPayload,
	SignBatchParams,
	SignBatchResult,
	StoreSignaturesParams,
	StoreSignaturesResult,
} from "../contract";
import { piecesOf, TRANSFER_CHUNK } from "../identity/batch-digest";
import { rememberLeafHashes } from "../tlog/piece-leaves";
import type { SignedBatch } from "./sign-pool";

export interface SignerOptions {
	leaseTtlMs: number;
	leaseMarginMs: number;
	acquireWaitMs: number;
	/** Once the node is stopping, how long batches in flight may still sign. */
	shutdownDrainMs: number;
	/** How long a release may take; the keyring reclaims an unreleased lease at expiry anyway. */
	releaseTimeoutMs: number;
	/** How long storing one piece of signatures may take before the batch is given up (the batcher then settles it from what is stored). */
	storeTimeoutMs: number;
	/** Signing threads; 0 = one per core. */
	signingThreads: number;
}

/**
 * Signatures per records.storeSignatures call (TRANSFER_CHUNK). Over NATS a message must fit
 * the server's max_payload (1 MB by default; ~200 bytes per signature): a large batch's
 * signatures go in pieces, and a batch of the usual size in one bulk call. The dispatch
 * ticket and the lease token name each piece's record ids, so the pieces are cut the same way.
 */
export { TRANSFER_CHUNK };

/**
 * The calls one batch makes, bound to the request that carries it. `signal` aborts the call
 * (the node stopping after its drain): none may keep a stopping node waiting.
 */
export interface BatchCalls {
	/** Stores one piece under the lease token; the call adds the holder's store proof. */
	storeSignatures(
		batch: Omit<StoreSignaturesParams, "proof">,
		timeoutMs: number,
		signal: AbortSignal,
	): Promise<StoreSignaturesResult>;
	/** Asks for a lease for this batch (the call carries its dispatch ticket). */
	acquire(waitMs: number, timeoutMs: number, signal: AbortSignal): Promise<Lease>;
	/** Renews the lease, handing in its current token for a fresh one. */
	renew(
		leaseId: string,
		token: string,
		timeoutMs: number,
		signal: AbortSignal,
	): Promise<LeaseChange>;
	release(leaseId: string, timeoutMs: number, signal: AbortSignal): Promise<LeaseChange>;
}

/**
 * Opens a lease's sealed key and signs records with it, chunk by chunk, within a deadline; the
 * batch and lease they will be stored under let it hash their leaves in the signature log.
 */
export interface SigningKeys<K> {
	open(lease: Lease): Promise<K>;
	sign(
		key: K,
		keyId: string,
		records: RecordPayload[],
		deadline: () => number,
		storedUnder: { batchId: string; leaseId: string },
	): Promise<SignedBatch>;
}

export interface SignerLogger {
	info(...args: unknown[]): void;
	warn(...args: unknown[]): void;
}

export interface SignerDeps<K> {
	/** This signer's node id: the holder of its leases. */
	nodeID: string;
	keys: SigningKeys<K>;
	clock: Clock;
	logger: SignerLogger;
	/** True once the node is shutting down, before the service's own stop runs. */
	nodeStopping(): boolean;
	/** Told of each release that failed (the lease then waits for its expiry). */
	onReleaseFailed?(): void;
	/** Test-only fault injection between storing a batch's signatures and replying (src/signer/faults.ts). */
	afterStore?(batchId: string): Promise<void>;
}

/** The error type of a call failed by a NATS reconnect (src/broker/lost-requests.ts): it may never have arrived. */
const LOST_IN_RECONNECT = "REQUEST_REJECTED";

export class SignerStoppingError extends Error {
	constructor(nodeID: string) {
		super(`Signer ${nodeID} is stopping; the batch is handed back unsigned`);
		this.name = "SignerStoppingError";
	}
}

export class Signer<K = unknown> {
	/** Batches being signed now, by id: what `signer.inFlight` answers the batcher. */
	private readonly inFlight = new Map<string, Promise<SignBatchResult>>();
	private stoppingSince: number | null = null;
	/** Aborted once a stop has waited its drain out: the calls still waiting give up. */
	private readonly aborts = new AbortController();

	constructor(
		private readonly options: SignerOptions,
		private readonly deps: SignerDeps<K>,
	) {}

	private get clock(): Clock {
		return this.deps.clock;
	}

	/** Batches being signed now. */
	get busy(): number {
		return this.inFlight.size;
	}

	/** The ids of the batches being signed now. */
	batchIds(): string[] {
		return [...this.inFlight.keys()];
	}

	/** Lease, sign, store, release: the whole life of one batch on this signer. */
	signBatch(
		params: Omit<SignBatchParams, "ticket">,
		calls: BatchCalls,
	): Promise<SignBatchResult> {
		const batch = this.runBatch(params, calls);
		this.inFlight.set(params.batchId, batch);
		const forget = () => {
			if (this.inFlight.get(params.batchId) === batch) this.inFlight.delete(params.batchId);
		};
		batch.then(forget, forget);
		return batch;
	}

	/** No deadline while running; once the node is stopping, `shutdownDrainMs` from then. */
	drainDeadline(): number {
		if (this.stoppingSince === null) {
			if (!this.deps.nodeStopping()) return Infinity;
			this.stoppingSince = this.clock.now();
		}
		return this.stoppingSince + this.options.shutdownDrainMs;
	}

	/** The node is stopping: batches in flight get the drain to finish, new ones none. */
	beginStop(): void {
		this.stoppingSince ??= this.clock.now();
	}

	/**
	 * Waits until every batch in flight has finished or handed its lease back (bounded), then
	 * gives up the calls still waiting (a reply lost in an outage), so the node stops now.
	 */
	async stop(): Promise<void> {
		this.beginStop();
		if (!this.inFlight.size) return;
		this.deps.logger.info(
			`Stopping: waiting for ${this.inFlight.size} batch(es) in flight to finish or hand back their leases`,
		);
		const settled = Promise.allSettled([...this.inFlight.values()]);
		// The drain, plus a moment for the releases that follow it.
		await Promise.race([settled, this.clock.sleep(this.options.shutdownDrainMs + 2_000)]);
		if (!this.inFlight.size) return;
		this.aborts.abort(new Error("the signer is stopping"));
		await Promise.race([settled, this.clock.sleep(1_000)]);
	}

	private async runBatch(
		{ batchId, records }: Omit<SignBatchParams, "ticket">,
		calls: BatchCalls,
	): Promise<SignBatchResult> {
		const { signal } = this.aborts;
		const asked = this.clock.now();
		const lease = await calls.acquire(
			this.options.acquireWaitMs,
			this.options.acquireWaitMs + 10_000,
			signal,
		);
		const leaseWaitMs = this.clock.now() - asked;
		const held = this.holdLease(lease, calls);
		try {
			if (this.clock.now() >= this.drainDeadline())
				throw new SignerStoppingError(this.deps.nodeID);
			const key = await this.deps.keys.open(lease);
			const { signed, groups, leafHashes } = await this.deps.keys.sign(
				key,
				lease.keyId,
				records,
				() => Math.min(held.deadline(), this.drainDeadline()),
				{ batchId, leaseId: lease.leaseId },
			);
			const pieces = piecesOf(signed, groups);
			if (leafHashes)
				rememberLeafHashes(
					pieces,
					{ keyId: lease.keyId, batchId, leaseId: lease.leaseId },
					leafHashes,
				);
			const stored: StoreSignaturesResult = { stored: 0, duplicates: 0 };
			for (const part of pieces) {
				const result = await calls.storeSignatures(
					{
						batchId,
						keyId: lease.keyId,
						leaseId: lease.leaseId,
						signatures: part,
						token: held.token(),
					},
					this.options.storeTimeoutMs,
					signal,
				);
				stored.stored += result.stored;
				stored.duplicates += result.duplicates;
			}
			await this.deps.afterStore?.(batchId);
			return {
				batchId,
				keyId: lease.keyId,
				leaseId: lease.leaseId,
				signer: this.deps.nodeID,
				stored: stored.stored,
				duplicates: stored.duplicates,
				leaseWaitMs,
			};
		} finally {
			held.stop();
			// Bounded: a release lost in a NATS outage must not hold the batch (the keyring reclaims at
			// expiry). One failed by a reconnect (maybe never delivered) is sent once more: an end
			// already applied is taken as done.
			const release = () =>
				calls.release(lease.leaseId, this.options.releaseTimeoutMs, signal);
			await release()
				.catch((err) =>
					(err as { type?: string }).type === LOST_IN_RECONNECT
						? release()
						: Promise.reject(err),
				)
				.catch((err) => {
					this.deps.onReleaseFailed?.();
					this.deps.logger.warn(
						`Release of lease ${lease.leaseId} failed; the keyring reclaims it at expiry: ${(err as Error).message}`,
					);
				});
		}
	}

	/** Renews the lease while the batch runs; the deadline is its expiry minus the margin, the token the latest one. */
	private holdLease(
		lease: Lease,
		calls: BatchCalls,
	): { deadline(): number; token(): string; stop(): void } {
		let expiresAt = Date.parse(lease.expiresAt);
		let token = lease.token;
		const everyMs = Math.max(50, Math.floor(this.options.leaseTtlMs / 3));
		const stop = this.clock.every(everyMs, () => {
			// A renewal answered after a whole TTL is worth nothing (one lost in a NATS outage never is).
			calls
				.renew(lease.leaseId, token, this.options.leaseTtlMs, this.aborts.signal)
				.then((change) => {
					if (change.changed && change.expiresAt)
						expiresAt = Date.parse(change.expiresAt);
					if (change.changed && change.token) token = change.token;
				})
				.catch((err) =>
					this.deps.logger.warn(
						`Renewal of lease ${lease.leaseId} failed: ${(err as Error).message}`,
					),
				);
		});
		return { deadline: () => expiresAt - this.options.leaseMarginMs, token: () => token, stop };
	}
}
