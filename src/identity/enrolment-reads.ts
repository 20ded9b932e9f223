/**
 * When a service reads the keyring's enrolled credentials again (docs/design.md §6.1): at most
 * every REFRESH_MS, so a revocation takes effect within 5 s, and at once when a credential is
 * not among those read (at most once a second, so a stranger's names cannot make it read the
 * store on every request), so a credential just enrolled is believed at once. One read at a
 * time: a lookup that misses while a read is under way waits for that read rather than refuse
 * beside it (every node that reads a rotated key file asks with it in the same moment). The
 * keyring's credential gate and records' batcher keys both read this way, and records reads the
 * keyring's revoked keys so (`refreshIfStale`: in the background, a piece waits for no read).
 */
export const REFRESH_MS = 5_000;
const MISS_LOOKUP_MS = 1_000;

export class EnrolmentReads {
	#loadedAt = -Infinity;
	#missedAt = -Infinity;
	#reading: Promise<void> | null = null;
	readonly #load: () => Promise<void>;
	readonly #now: () => number;

	/** `load` reads the enrolments into its owner's memory. */
	constructor(load: () => Promise<void>, now: () => number) {
		this.#load = load;
		this.#now = now;
	}

	/** Reads them now (or joins the read under way). */
	read(): Promise<void> {
		// A read that failed is tried again by the next lookup, not REFRESH_MS later.
		this.#reading ??= this.#load()
			.then(() => void (this.#loadedAt = this.#now()))
			.finally(() => (this.#reading = null));
		return this.#reading;
	}

	/** Starts a read without waiting for it once the last one is REFRESH_MS old or more. */
	refreshIfStale(): void {
		if (this.#now() - this.#loadedAt >= REFRESH_MS) void this.read().catch(() => undefined);
	}

	/** Resolves once the read under way, if any, has ended. */
	async settled(): Promise<void> {
		await this.#reading?.catch(() => undefined);
	}

	/** What `find` finds in the enrolments: read again first when stale, or when it finds nothing in those read before. */
	async find<T>(find: () => T | undefined): Promise<T | undefined> {
		if (this.#now() - this.#loadedAt > REFRESH_MS) {
			await this.read();
			return find();
		}
		let found = find();
		if (found !== undefined) return found;
		if (this.#reading) {
			await this.#reading;
			found = find();
			if (found !== undefined) return found;
		}
		if (this.#now() - this.#missedAt <= MISS_LOOKUP_MS) return undefined;
		this.#missedAt = this.#now();
		await this.read();
		return find();
	}
}
