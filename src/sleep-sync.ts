/**
 * Blocks the calling thread for `ms`, for code that is synchronous by nature (a SQLite
 * transaction, a PKCS#11 login) and waits only when another process holds what it needs.
 * Erasable TypeScript, so a signing thread loads it straight from the sources.
 */
export function sleepSync(ms: number): void {
	Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
