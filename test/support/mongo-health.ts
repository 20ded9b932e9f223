/**
 * The MongoDB health checks of docker-compose.yml and k8s/mongo.yaml, run without a server:
 * the script they pass to mongosh is evaluated against its documented behaviour (`mongosh`
 * throws a failed command's error; the legacy `mongo` shell, gone from the 6.0+ images, returned
 * its reply), so what it does on a fresh and on a running replica set member is checked, not
 * only that it parses.
 */
import vm from "node:vm";

/** The JavaScript after `--eval "` up to the closing quote. */
export function evalScriptOf(command: string): string {
	const match = /--eval "([\s\S]*)"\s*$/.exec(command);
	if (!match) throw new Error(`no --eval "…" in ${command}`);
	return match[1];
}

export interface ReplicaSetState {
	initiated: boolean;
	primary: boolean;
	/** A member of an initiated set that is not the primary and has caught up. */
	secondary?: boolean;
}

export interface HealthOutcome {
	exitCode: number | null;
	initiatedWith: { _id: string; members: { _id: number; host: string }[] } | null;
}

const NOT_YET_INITIALIZED = 94;

export function runHealthScript(
	script: string,
	shell: "mongosh" | "mongo",
	state: ReplicaSetState,
): HealthOutcome {
	const outcome: HealthOutcome = { exitCode: null, initiatedWith: null };
	const failed = (code: number, errmsg: string) => {
		if (shell === "mongo") return { ok: 0, code, errmsg };
		throw Object.assign(new Error(errmsg), { code });
	};
	const db = {
		adminCommand(command: Record<string, unknown>) {
			if ("replSetGetStatus" in command)
				return state.initiated
					? { ok: 1, set: "rs0" }
					: failed(NOT_YET_INITIALIZED, "no replset config has been received");
			if ("hello" in command)
				return {
					ok: 1,
					isWritablePrimary: state.initiated && state.primary,
					secondary: state.initiated && !state.primary && !!state.secondary,
				};
			return failed(59, `no such command: '${Object.keys(command)[0]}'`);
		},
	};
	const rs = {
		initiate(config: HealthOutcome["initiatedWith"]) {
			if (state.initiated) return failed(23, "already initialized");
			outcome.initiatedWith = config;
			state.initiated = true;
			return { ok: 1 };
		},
	};
	class Quit extends Error {}
	const quit = (code = 0) => {
		outcome.exitCode = code;
		throw new Quit();
	};
	try {
		vm.runInNewContext(script, { db, rs, quit });
		outcome.exitCode = 0; // the shell exits 0 after the script
	} catch (err) {
		if (!(err instanceof Quit)) throw err;
	}
	return outcome;
}
