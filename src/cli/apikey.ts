/**
 * `npm run apikey -- <command>`: API keys for scripts and CI jobs (src/api/api-keys.ts), in
 * the file the gateway reads (API_KEYS_FILE, default DATA_DIR/api-keys.json). A running
 * gateway sees a change within a second.
 *
 *   create --name NAME [--scope runs:write]   a new key, shown once (only its hash is kept)
 *   list [--json]                             names, scopes, dates; never a key
 *   revoke --name NAME                        refused from now on
 */
import { ApiKeyError, ApiKeyFile, KNOWN_SCOPES } from "../api/api-keys";
import { SCOPE_RUNS_WRITE } from "../api/auth";
import { ConfigError, loadConfig } from "../config";
import { runSubcommands, UsageError, write, type CliOptions, type Subcommand } from "./cli";

const USAGE = `Usage: npm run apikey -- <command> [flags]
  create --name NAME [--scope ${SCOPE_RUNS_WRITE}]  make an API key; it is shown once, only its hash is kept
  list [--json]                                names, scopes and dates of the keys (never a key)
  revoke --name NAME                           refuse a key from now on (a running gateway within a second)
Flags for every command: --file FILE (API_KEYS_FILE), --data-dir DIR (DATA_DIR; the file is DIR/api-keys.json)
Use a key as the header  X-API-Key: <key>  (scopes: ${KNOWN_SCOPES.join(", ")})`;

const FILE = {
	file: { type: "string" },
	"data-dir": { type: "string" },
} as const satisfies CliOptions;

function keyFile(values: { file?: string; "data-dir"?: string }): ApiKeyFile {
	let config;
	try {
		config = loadConfig(process.env, {
			"api-keys-file": values.file,
			"data-dir": values["data-dir"],
		});
	} catch (err) {
		if (err instanceof ConfigError) throw new UsageError(err.message);
		throw err;
	}
	if (!config.apiKeysFile)
		throw new UsageError(
			"DATA_DIR is empty and API_KEYS_FILE unset: say where the keys are with --file",
		);
	return new ApiKeyFile(config.apiKeysFile);
}

const COMMANDS: Record<string, Subcommand> = {
	create: {
		options: { ...FILE, name: { type: "string" }, scope: { type: "string" } },
		async run(values) {
			if (typeof values.name !== "string") throw new UsageError("--name is required");
			const scopes = String(values.scope ?? SCOPE_RUNS_WRITE)
				.split(/[\s,]+/)
				.filter(Boolean);
			const file = keyFile(values);
			const { key, record } = file.create(values.name, scopes);
			// The key alone on stdout, so that KEY=$(npm run --silent apikey -- create ...) takes it.
			await write(
				process.stderr,
				`Made API key "${record.name}" (scopes: ${record.scopes.join(" ") || "none"}) in ${file.file}. ` +
					"The key, shown once, is on stdout; use it as the header  X-API-Key: <key>\n",
			);
			return key;
		},
	},
	list: {
		options: { ...FILE, json: { type: "boolean" } },
		run(values) {
			const file = keyFile(values);
			const records = file.list().map(({ id, name, scopes, createdAt, revokedAt }) => ({
				id,
				name,
				scopes,
				createdAt,
				revokedAt,
			}));
			if (values.json) return JSON.stringify(records, null, 2);
			if (!records.length) return `No API key in ${file.file}`;
			return [
				`API keys in ${file.file}:`,
				...records.map(
					(r) =>
						`  ${r.name.padEnd(24)} ${r.scopes.join(" ").padEnd(12)} made ${r.createdAt}${r.revokedAt ? `  REVOKED ${r.revokedAt}` : ""}`,
				),
			].join("\n");
		},
	},
	revoke: {
		options: { ...FILE, name: { type: "string" } },
		run(values) {
			if (typeof values.name !== "string") throw new UsageError("--name is required");
			const file = keyFile(values);
			if (!file.revoke(values.name))
				throw new UsageError(
					`No active API key "${values.name}" in ${file.file} (npm run apikey -- list)`,
				);
			return `Revoked API key "${values.name}": a running gateway refuses it within a second`;
		},
	},
};

void runSubcommands("apikey", USAGE, COMMANDS, (err) => err instanceof ApiKeyError);
