/**
 * Random bytes from a pool: one `randomFillSync` of 4 KiB serves a few hundred requests for a
 * handful of bytes (proof ids, key-wrap keys and IVs), where a call each cost a system call of
 * several microseconds, several times per lease. The bytes are the same CSPRNG's, and each is
 * handed out once and wiped from the pool (node:crypto's `randomUUID` keeps a pool the same way).
 */
import { randomFillSync } from "node:crypto";

const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let offset = POOL_BYTES;

/** `size` fresh random bytes (at most the pool's size), in a buffer of their own. */
export function randomBytesPooled(size: number): Buffer {
	if (size > POOL_BYTES) throw new RangeError(`at most ${POOL_BYTES} pooled random bytes`);
	if (offset + size > POOL_BYTES) {
		randomFillSync(pool);
		offset = 0;
	}
	const bytes = Buffer.from(pool.subarray(offset, offset + size));
	pool.fill(0, offset, offset + size);
	offset += size;
	return bytes;
}
