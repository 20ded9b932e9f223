/**
 * Broker configuration for moleculer-runner (`npm run serve`, one node per role with
 * `SERVICES=...`). Everything comes from the environment, validated once in src/config.ts.
 */
import { appConfig, ConfigError } from "./src/config";
import { brokerOptions } from "./src/broker-options";

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

export = brokerOptions(validatedConfig(), { prometheus: true, health: true });
