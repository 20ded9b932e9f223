/**
 * One JSON error shape for every failure the gateway answers: `{ name, message, code, type,
 * data }` with a stable `type`. Client mistakes keep their 4xx; anything else is a 5xx whose
 * message does not leak internals.
 */
import { AuthError } from "./auth";

export interface ApiErrorBody {
	name: string;
	message: string;
	code: number;
	type: string;
	data?: unknown;
}

export interface ApiErrorResponse {
	status: number;
	body: ApiErrorBody;
	headers: Record<string, string>;
}

interface ErrorLike {
	name?: string;
	message?: string;
	code?: unknown;
	status?: unknown;
	statusCode?: unknown;
	type?: unknown;
	data?: unknown;
	limit?: number;
	length?: number;
}

/** body-parser's error types (https://github.com/expressjs/body-parser#errors). */
const BODY_PARSER: Record<string, { status: number; type: string; message: string }> = {
	"entity.parse.failed": {
		status: 400,
		type: "MALFORMED_JSON",
		message: "The request body is not valid JSON",
	},
	"entity.too.large": {
		status: 413,
		type: "PAYLOAD_TOO_LARGE",
		message: "The request body is too large",
	},
	"encoding.unsupported": {
		status: 415,
		type: "UNSUPPORTED_ENCODING",
		message: "The request body's content encoding is not supported",
	},
	"charset.unsupported": {
		status: 415,
		type: "UNSUPPORTED_CHARSET",
		message: "The request body's charset is not supported",
	},
	"request.aborted": { status: 400, type: "REQUEST_ABORTED", message: "The request was aborted" },
	"request.size.invalid": {
		status: 400,
		type: "INVALID_CONTENT_LENGTH",
		message: "The request body does not match its Content-Length",
	},
};

export interface ErrorContext {
	realm: string;
	/** When the rate limit window resets (ms since epoch), for Retry-After. */
	rateLimitResetAt?: number;
}

/** zlib's and brotli's errors for a corrupt gzip / deflate / br body (body-parser passes them on untyped). */
function isDecompressionError(e: ErrorLike & { errno?: unknown }): boolean {
	return (
		typeof e.code === "string" &&
		(/^Z_/.test(e.code) || /^ERR__ERROR_FORMAT|^ERR_BROTLI|^ERR_ZLIB/.test(e.code))
	);
}

/** Validation details name the node that checked them: internal, never answered. */
function withoutNodeIds(data: unknown): unknown {
	const strip = (item: unknown) => {
		if (!item || typeof item !== "object" || Array.isArray(item)) return item;
		const { nodeID: _node, ...rest } = item as Record<string, unknown>;
		return rest;
	};
	return Array.isArray(data) ? data.map(strip) : strip(data);
}

export function toApiError(
	err: unknown,
	context: ErrorContext,
	now = Date.now(),
): ApiErrorResponse {
	if (err instanceof AuthError) {
		return {
			status: err.status,
			body: { name: err.name, message: err.message, code: err.status, type: err.type },
			headers: { "WWW-Authenticate": err.challenge(context.realm) },
		};
	}
	const e = (err ?? {}) as ErrorLike;
	if (typeof e.type === "string" && BODY_PARSER[e.type]) {
		const known = BODY_PARSER[e.type];
		const data =
			e.type === "entity.too.large" ? { limit: e.limit, length: e.length } : undefined;
		return {
			status: known.status,
			body: {
				name: "BadRequestError",
				message: known.message,
				code: known.status,
				type: known.type,
				...(data ? { data } : {}),
			},
			headers: {},
		};
	}
	const code =
		[e.code, e.status, e.statusCode].find(
			(c): c is number => typeof c === "number" && c >= 400 && c <= 599,
		) ?? 500;
	if (code === 429) {
		const retryAfter = Math.max(
			1,
			Math.ceil(((context.rateLimitResetAt ?? now + 60_000) - now) / 1000),
		);
		return {
			status: 429,
			body: {
				name: "RateLimitExceeded",
				message: `Too many requests; retry in ${retryAfter} s`,
				code: 429,
				type: "RATE_LIMIT_EXCEEDED",
				data: { retryAfterSeconds: retryAfter },
			},
			headers: { "Retry-After": String(retryAfter) },
		};
	}
	if (isDecompressionError(e))
		return {
			status: 400,
			body: {
				name: "BadRequestError",
				message: "The request body does not decompress with its Content-Encoding",
				code: 400,
				type: "MALFORMED_BODY",
			},
			headers: {},
		};
	if (code < 500) {
		const type =
			typeof e.type === "string" && e.type
				? e.type
				: code === 404
					? "NOT_FOUND"
					: "BAD_REQUEST";
		const data = withoutNodeIds(e.data);
		return {
			status: code,
			body: {
				name: e.name ?? "Error",
				message: e.message ?? "Bad request",
				code,
				type,
				...(data !== undefined ? { data } : {}),
			},
			headers: {},
		};
	}
	// Moleculer's own 5xx (timeouts, unavailable services) say what happened; anything else is a bug.
	const moleculer = typeof e.type === "string" && e.type !== "" && e.name !== "Error";
	return {
		status: code,
		body: moleculer
			? {
					name: e.name ?? "Error",
					message: e.message ?? "Server error",
					code,
					type: e.type as string,
				}
			: {
					name: "InternalError",
					message: "Internal server error",
					code,
					type: "INTERNAL_ERROR",
				},
		headers: code === 503 ? { "Retry-After": "5" } : {},
	};
}
