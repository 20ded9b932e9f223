/**
 * The keyring role in a store: at most one keyring may grant leases from a store, whatever
 * coordination missed (two `npm start` on one MongoDB, a keyring pod force-deleted while its
 * node still runs). A keyring claims the role with an increasing fencing number (the epoch),
 * atomically in the store, renews it while it runs, and gives it up when it stops; every
 * grant and end it writes is conditional on its epoch. A claim that expired, or whose process
 * is gone from this machine, is taken over; a live one refuses the newcomer, naming its holder.
 */
import type { Clock } from "../clock";
import { processAlive } from "../process-alive";
import type { KeyringStore, RoleHolder } from "./store";

export interface RoleIdentity {
	/** Node id of this keyring. */
	holder: string;
	host: string;
	pid: number;
}

export class KeyringRoleHeldError extends Error {
	constructor(
		readonly heldBy: RoleHolder,
		store: string,
	) {
		super(
			`The keyring store ${store} is in use by another keyring (pid ${heldBy.pid} on ${heldBy.host}, node ${heldBy.holder}, since ${heldBy.since}, its claim valid until ${heldBy.expiresAt} unless renewed). ` +
				"Two keyrings must never grant leases from one store: stop that one first, or read the store through it over NATS (TRANSPORTER).",
		);
		this.name = "KeyringRoleHeldError";
	}
}

export class KeyringRole {
	private stopRenewing: (() => void) | null = null;

	private constructor(
		private readonly store: KeyringStore,
		private readonly clock: Clock,
		private readonly ttlMs: number,
		readonly claimed: RoleHolder,
	) {}

	/** The fencing number every write of this keyring carries. */
	get epoch(): number {
		return this.claimed.epoch;
	}

	/** Takes the role in `store` or throws a KeyringRoleHeldError naming the live holder. */
	static async claim(
		store: KeyringStore,
		storeName: string,
		me: RoleIdentity,
		ttlMs: number,
		clock: Clock,
	): Promise<KeyringRole> {
		const now = clock.now();
		const outcome = await store.claimRole({
			...me,
			now: new Date(now).toISOString(),
			expiresAt: new Date(now + ttlMs).toISOString(),
			mayTakeOver: (current) =>
				Date.parse(current.expiresAt) <= now ||
				// A process of this machine that is gone (kill -9, a crash) cannot be granting: no need to wait out its claim.
				(current.host === me.host && current.pid !== me.pid && !processAlive(current.pid)),
		});
		if ("heldBy" in outcome) throw new KeyringRoleHeldError(outcome.heldBy, storeName);
		return new KeyringRole(store, clock, ttlMs, outcome.claimed);
	}

	/**
	 * Renews the claim every third of its lifetime; `onLost` is told once if another keyring took
	 * the role meanwhile. A renewal that fails on the store's side is tried again at the next tick.
	 */
	keepRenewing(onLost: () => void, onError: (err: Error) => void): void {
		this.stopRenewing = this.clock.every(Math.max(50, Math.floor(this.ttlMs / 3)), () => {
			this.store
				.renewRole(this.epoch, new Date(this.clock.now() + this.ttlMs).toISOString())
				.then(
					(held) => {
						if (held) return;
						this.stopRenewing?.();
						this.stopRenewing = null;
						onLost();
					},
					(err) => onError(err as Error),
				);
		});
	}

	/** Stops renewing and gives the role up, so the next keyring need not wait for it to expire. */
	async release(): Promise<void> {
		this.stopRenewing?.();
		this.stopRenewing = null;
		await this.store.releaseRole(this.epoch, new Date(this.clock.now()).toISOString());
	}
}
