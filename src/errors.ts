/**
 * Every error a caller can get from an action, by its stable `type`, with its HTTP status. The
 * logic (src/batcher, src/keyring, src/records, src/identity) throws DomainErrors and knows
 * nothing of Moleculer; at the service edge (DomainErrorsMiddleware, registered for every
 * broker in src/broker/broker-options.ts) each becomes the Moleculer error its status says: a
 * client error for 4xx, a retryable one for 503. The gateway answers the same status.
 */
import { Errors, type Middleware } from "moleculer";

export const ERRORS = {
	// 403: a caller that may not do this (docs/design.md §6)
	SIGNER_PROOF_MISSING: 403,
	SIGNER_PROOF_INVALID: 403,
	SIGNER_NOT_ENROLLED: 403,
	SIGNER_REVOKED: 403,
	DISPATCH_TICKET_MISSING: 403,
	DISPATCH_TICKET_INVALID: 403,
	DISPATCH_TICKET_EXPIRED: 403,
	DISPATCH_TICKET_REPLAYED: 403,
	BATCHER_NOT_ENROLLED: 403,
	BATCHER_REVOKED: 403,
	LEASE_TOKEN_MISSING: 403,
	LEASE_TOKEN_INVALID: 403,
	LEASE_TOKEN_EXPIRED: 403,
	NOT_THE_BATCH_RECORDS: 403,
	STORE_PROOF_INVALID: 403,
	CLOSE_PROOF_INVALID: 403,
	OPERATOR_PROOF_MISSING: 403,
	OPERATOR_PROOF_INVALID: 403,
	SUBMIT_PROOF_MISSING: 403,
	SUBMIT_PROOF_INVALID: 403,
	// 404: nothing by that name
	RUN_NOT_FOUND: 404,
	RECORD_NOT_FOUND: 404,
	UNKNOWN_COLLECTION: 404,
	LOG_NOT_FOUND: 404,
	NO_CHECKPOINT: 404,
	SIGNATURE_NOT_FOUND: 404,
	NOT_IN_LOG: 404,
	KEY_NOT_FOUND: 404,
	// 409: not now
	RUN_ACTIVE: 409,
	RUN_NOT_ACTIVE: 409,
	BATCH_CLOSED: 409,
	KEY_REVOKED: 409,
	NOT_YET_CHECKPOINTED: 409,
	LAST_ACTIVE_KEY: 409,
	NO_ACTIVE_KEY: 409,
	NO_NEXT_MASTER_KEY: 409,
	RECORD_CONFLICT: 409,
	// 415, 422: bad input, nothing changed
	UNSUPPORTED_MEDIA_TYPE: 415,
	INVALID_BATCH_SIZE: 422,
	BATCH_TOO_LARGE: 422,
	INVALID_IDEMPOTENCY_KEY: 422,
	IDEMPOTENCY_KEY_REUSED: 422,
	INVALID_CALLBACK_URL: 422,
	INVALID_RECORDS: 422,
	INVALID_BODY: 422,
	INVALID_SESSION_KEY: 422,
	INVALID_TREE_SIZE: 422,
	MASTER_KEY_INVALID: 422,
	// 503: try again later
	NO_FREE_KEY: 503,
	KEYRING_STOPPING: 503,
	KEYRING_FENCED: 503,
	KEYRING_STORE_FAILED: 503,
	KEYRING_CONFLICT: 503,
	HOLDER_GONE: 503,
	NO_KEYRING_PUBLIC_KEY: 503,
} as const;

export type ErrorType = keyof typeof ERRORS;

/** An error of the catalogue: `type` names it, `code` is its HTTP status, `data` says more (never secrets). */
export class DomainError extends Error {
	readonly code: number;
	readonly retryable: boolean;

	constructor(
		readonly type: ErrorType,
		message: string,
		readonly data: Record<string, unknown> = {},
	) {
		super(message);
		this.name = new.target.name;
		this.code = ERRORS[type];
		this.retryable = this.code >= 500;
	}
}

/**
 * A refusal (a 403: a caller that may not do this) is logged where it happened, with the
 * caller's node, and handed back to be thrown; any other error passes as it is.
 */
export function loggedRefusal(
	err: unknown,
	logger: { warn(line: string): void },
	what: string,
	callerNode: string,
): unknown {
	if (err instanceof DomainError && err.code === 403)
		logger.warn(`Refused ${what} from node ${callerNode}: ${err.message}`);
	return err;
}

/** The Moleculer error a DomainError is at the service edge; anything else as it is. */
export function toMoleculerError(err: unknown): unknown {
	if (!(err instanceof DomainError)) return err;
	const mapped = err.retryable
		? new Errors.MoleculerRetryableError(err.message, err.code, err.type, err.data)
		: new Errors.MoleculerClientError(err.message, err.code, err.type, err.data);
	mapped.stack = err.stack;
	return mapped;
}

/** Maps the DomainErrors of every local action (and of what it awaits) at the service edge. */
export function DomainErrorsMiddleware(): Middleware {
	return {
		name: "DomainErrors",
		localAction(next: (ctx: unknown) => Promise<unknown>) {
			return (ctx: unknown) =>
				next(ctx).catch((err: unknown) => {
					throw toMoleculerError(err);
				});
		},
	} as Middleware;
}
