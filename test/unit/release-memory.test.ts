/**
 * releaseMemory (src/release-memory.ts) returns the pages of a heap that grew and emptied: what
 * `npm start` and the benchmark do between a run and its audit, so that the audit's memory does
 * not come on top of the run's.
 */
import v8 from "node:v8";
import { releaseMemory } from "../../src/release-memory";

test("a heap grown by 150 MB of objects, then freed, is given back", () => {
	const before = v8.getHeapStatistics().total_heap_size;
	let held: string[][] | null = Array.from({ length: 150 }, (_, i) =>
		Array.from({ length: 10_000 }, (_, j) => `${i}:${j}:${"x".repeat(64)}`),
	);
	const grown = v8.getHeapStatistics().total_heap_size;
	const grownRss = process.memoryUsage().rss;
	expect(grown - before).toBeGreaterThan(100 * 2 ** 20);
	expect(held.length).toBe(150);
	held = null;
	expect(releaseMemory()).toBe(true);
	const after = v8.getHeapStatistics().total_heap_size;
	// The pages go back to the system, not only the objects to the heap.
	expect(after).toBeLessThan(before + 40 * 2 ** 20);
	expect(grownRss - process.memoryUsage().rss).toBeGreaterThan(80 * 2 ** 20);
	// The gc function is not left exposed to code run later.
	expect(typeof (globalThis as { gc?: unknown }).gc).toBe("undefined");
});
