/**
 * A part of the work that is always done, which the benchmark alone stops, in its own process,
 * for one run: to measure what it costs against the same run without it (`npm run bench`). No
 * configuration, variable or action reaches a switch: only code in the benchmark's process.
 */
export class BenchSwitch {
	on = true;

	/** Runs `work` with the switch off in this process, and turns it back on. */
	async without<T>(work: () => Promise<T>): Promise<T> {
		this.on = false;
		try {
			return await work();
		} finally {
			this.on = true;
		}
	}
}
