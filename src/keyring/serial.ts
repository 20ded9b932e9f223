/**
 * One mutation at a time: every change of the lease state runs through `run`, in call
 * order, so memory and store move together and no two steps interleave their writes.
 */
export class Serial {
	private tail: Promise<unknown> = Promise.resolve();

	run<T>(step: () => Promise<T> | T): Promise<T> {
		const result = this.tail.then(step);
		// The queue keeps going whatever a step throws; the caller gets the failure.
		this.tail = result.catch(() => undefined);
		return result;
	}

	/** Resolves once every step queued so far has finished. */
	drain(): Promise<void> {
		return this.run(() => undefined);
	}
}
