/**
 * Test-only fault injection for the lost-reply scenarios (test/integration/cluster-lost-replies.test.ts),
 * read from SIGNER_FAULT; unset in every real deployment. It acts once, on the N-th batch this
 * process stores, between storing its signatures and replying:
 *   kill-after-store@N        the process kills itself (SIGKILL): stored, never answered
 *   hold-reply:MS@N           the reply waits MS milliseconds (a NATS restart or a SIGSTOP meanwhile)
 */
export type AfterStore = (batchId: string) => Promise<void>;

export class FaultSpecError extends Error {}

export function faultFromEnv(
	spec: string | undefined,
	log: (line: string) => void,
): AfterStore | undefined {
	if (!spec) return undefined;
	const match = /^(kill-after-store|hold-reply:(\d+))@(\d+)$/.exec(spec.trim());
	if (!match)
		throw new FaultSpecError(
			`SIGNER_FAULT must be kill-after-store@N or hold-reply:MS@N, got ${JSON.stringify(spec)}`,
		);
	const [, , holdMs, nth] = match;
	let stored = 0;
	return async (batchId) => {
		if (++stored !== Number(nth)) return;
		if (holdMs === undefined) {
			log(
				`fault injection: killing this signer after storing batch ${batchId}, before its reply`,
			);
			process.kill(process.pid, "SIGKILL");
			return new Promise<void>(() => undefined);
		}
		log(`fault injection: holding the reply of batch ${batchId} for ${holdMs} ms`);
		await new Promise((resolve) => setTimeout(resolve, Number(holdMs)));
		log(`fault injection: replying for batch ${batchId} now`);
	};
}
