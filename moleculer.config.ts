/**
 * Broker configuration for moleculer-runner (`npm run serve`, `npm run repl`, one node per
 * role with `SERVICES=...`). Everything comes from the environment, validated once in
 * src/config.ts; src/cli/runner.ts adds what serve and repl need to find each other.
 */
import { appConfig, ConfigError } from "./src/config";
import { runnerBrokerOptions, type RunnerContext } from "./src/cli/runner";
import { UserError } from "./src/user-error";

function validatedConfig() {
	try {
		return appConfig();
	} catch (err) {
		if (!(err instanceof ConfigError)) throw err;
		// A bad variable is an operator's mistake: say which, without a stack trace.
		console.error(`Configuration error: ${err.message}`);
		process.exit(2);
	}
}

// moleculer-runner calls an exported function with itself as `this` and awaits the options.
export = async function (this: RunnerContext | undefined) {
	try {
		return await runnerBrokerOptions(validatedConfig(), this);
	} catch (err) {
		if (!(err instanceof UserError)) throw err;
		// Nothing to join (a REPL whose NATS is not there): say what to start, without a stack trace.
		console.error(err.message);
		process.exit(2);
	}
};
