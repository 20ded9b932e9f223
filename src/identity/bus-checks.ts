/**
 * The bus checks (dispatch tickets, lease tokens and store proofs, close proofs, batches
 * counted from what records holds) are always on. The benchmark alone turns them off, in its
 * own process, for one run: to measure what they cost against the same run without them
 * (`npm run bench`, `checksCost`). No configuration, variable or action reaches this switch.
 */
export const busChecks = { on: true };

/** Runs `work` with the checks off in this process, and turns them back on. */
export async function withoutBusChecks<T>(work: () => Promise<T>): Promise<T> {
	busChecks.on = false;
	try {
		return await work();
	} finally {
		busChecks.on = true;
	}
}
