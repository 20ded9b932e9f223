/**
 * The validator's shortcut for flat arrays (src/broker/flat-array-validator.ts) answers every
 * call exactly as Moleculer's own fastest-validator does: the same result (true, or the same
 * errors in the same order) and the same params afterwards (a strict item's extra fields
 * removed, nothing else changed), on the real schemas of the two hot actions and on the rule
 * shapes the shortcut takes or leaves, with valid calls and with each way a call can be wrong.
 */
import { ServiceBroker, Validators, Errors } from "moleculer";
import { signBatchParams, storeSignaturesParams } from "../../src/contract";
import { FlatArrayValidator } from "../../src/broker/flat-array-validator";
import { brokerOptions } from "../../src/broker/broker-options";
import { loadConfig } from "../../src/config";

const stock = new Validators.Fastest();
const fast = new FlatArrayValidator();

/** Both checkers on their own copy of `params`: results and params afterwards. */
function both(schema: Record<string, unknown>, params: unknown) {
	const a = structuredClone(params) as Record<string, unknown>;
	const b = structuredClone(params) as Record<string, unknown>;
	return {
		stock: { result: stock.compile(schema)(a), params: a },
		fast: { result: fast.compile(schema)(b), params: b },
	};
}

const signature = (i: number) => ({
	recordId: `rec-${i}`,
	jws: `eyJhbGciOiJFZERTQSJ9..sig${i}`,
	signedAt: "2026-12-07T21:40:29.123Z",
});
const store = (signatures: unknown) => ({
	batchId: "run-1-b000001",
	keyId: "key-001",
	leaseId: "lease-1",
	signatures,
	token: "t.o.k",
	proof: "proof",
});
const record = (i: number) => ({ id: `rec-${i}`, data: `data ${i}` });
const batch = (records: unknown) => ({
	batchId: "run-1-b000001",
	runId: "run-1",
	records,
	ticket: "t.i.c",
});

const many = (n: number, make: (i: number) => object) =>
	Array.from({ length: n }, (_, i) => make(i));

