/**
 * Time as the services' logic sees it: the system clock in production, a clock a unit test
 * moves by hand (test/support/fake-clock.ts) when it checks renewals, retries or waits.
 */
export interface Clock {
	now(): number;
	/** Resolves after `ms`; never keeps the process alive on its own. */
	sleep(ms: number): Promise<void>;
	/** Calls `tick` every `ms` until the returned function is called. */
	every(ms: number, tick: () => void): () => void;
	/** Calls `fire` once after `ms`, unless the returned function is called first. */
	after(ms: number, fire: () => void): () => void;
}

/** Resolves after `ms` (an aborted `signal` ends it early). Keeps the process alive meanwhile. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
	return new Promise((resolve) => {
		if (signal?.aborted) return resolve();
		const timer = setTimeout(done, ms);
		function done() {
			clearTimeout(timer);
			signal?.removeEventListener("abort", done);
			resolve();
		}
		signal?.addEventListener("abort", done, { once: true });
	});
}

export const systemClock: Clock = {
	now: () => Date.now(),
	sleep: (ms) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref()),
	every(ms, tick) {
		const timer = setInterval(tick, ms);
		timer.unref();
		return () => clearInterval(timer);
	},
	after(ms, fire) {
		const timer = setTimeout(fire, ms);
		timer.unref();
		return () => clearTimeout(timer);
	},
};
