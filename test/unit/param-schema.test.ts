/** One params schema gives the validator, the TypeScript type and the OpenAPI schema (src/param-schema.ts). */
import { Validators } from "moleculer";
import {
	defineParams,
	isRequired,
	jsonSchemaOf,
	objectSchemaOf,
	type ParamsOf,
} from "../../src/param-schema";

const schema = defineParams(
	{
		name: { type: "string", min: 1, max: 20, description: "Who" },
		count: { type: "number", integer: true, positive: true, convert: true },
		limit: { type: "number", integer: true, min: 1, max: 50, default: 10 },
		mode: { type: "enum", values: ["fast", "slow"], optional: true },
		tags: { type: "array", items: "string", min: 1, optional: true },
		key: { type: "object", props: { kty: { type: "equal", value: "OKP" }, x: "string" } },
		size: { type: "any", optional: true, expects: { type: "number", integer: true, max: 9 } },
		proof: { type: "string", max: 64, optional: true, refusedIfMissing: true },
	},
	{ strict: true },
);

// Compile-time: the derived type is exactly what the rules let through.
type Expected = {
	name: string;
	count: number;
	limit: number;
	key: { kty: "OKP"; x: string };
	proof: string;
	mode?: "fast" | "slow";
	tags?: string[];
	size?: unknown;
};
type Same<A, B> =
	(<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const typeMatches: Same<ParamsOf<typeof schema>, Expected> = true;

describe("a params schema", () => {
	test("its type is derived from its rules", () => {
		expect(typeMatches).toBe(true);
	});

	test("the broker's validator takes it as it is, naming the field it refuses", () => {
		const check = new Validators.Fastest().compile(schema);
		const valid = { name: "a", count: "3", key: { kty: "OKP", x: "k" }, proof: "p" };
		expect(check({ ...valid })).toBe(true);
		expect(check({ ...valid, name: "" })).toEqual([
			expect.objectContaining({ type: "stringMin", field: "name" }),
		]);
		expect(check({ ...valid, extra: 1 })).toEqual([
			expect.objectContaining({ type: "objectStrict" }),
		]);
		// Optional to the validator: the handler refuses a call without it, with its own error.
		const { proof: _proof, ...withoutProof } = valid;
		expect(check(withoutProof)).toBe(true);
	});

	test("its JSON Schema states the same rules, with the descriptions users read", () => {
		expect(objectSchemaOf(schema)).toEqual({
			type: "object",
			required: ["name", "count", "key", "proof"],
			additionalProperties: false,
			properties: {
				name: { type: "string", minLength: 1, maxLength: 20, description: "Who" },
				count: { type: "integer", exclusiveMinimum: 0 },
				limit: { type: "integer", minimum: 1, maximum: 50, default: 10 },
				mode: { enum: ["fast", "slow"] },
				tags: { type: "array", items: { type: "string" }, minItems: 1 },
				key: {
					type: "object",
					required: ["kty", "x"],
					properties: { kty: { const: "OKP" }, x: { type: "string" } },
				},
				size: { type: "integer", maximum: 9 },
				proof: { type: "string", maxLength: 64 },
			},
		});
		expect(jsonSchemaOf({ type: "url", optional: true })).toEqual({
			type: "string",
			format: "uri",
		});
		expect([isRequired(schema.limit), isRequired(schema.mode), isRequired("string")]).toEqual([
			false,
			false,
			true,
		]);
	});
});
