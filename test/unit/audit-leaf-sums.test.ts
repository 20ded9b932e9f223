/**
 * The keyed sum that lets the audit hold the signature rows against the log's leaves without
 * sorting either (src/audit/leaf-sums.ts): the same pairs in any order, summed in any split
 * (the threads' ranges), give the same sum; a pair altered, moved, dropped, doubled or added
 * does not; and a sum under another key differs, so nobody who wrote the store before the
 * audit drew its key could aim at it.
 */
import crypto from "node:crypto";
import { LeafSum, SUM_KEY_BYTES } from "../../src/audit/leaf-sums";

const key = crypto.randomBytes(SUM_KEY_BYTES);
const leaves = Array.from({ length: 500 }, (_, i) => crypto.hash("sha256", `leaf ${i}`, "buffer"));

function sumOf(pairs: Array<[number, Buffer | string]>, under: Buffer = key): LeafSum {
	const sum = new LeafSum(under);
	for (const [index, hash] of pairs) sum.add(index, hash);
	return sum;
}

const inOrder = (): Array<[number, Buffer]> => leaves.map((hash, i) => [i, hash]);

describe("the audit's keyed leaf sum", () => {
	test("the same pairs in another order, summed in three threads' parts, give the same sum", () => {
		const whole = sumOf(inOrder());
		const shuffled = inOrder().sort(() => Math.random() - 0.5);
		const total = new LeafSum(key);
		for (const part of [shuffled.slice(0, 100), shuffled.slice(100, 350), shuffled.slice(350)])
			total.merge(sumOf(part).data());
		expect(total.count).toBe(500);
		expect(total.equals(whole)).toBe(true);
		// A hash given as the append path's latin1 string sums as its bytes.
		const asText = sumOf(leaves.map((hash, i) => [i, hash.toString("latin1")]));
		expect(asText.equals(whole)).toBe(true);
	});

	test("a pair altered, moved, dropped, doubled or added changes the sum or the count", () => {
		const whole = sumOf(inOrder());
		const altered = inOrder();
		altered[10] = [10, crypto.hash("sha256", "forged", "buffer")];
		const moved = inOrder();
		moved[40] = [50, leaves[40]];
		moved[50] = [40, leaves[50]];
		const dropped = inOrder().filter(([i]) => i !== 20);
		const doubled = [...dropped, [30, leaves[30]] as [number, Buffer]];
		const added = [...inOrder(), [500, leaves[0]] as [number, Buffer]];
		for (const pairs of [altered, moved, dropped, doubled, added])
			expect(sumOf(pairs).equals(whole)).toBe(false);
		// Doubled has as many pairs as the log: the sum alone tells it apart.
		expect(sumOf(doubled).count).toBe(whole.count);
	});

	test("an index that is not a whole number makes the sum irregular, never equal", () => {
		const sum = sumOf(inOrder());
		const odd = sumOf(inOrder());
		odd.add(2.5, leaves[2]);
		expect(odd.irregular).toBe(true);
		expect(odd.equals(sum)).toBe(false);
		expect(sum.equals(odd)).toBe(false);
	});

	test("the sum depends on the audit's key", () => {
		const other = crypto.randomBytes(SUM_KEY_BYTES);
		expect(sumOf(inOrder(), other).equals(sumOf(inOrder()))).toBe(false);
		expect(() => new LeafSum(Buffer.alloc(16))).toThrow(/32 bytes/);
	});
});
