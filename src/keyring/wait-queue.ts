/**
 * The callers waiting for a key, in the order they asked (FIFO), each with its time limit.
 * The keyring serves the oldest first whenever a key is free; a caller whose node left, or
 * whose limit passed, is turned away with a clear 503.
 */
import type { LeaseDoc } from "../contract";

export interface Grant {
	lease: LeaseDoc;
	waitMs: number;
}

export interface Waiter {
	holder: string;
	since: number;
	limitMs: number;
	/** Cancels the wait's time limit. */
	timer: (() => void) | null;
	resolve(grant: Grant): void;
	reject(err: Error): void;
}

export class WaitQueue {
	/** A Set keeps insertion order and deletes in O(1). */
	private readonly waiters = new Set<Waiter>();

	get size(): number {
		return this.waiters.size;
	}

	add(waiter: Waiter): void {
		this.waiters.add(waiter);
	}

	has(waiter: Waiter): boolean {
		return this.waiters.has(waiter);
	}

	/** Takes `waiter` out of the line (its limit cancelled); false when it was not in it. */
	take(waiter: Waiter): boolean {
		if (!this.waiters.delete(waiter)) return false;
		waiter.timer?.();
		return true;
	}

	/** The oldest waiter, or undefined. */
	oldest(): Waiter | undefined {
		return this.waiters.values().next().value;
	}

	/** Turns away every waiter that `matches` with `error()`; returns how many. */
	rejectWhere(matches: (waiter: Waiter) => boolean, error: () => Error): number {
		let rejected = 0;
		for (const waiter of [...this.waiters]) {
			if (!matches(waiter)) continue;
			this.take(waiter);
			waiter.reject(error());
			rejected++;
		}
		return rejected;
	}
}
