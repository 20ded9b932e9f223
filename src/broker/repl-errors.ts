/**
 * The REPL's `call` prints an error's message and then its stack. For a refusal (a 4xx: a batch
 * size out of range, an unknown record, a run already active) the stack is ten lines of this
 * project's and Moleculer's frames under a message that already says everything, and it reads as
 * a crash. Calls the REPL makes (`meta.$repl`) get such errors with their stack's first line only
 * (the error's name and message); anything else (a 5xx, an error without a code) keeps its stack.
 */
import type { Middleware } from "moleculer";

interface CallOptions {
	meta?: { $repl?: unknown };
}

// Moleculer's typings give `call` the shape of a handler, not of the wrapping hook it is.
export function ReplErrorsMiddleware(): Middleware {
	return {
		name: "ReplErrors",
		call(next: (name: string, params: unknown, opts?: CallOptions) => Promise<unknown>) {
			return (name: string, params: unknown, opts?: CallOptions) => {
				const call = next(name, params, opts);
				if (!opts?.meta?.$repl) return call;
				return call.catch((err: unknown) => {
					const code = (err as { code?: unknown }).code;
					if (
						err instanceof Error &&
						typeof code === "number" &&
						code >= 400 &&
						code < 500
					) {
						// Its first line names the error the logic threw (InvalidBatchSizeError: ...).
						const frames = err.stack?.search(/\n\s+at /) ?? -1;
						err.stack =
							frames > 0
								? err.stack!.slice(0, frames)
								: `${err.name}: ${err.message}`;
					}
					throw err;
				});
			};
		},
	} as unknown as Middleware;
}
