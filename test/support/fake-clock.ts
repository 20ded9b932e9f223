/**
 * A clock a test moves by hand: `sleep` and `every` fire only when `advance` passes their
 * time, so renewals, retries and backoffs are checked without waiting and without flakiness.
 */
import type { Clock } from "../../src/clock";

interface Timer {
	at: number;
	fire(): void;
	/** Repeats every `every` ms until cancelled. */
	every?: number;
	cancelled?: boolean;
}

/** Lets every pending promise callback (and the ones they queue) run. */
export async function settle(rounds = 20): Promise<void> {
	for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

export class FakeClock implements Clock {
	private current: number;
	private readonly timers: Timer[] = [];

	constructor(start = Date.parse("2026-01-01T00:00:00.000Z")) {
		this.current = start;
	}

	now(): number {
		return this.current;
	}

	sleep(ms: number): Promise<void> {
		return new Promise((resolve) => this.timers.push({ at: this.current + ms, fire: resolve }));
	}

	every(ms: number, tick: () => void): () => void {
		const timer: Timer = { at: this.current + ms, fire: tick, every: ms };
		this.timers.push(timer);
		return () => {
			timer.cancelled = true;
		};
	}

	after(ms: number, fire: () => void): () => void {
		const timer: Timer = { at: this.current + ms, fire };
		this.timers.push(timer);
		return () => {
			timer.cancelled = true;
		};
	}

	/** Timers waiting to fire (cancelled ones left out). */
	get pending(): number {
		return this.timers.filter((t) => !t.cancelled).length;
	}

	/** Moves time forward by `ms`, firing each due timer in time order and letting its effects settle. */
	async advance(ms: number): Promise<void> {
		const target = this.current + ms;
		for (;;) {
			const due = this.timers
				.filter((t) => !t.cancelled && t.at <= target)
				.sort((a, b) => a.at - b.at)[0];
			if (!due) break;
			this.current = due.at;
			if (due.every) due.at += due.every;
			else this.timers.splice(this.timers.indexOf(due), 1);
			due.fire();
			await settle();
		}
		this.current = target;
		await settle();
	}
}

/** Moves `clock` forward `stepMs` at a time until `promise` settles (at most `maxMs`), then returns its value. */
export async function advanceUntil<T>(
	clock: FakeClock,
	promise: Promise<T>,
	stepMs = 100,
	maxMs = 600_000,
): Promise<T> {
	let settled = false;
	const watched = promise.finally(() => {
		settled = true;
	});
	watched.catch(() => undefined);
	for (let moved = 0; !settled && moved < maxMs; moved += stepMs) await clock.advance(stepMs);
	return watched;
}
