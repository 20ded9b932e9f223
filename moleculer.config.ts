/**
 * Broker configuration for moleculer-runner (`npm run serve`, one node per role with
 * `SERVICES=...`). Everything comes from the environment, validated once in src/config.ts.
 */
import { appConfig } from "./src/config";
import { brokerOptions } from "./src/broker-options";

export = brokerOptions(appConfig(), { prometheus: true });
