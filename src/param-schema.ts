/**
 * An action's params, written once as a fastest-validator schema (`defineParams`): the broker's
 * validator checks every call against it (`params:` in the service), its TypeScript type is
 * derived from it (`ParamsOf`), and the gateway's OpenAPI document converts it to JSON Schema
 * (`jsonSchemaOf`, `objectSchemaOf`). Only the rules below are mapped; a schema using another
 * does not compile.
 *
 * Two additions the validator ignores: `description` (the document's, shown to users) and, on an
 * `any` field the handler checks itself so its error names the field and the range, `expects`:
 * the rule the document states. A field with `refusedIfMissing` is optional to the validator
 * only: the handler refuses a call without it (a proof: a 403 logged with the caller's node,
 * docs/design.md §6; submitted records: 422 after the body's media type is checked), and callers
 * must send it, so its type has it.
 */

interface RuleBase {
	optional?: boolean;
	refusedIfMissing?: boolean;
	convert?: boolean;
	default?: string | number | boolean;
	description?: string;
}

type Shorthand = "any" | "string" | "url" | "number" | "boolean";

export type RuleObject =
	| (RuleBase & { type: "any"; expects?: RuleObject })
	| (RuleBase & { type: "string"; min?: number; max?: number })
	| (RuleBase & { type: "url" })
	| (RuleBase & {
			type: "number";
			integer?: boolean;
			positive?: boolean;
			min?: number;
			max?: number;
	  })
	| (RuleBase & { type: "boolean" })
	| (RuleBase & { type: "equal"; value: string | number | boolean })
	| (RuleBase & { type: "enum"; values: readonly (string | number)[] })
	| (RuleBase & { type: "array"; items: Rule; min?: number; max?: number })
	| (RuleBase & { type: "object"; props: Fields; strict?: boolean | "remove" });

export type Rule = Shorthand | RuleObject;

/** A schema's fields by name. */
export type Fields = { readonly [field: string]: Rule };

/** A schema as the validator takes it: fields, and `$$strict` (unknown fields refused). */
export type ParamsSchema = { readonly [field: string]: Rule | true };

/** `strict`: a call with a field the schema does not name is refused (422, naming it). */
export function defineParams<const S extends Fields>(fields: S): S;
export function defineParams<const S extends Fields>(
	fields: S,
	options: { strict: true },
): S & { readonly $$strict: true };
export function defineParams(fields: Fields, options?: { strict: true }): ParamsSchema {
	return options?.strict ? { ...fields, $$strict: true } : fields;
}

/**
 * A signed statement a call carries (a proof, a token, a ticket) of at most `max` characters:
 * optional to the validator, refused by the handler when missing (`refusedIfMissing`, above).
 */
export function signedStatement<const M extends number>(max: M) {
	return { type: "string", max, optional: true, refusedIfMissing: true } as const;
}

// ---------------------------------------------------------------- the TypeScript type

/** The value a rule lets through. */
export type RuleValue<R> = R extends "string" | "url" | { type: "string" | "url" }
	? string
	: R extends "number" | { type: "number" }
		? number
		: R extends "boolean" | { type: "boolean" }
			? boolean
			: R extends { type: "equal"; value: infer V }
				? V
				: R extends { type: "enum"; values: readonly (infer V)[] }
					? V
					: R extends { type: "array"; items: infer I }
						? RuleValue<I>[]
						: R extends { type: "object"; props: infer P }
							? ParamsOf<P>
							: unknown;

type Optional<R> = R extends { refusedIfMissing: true }
	? false
	: R extends { optional: true }
		? true
		: false;

type Present<S> = {
	-readonly [
		K in keyof S as K extends `$$${string}` ? never : Optional<S[K]> extends true ? never : K
	]: RuleValue<S[K]>;
};
type Absent<S> = {
	-readonly [K in keyof S as Optional<S[K]> extends true ? K : never]?: RuleValue<S[K]>;
};

/** What a handler is given: every field, optional where the rule is (a `default` fills one in). */
export type ParamsOf<S> = Present<S> & Absent<S> extends infer T ? { [K in keyof T]: T[K] } : never;

// ---------------------------------------------------------------- JSON Schema, for the document

export type JsonSchema = { [keyword: string]: unknown };

const defined = (entries: Record<string, unknown>): JsonSchema =>
	Object.fromEntries(Object.entries(entries).filter(([, value]) => value !== undefined));

/** Whether a call must carry the field (the document's `required`). */
export function isRequired(rule: Rule): boolean {
	if (typeof rule === "string") return true;
	return (!rule.optional || rule.refusedIfMissing === true) && rule.default === undefined;
}

export function jsonSchemaOf(rule: Rule): JsonSchema {
	if (typeof rule === "string") return jsonSchemaOf({ type: rule });
	const about = { default: rule.default, description: rule.description };
	switch (rule.type) {
		case "any":
			return defined({ ...(rule.expects ? jsonSchemaOf(rule.expects) : {}), ...about });
		case "string":
			return defined({ type: "string", minLength: rule.min, maxLength: rule.max, ...about });
		case "url":
			return defined({ type: "string", format: "uri", ...about });
		case "number":
			return defined({
				type: rule.integer ? "integer" : "number",
				minimum: rule.min,
				exclusiveMinimum: rule.positive && rule.min === undefined ? 0 : undefined,
				maximum: rule.max,
				...about,
			});
		case "boolean":
			return defined({ type: "boolean", ...about });
		case "equal":
			return defined({ const: rule.value, ...about });
		case "enum":
			return defined({ enum: [...rule.values], ...about });
		case "array":
			return defined({
				type: "array",
				items: jsonSchemaOf(rule.items),
				minItems: rule.min,
				maxItems: rule.max,
				...about,
			});
		case "object":
			return { ...objectSchemaOf(rule.props, rule.strict === true), ...defined(about) };
	}
}

/** A schema's fields as one JSON Schema object; a strict one refuses fields it does not name. */
export function objectSchemaOf(
	schema: ParamsSchema,
	strict = schema.$$strict === true,
): JsonSchema {
	const fields = fieldsOf(schema);
	const required = fields.filter(([, rule]) => isRequired(rule)).map(([name]) => name);
	return defined({
		type: "object",
		required: required.length ? required : undefined,
		additionalProperties: strict ? false : undefined,
		properties: Object.fromEntries(fields.map(([name, rule]) => [name, jsonSchemaOf(rule)])),
	});
}

/** A schema's fields with their rules, without the validator's `$$` options. */
export function fieldsOf(schema: ParamsSchema): Array<[string, Rule]> {
	return Object.entries(schema).flatMap(([name, rule]): Array<[string, Rule]> =>
		rule === true || name.startsWith("$$") ? [] : [[name, rule]],
	);
}