describe("the flat-array shortcut answers as fastest-validator does", () => {
	const cases: Array<[string, Record<string, unknown>, unknown]> = [
		["valid signatures", storeSignaturesParams, store(many(300, signature))],
		["valid records", signBatchParams, batch(many(300, record))],
		[
			"an item with an extra field (removed)",
			storeSignaturesParams,
			store([signature(1), { ...signature(2), extra: 1 }]),
		],
		[
			"a record with an extra field (removed)",
			signBatchParams,
			batch([{ ...record(1), x: "y" }, record(2)]),
		],
		[
			"an item missing a field",
			storeSignaturesParams,
			store([signature(1), { recordId: "r", jws: "j" }]),
		],
		[
			"a field of another type",
			storeSignaturesParams,
			store([{ ...signature(1), signedAt: 5 }]),
		],
		["a missing field and an extra one", signBatchParams, batch([{ id: "a", other: "b" }])],
		["a null item", signBatchParams, batch([record(1), null])],
		["an array item", signBatchParams, batch([["rec-1", "data"]])],
		["a string item", storeSignaturesParams, store(["rec-1"])],
		["an empty array (min 1)", storeSignaturesParams, store([])],
		["not an array", signBatchParams, batch({ 0: record(1) })],
		["no array", signBatchParams, { batchId: "b", runId: "r", ticket: "t" }],
		["another field wrong", storeSignaturesParams, { ...store([signature(1)]), batchId: "" }],
		["another field missing", signBatchParams, { records: [record(1)], ticket: "t" }],
		[
			"an unknown field beside valid items",
			storeSignaturesParams,
			{ ...store([signature(1)]), sneaky: true },
		],
		["an empty-string field", storeSignaturesParams, store([{ ...signature(1), jws: "" }])],
		[
			"fields in another order (left to the generic checker)",
			storeSignaturesParams,
			store([
				{ jws: "j", recordId: "r", signedAt: "s" },
				{ ...signature(2), extra: 1 },
			]),
		],
	];
	test.each(cases)("%s", (_, schema, params) => {
		const { stock: s, fast: f } = both(schema, params);
		expect(f.result).toEqual(s.result);
		expect(f.params).toEqual(s.params);
	});

	test("rule shapes: arrays of bounded strings, and shapes it leaves to the generic checker", () => {
		const schemas: Array<Record<string, unknown>> = [
			{ ids: { type: "array", items: "string", min: 1, max: 3 } },
			{ ids: { type: "array", items: { type: "string", min: 2, max: 4 } } },
			{
				rows: {
					type: "array",
					items: { type: "object", props: { a: { type: "string", min: 1 } } },
				},
			},
			{
				rows: {
					type: "array",
					items: { type: "object", props: { a: "string" }, strict: true },
				},
			},
			{ rows: { type: "array", items: { type: "object", props: { a: "number" } } } },
			{ ids: { type: "array", items: { type: "string", trim: true } } },
			{ ids: { type: "array", items: "string", optional: true } },
		];
		const values = [
			[],
			["ab"],
			["ab", "abc", "abcd"],
			["a"],
			["abcde"],
			[" ab "],
			[1],
			[{ a: "x" }],
			[{ a: "" }],
			[{ a: "x", b: "y" }],
			[{ a: 1 }],
			[{}],
			undefined,
			"ab",
		];
		let compared = 0;
		for (const schema of schemas)
			for (const value of values) {
				const field = Object.keys(schema)[0];
				const params = value === undefined ? {} : { [field]: value };
				const { stock: s, fast: f } = both(schema, params);
				expect([schema, value, f.result, f.params]).toEqual([
					schema,
					value,
					s.result,
					s.params,
				]);
				compared++;
			}
		expect(compared).toBe(schemas.length * values.length);
	});

	test("a valid batch is checked by the loop and the other fields' checker, a wrong one by the generic checker", () => {
		const calls: string[] = [];
		const compile = Validators.Fastest.prototype.compile;
		const spy = jest
			.spyOn(Validators.Fastest.prototype, "compile")
			.mockImplementation(function (this: Validators.Fastest, schema) {
				const check = compile.call(this, schema);
				const which =
					(schema.signatures as { type?: string }).type === "any" ? "others" : "generic";
				return Object.assign((params: Record<string, unknown>) => {
					calls.push(which);
					return check(params);
				}, check);
			});
		try {
			const check = new FlatArrayValidator().compile(storeSignaturesParams);
			expect(check(store(many(300, signature)))).toBe(true);
			expect(calls).toEqual(["others"]);
			expect(check(store([{ ...signature(1), extra: 1 }]))).toBe(true);
			expect(calls).toEqual(["others", "generic"]);
		} finally {
			spy.mockRestore();
		}
	});

	test("every broker built from the configuration validates with it", () => {
		expect(brokerOptions(loadConfig({ DATA_DIR: "" })).validator).toBeInstanceOf(
			FlatArrayValidator,
		);
	});

	test("a broker with it refuses a bad item with the same 422 and takes a good batch", async () => {
		const broker = new ServiceBroker({ logger: false, validator: new FlatArrayValidator() });
		broker.createService({
			name: "t",
			actions: {
				store: {
					params: storeSignaturesParams,
					handler: (ctx) => (ctx.params as { signatures: unknown[] }).signatures.length,
				},
			},
		});
		await broker.start();
		try {
			await expect(broker.call("t.store", store(many(300, signature)))).resolves.toBe(300);
			const refused = await broker
				.call("t.store", store([signature(1), { ...signature(2), jws: 7 }]))
				.catch((err: unknown) => err);
			expect(refused).toBeInstanceOf(Errors.ValidationError);
			expect((refused as Errors.ValidationError).code).toBe(422);
			expect(JSON.stringify((refused as Errors.ValidationError).data)).toContain(
				"signatures[1].jws",
			);
		} finally {
			await broker.stop();
		}
	});
});
