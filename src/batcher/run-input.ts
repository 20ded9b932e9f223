/**
 * What a caller may ask of `batcher.start`, checked before anything is stored: the batch size
 * (an integer in range, and small enough for one message to a signer), the Idempotency-Key,
 * and what the stored run shows a caller.
 */
import { DomainError } from "../errors";
import { MAX_BATCH_SIZE } from "../config";
import type { RunDoc, RunView } from "../contract";

export class InvalidBatchSizeError extends DomainError {
	constructor(value: unknown) {
		super(
			"INVALID_BATCH_SIZE",
			`batchSize must be an integer from 1 to ${MAX_BATCH_SIZE}, got ${JSON.stringify(value)}`,
			{ field: "batchSize", min: 1, max: MAX_BATCH_SIZE, value },
		);
	}
}

/** JSON around each record of a batch (`{"id":"","data":""},`) and around the batch itself. */
const BYTES_PER_RECORD = 24;
const BYTES_PER_BATCH = 1024;

export class BatchTooLargeError extends DomainError {
	constructor(batchSize: number, bytes: number, limit: number, largest: number) {
		super(
			"BATCH_TOO_LARGE",
			`batchSize ${batchSize} does not fit one message to a signer: a batch of ${batchSize} records takes about ${Math.ceil(bytes / 1024)} KB, and the NATS server takes at most ${Math.floor(limit / 1024)} KB (its max_payload). ` +
				`Use a batch size of at most ${largest}, or raise the server's max_payload.`,
			{ field: "batchSize", value: batchSize, max: largest, maxPayload: limit },
		);
	}
}

export function validateBatchSize(value: unknown, fallback: number): number {
	// Left out, the default; given, it must be a valid size (null included: it is not "left out").
	if (value === undefined) return fallback;
	if (
		typeof value !== "number" ||
		!Number.isInteger(value) ||
		value < 1 ||
		value > MAX_BATCH_SIZE
	)
		throw new InvalidBatchSizeError(value);
	return value;
}

/** Refuses at the start, not mid-run, a batch size whose batches cannot reach a signer in one message of at most `limit` bytes. */
export function checkBatchFits(batchSize: number, maxRecordBytes: number, limit: number): void {
	const perRecord = maxRecordBytes + BYTES_PER_RECORD;
	const bytes = batchSize * perRecord + BYTES_PER_BATCH;
	if (bytes > limit)
		throw new BatchTooLargeError(
			batchSize,
			bytes,
			limit,
			Math.max(1, Math.floor((limit - BYTES_PER_BATCH) / perRecord)),
		);
}

/** Printable ASCII, as in the IETF httpapi Idempotency-Key draft; bounded so it cannot bloat the store. */
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

export function validateIdempotencyKey(key: unknown): string | undefined {
	if (key === undefined || key === null) return undefined;
	if (typeof key !== "string" || !IDEMPOTENCY_KEY.test(key))
		throw new DomainError(
			"INVALID_IDEMPOTENCY_KEY",
			"Idempotency-Key must be 1 to 255 printable ASCII characters",
			{ field: "Idempotency-Key", rule: "1-255 printable ASCII characters" },
		);
	return key;
}

/** What the stored run shows a caller: no storage id, and not the caller's Idempotency-Key (public reads show runs). */
export function runView(run: RunDoc): RunView {
	const { _id, idempotencyKey: _key, requestFingerprint: _fingerprint, ...view } = run;
	return view;
}
