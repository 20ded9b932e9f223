/**
 * Moleculer's fastest-validator, with a shortcut for the arrays a batch crosses the services in:
 * `signer.signBatch`'s records and `records.storeSignatures`' signatures, hundreds of flat
 * objects of string fields a call. The generic checker builds each item's and each field's path
 * ("signatures[12].recordId") and, for a strict item, an array of its keys and of the allowed
 * ones, whether or not anything is wrong: about 480 bytes of garbage a record, a fifth of what a
 * run allocates, for checks that pass.
 *
 * An array field whose items are objects of plain string fields (or plain strings) is checked
 * first by a loop that allocates nothing, and which only says "valid": every item an object
 * with exactly those fields, each a string within its length bounds (so a strict item would
 * have nothing removed). The other fields are then checked by the generic checker, with that
 * field as `any`. Anything the loop does not say is valid, the whole call is checked by the
 * generic checker as before: the same errors, the same fields removed. Equivalence is tested
 * against the generic checker (test/unit/flat-array-validator.test.ts).
 */
import { Validators } from "moleculer";

type Schema = Record<string, unknown>;

/** A string rule the loop checks exactly: no conversion, default, pattern or other option. */
interface StringBounds {
	min: number;
	max: number;
}

const STRING_OPTIONS = new Set(["type", "min", "max", "description"]);

function stringBounds(rule: unknown): StringBounds | null {
	if (rule === "string") return { min: 0, max: Infinity };
	if (!rule || typeof rule !== "object") return null;
	const r = rule as Record<string, unknown>;
	if (r.type !== "string" || Object.keys(r).some((key) => !STRING_OPTIONS.has(key))) return null;
	const min = r.min ?? 0;
	const max = r.max ?? Infinity;
	return typeof min === "number" && typeof max === "number" ? { min, max } : null;
}

/** What the loop checks of one array field. */
interface FlatArray {
	field: string;
	min: number;
	max: number;
	/** Items that are strings within these bounds, or (`names` given) objects of exactly these string fields. */
	item: StringBounds | null;
	names: string[];
	mins: number[];
	maxs: number[];
}

const ARRAY_OPTIONS = new Set(["type", "items", "min", "max", "description"]);
const OBJECT_OPTIONS = new Set(["type", "props", "strict", "description"]);

function flatArray(field: string, rule: unknown): FlatArray | null {
	if (!rule || typeof rule !== "object") return null;
	const r = rule as Record<string, unknown>;
	if (r.type !== "array" || Object.keys(r).some((key) => !ARRAY_OPTIONS.has(key))) return null;
	const min = r.min ?? 0;
	const max = r.max ?? Infinity;
	if (typeof min !== "number" || typeof max !== "number") return null;
	const array: FlatArray = { field, min, max, item: null, names: [], mins: [], maxs: [] };
	const asString = stringBounds(r.items);
	if (asString) return { ...array, item: asString };
	const items = r.items as Record<string, unknown> | null;
	if (
		!items ||
		typeof items !== "object" ||
		items.type !== "object" ||
		Object.keys(items).some((key) => !OBJECT_OPTIONS.has(key)) ||
		!items.props ||
		typeof items.props !== "object"
	)
		return null;
	for (const [name, propRule] of Object.entries(items.props as Schema)) {
		const bounds = stringBounds(propRule);
		if (!bounds) return null;
		array.names.push(name);
		array.mins.push(bounds.min);
		array.maxs.push(bounds.max);
	}
	return array.names.length ? array : null;
}

/**
 * Whether every item passes, with nothing a strict item would lose; false is "not known". An
 * object passes when `for...in` lists exactly its fields, in the schema's order (as the
 * services and JSON build them; another order is left to the generic checker), each a string
 * within its bounds: then its own enumerable keys, which a strict item keeps or loses, are
 * those fields and no other.
 */
function itemsPass(value: unknown, array: FlatArray): boolean {
	if (!Array.isArray(value) || value.length < array.min || value.length > array.max) return false;
	const { item, names, mins, maxs } = array;
	if (item) {
		for (let i = 0; i < value.length; i++) {
			const text: unknown = value[i];
			if (typeof text !== "string" || text.length < item.min || text.length > item.max)
				return false;
		}
		return true;
	}
	const fields = names.length;
	for (let i = 0; i < value.length; i++) {
		const entry = value[i] as Record<string, unknown>;
		if (typeof entry !== "object" || entry === null || Array.isArray(entry)) return false;
		let listed = 0;
		for (const key in entry) if (listed >= fields || key !== names[listed++]) return false;
		if (listed !== fields) return false;
		for (let f = 0; f < fields; f++) {
			const text = entry[names[f]];
			if (typeof text !== "string" || text.length < mins[f] || text.length > maxs[f])
				return false;
		}
	}
	return true;
}

type Check = ReturnType<Validators.Fastest["compile"]>;

export class FlatArrayValidator extends Validators.Fastest {
	override compile(schema: Schema): Check {
		const full = super.compile(schema);
		if (full.async) return full;
		const arrays = Object.entries(schema)
			.filter(([field]) => !field.startsWith("$$"))
			.map(([field, rule]) => flatArray(field, rule))
			.filter((array): array is FlatArray => array !== null);
		if (!arrays.length) return full;
		const rest = super.compile({
			...schema,
			...Object.fromEntries(arrays.map(({ field }) => [field, { type: "any" }])),
		});
		return (params, opts) => {
			for (const array of arrays)
				if (!itemsPass(params[array.field], array)) return full(params, opts);
			return rest(params, opts);
		};
	}
}
