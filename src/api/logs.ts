/**
 * The gateway's routes over the transparency logs (docs/design.md §8.4, docs/api.md): each log
 * is read from its owner (the signature log from records, the lease log from the keyring), so a
 * third party gets every checkpoint, proof and verifier key without any access to the stores.
 */
import {
	Actions,
	call,
	LOG_NAMES,
	type Caller,
	type ConsistencyProofView,
	type LogCheckpoint,
	type LogName,
} from "../contract";
import { DomainError } from "../errors";

const LOG_ACTIONS = {
	signatures: {
		checkpoint: Actions.records.logCheckpoint,
		consistency: Actions.records.logConsistency,
	},
	leases: {
		checkpoint: Actions.keyring.logCheckpoint,
		consistency: Actions.keyring.logConsistency,
	},
} as const;

/** A log's entry in GET /api/logs. */
export interface LogSummary extends Omit<LogCheckpoint, "checkpoint"> {
	log: LogName;
	/** The latest checkpoint's tree size and date; null before the first. */
	size: number | null;
	publishedAt: string | null;
	links: { checkpoint: string; consistency: string };
}

/** The log a path names; anything else is a 404 that lists the logs. */
export function logNamed(name: string): LogName {
	if (!(LOG_NAMES as string[]).includes(name))
		throw new DomainError(
			"LOG_NOT_FOUND",
			`No log "${name}": the logs are ${LOG_NAMES.join(", ")}`,
			{ log: name, logs: LOG_NAMES },
		);
	return name as LogName;
}

/** Every log the stores keep, with its verifier key and latest checkpoint's size. */
export async function logSummaries(caller: Caller): Promise<{ logs: LogSummary[] }> {
	const logs = await Promise.all(
		LOG_NAMES.map(async (log): Promise<LogSummary> => {
			const state = await call(caller, LOG_ACTIONS[log].checkpoint, {});
			return {
				log,
				origin: state.origin,
				verifierKey: state.verifierKey,
				size: state.checkpoint?.size ?? null,
				publishedAt: state.checkpoint?.publishedAt ?? null,
				links: {
					checkpoint: `/api/logs/${log}/checkpoint`,
					consistency: `/api/logs/${log}/consistency`,
				},
			};
		}),
	);
	return { logs };
}

/** The latest signed checkpoint note of a log. */
export async function latestCheckpointNote(caller: Caller, name: string): Promise<string> {
	const log = logNamed(name);
	const state = await call(caller, LOG_ACTIONS[log].checkpoint, {});
	if (!state.checkpoint)
		throw new DomainError(
			"NO_CHECKPOINT",
			`The ${log} log has no checkpoint yet; one is published within a second of its first entry`,
			{ log },
		);
	return state.checkpoint.note;
}

export function logConsistency(
	caller: Caller,
	name: string,
	from: number,
	to: number | undefined,
): Promise<ConsistencyProofView> {
	const log = logNamed(name);
	return call(caller, LOG_ACTIONS[log].consistency, to === undefined ? { from } : { from, to });
}
