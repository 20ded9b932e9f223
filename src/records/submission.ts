/**
 * What a submission of records must be (docs/design.md §4.4): 1 to MAX_SUBMISSION records, each
 * an `id` and a `data` string within the limits below, no id twice. Checked whole before
 * anything is stored, so bad input changes nothing; each refusal names the field.
 */
import type { RecordPayload } from "../contract";
import { DomainError } from "../errors";

/** Records one submission may carry. */
export const MAX_SUBMISSION = 1_000;
/** An id: letters, digits and `._:~-`, starting with a letter or digit (safe in a URL path). */
export const RECORD_ID = /^[A-Za-z0-9][A-Za-z0-9._:~-]{0,127}$/;
export const MAX_ID_LENGTH = 128;
/** A record's data: 1 to this many characters of well-formed Unicode. */
export const MAX_DATA_LENGTH = 1_024;
/** The most bytes a submitted record's data takes as a signer receives it, JSON-escaped UTF-8. */
export const MAX_DATA_BYTES = 3 * MAX_DATA_LENGTH;
/**
 * The most bytes a submitted record's id and data take in the message to a signer: what a follow
 * run's batch size must fit in one message.
 */
export const MAX_SUBMITTED_RECORD_BYTES = MAX_ID_LENGTH + MAX_DATA_BYTES;

/**
 * The bytes a record's id and data take in a batch's message, as JSON (UTF-8, escaped): a quote
 * or a backslash takes 2, a control character 6 (\u0001), other characters 1 to 3 per UTF-16
 * unit. An id never needs escaping (RECORD_ID). What the stores measure (maxRecordBytes).
 */
export function recordMessageBytes(record: RecordPayload): number {
	return Buffer.byteLength(record.id) + dataMessageBytes(record.data);
}

/** The bytes `data` takes as a JSON string in a message, less its two quotes. */
function dataMessageBytes(data: string): number {
	return Buffer.byteLength(JSON.stringify(data)) - 2;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export class InvalidRecordsError extends DomainError {
	constructor(field: string, rule: string, value?: unknown) {
		super("INVALID_RECORDS", `${field} ${rule}`, {
			field,
			rule,
			...(value === undefined ? {} : { value }),
		});
	}
}

/** The submission's records as `{ id, data }` (other fields dropped), or an InvalidRecordsError naming the first bad field. */
export function validateSubmission(records: unknown): RecordPayload[] {
	if (!Array.isArray(records))
		throw new InvalidRecordsError("records", "must be an array of { id, data }");
	if (records.length < 1 || records.length > MAX_SUBMISSION)
		throw new InvalidRecordsError(
			"records",
			`must hold 1 to ${MAX_SUBMISSION} records, got ${records.length}`,
		);
	const seen = new Set<string>();
	return records.map((record: unknown, i) => {
		const at = `records[${i}]`;
		if (typeof record !== "object" || record === null || Array.isArray(record))
			throw new InvalidRecordsError(at, "must be an object { id, data }");
		const { id, data } = record as { id?: unknown; data?: unknown };
		if (typeof id !== "string" || !RECORD_ID.test(id))
			throw new InvalidRecordsError(
				`${at}.id`,
				`must be a string of 1 to ${MAX_ID_LENGTH} letters, digits, ".", "_", ":", "~" or "-", starting with a letter or digit`,
				typeof id === "string" ? id.slice(0, MAX_ID_LENGTH + 1) : typeof id,
			);
		if (seen.has(id))
			throw new InvalidRecordsError(`${at}.id`, "repeats an id of this request", id);
		seen.add(id);
		if (typeof data !== "string")
			throw new InvalidRecordsError(
				`${at}.data`,
				`must be a string of 1 to ${MAX_DATA_LENGTH} characters, got ${data === null ? "null" : typeof data}`,
			);
		// Its length, not the data: said as such (a bare 0 read as if the data had been 0).
		if (data.length < 1 || data.length > MAX_DATA_LENGTH)
			throw new InvalidRecordsError(
				`${at}.data`,
				`must be a string of 1 to ${MAX_DATA_LENGTH} characters, got ${data.length}`,
			);
		// A lone surrogate has no UTF-8 form: the signed payload (§8.1) would not say what was stored.
		if (LONE_SURROGATE.test(data))
			throw new InvalidRecordsError(
				`${at}.data`,
				"must be well-formed Unicode (no lone surrogate)",
			);
		// As the signer receives it: 1,024 control characters would make a batch that a follow
		// run's batch size, checked at its start against MAX_SUBMITTED_RECORD_BYTES, cannot carry.
		const bytes = dataMessageBytes(data);
		if (bytes > MAX_DATA_BYTES)
			throw new InvalidRecordsError(
				`${at}.data`,
				`must take at most ${MAX_DATA_BYTES} bytes as JSON (a quote or backslash takes 2, a control character 6, other characters up to 3), got ${bytes}`,
			);
		return { id, data };
	});
}

/** Ids already stored with other data: the submission is refused whole (409), nothing stored. */
export class RecordConflictError extends DomainError {
	constructor(readonly ids: string[]) {
		super(
			"RECORD_CONFLICT",
			`${ids.length} record(s) of this request are stored with other data (${ids.slice(0, 5).join(", ")}${ids.length > 5 ? ", ..." : ""}): a record never changes; nothing of the request was stored`,
			{ ids: ids.slice(0, 50), conflicts: ids.length },
		);
	}
}

/** What storing a submission did: new records, and records already stored with the same data (a replay). */
export interface SubmitOutcome {
	stored: number;
	replayed: number;
}
