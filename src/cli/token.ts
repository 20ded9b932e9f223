/**
 * `npm run token -- [--scope "runs:write"] [--ttl 1h] [--sub NAME]`: prints a bearer token for
 * local use of the API, signed with the same HS256 secret the gateway verifies with
 * (AUTH_SECRET, or DATA_DIR/auth.secret created on first use).
 */
import { parseArgs } from "node:util";
import { AuthConfigError, issueToken, loadAuthConfig, SCOPE_RUNS_WRITE } from "../api/auth";
import { ConfigError, loadConfig } from "../config";

const USAGE = `Usage: npm run token -- [--scope "runs:write"] [--ttl 1h|3600] [--sub NAME] [--data-dir DIR]
Environment: AUTH_SECRET (base64), AUTH_ISSUER, AUTH_AUDIENCE, DATA_DIR (see docs/api.md).`;

/**
 * The token for `argv`; exported so tests run it without a build. `note` hears which secret
 * signed it (the command writes that to stderr, so `TOKEN=$(npm run --silent token)` works).
 */
export async function tokenCommand(
	argv: string[],
	env: Record<string, string | undefined>,
	note: (line: string) => void = () => undefined,
): Promise<string> {
	const { values } = parseArgs({
		args: argv,
		options: {
			scope: { type: "string", default: SCOPE_RUNS_WRITE },
			ttl: { type: "string", default: "1h" },
			sub: { type: "string", default: "local" },
			"data-dir": { type: "string" },
		},
		strict: true,
	});
	const ttl = /^\d+$/.test(values.ttl!) ? Number(values.ttl) : values.ttl!;
	if (
		typeof ttl === "string" &&
		!/^\d+\s*(s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days|w|week|weeks)$/i.test(
			ttl,
		)
	)
		throw new AuthConfigError(`--ttl must be seconds or a span like 15m, 2h, 1d; got "${ttl}"`);
	const config = loadConfig(env as NodeJS.ProcessEnv, { "data-dir": values["data-dir"] });
	const auth = await loadAuthConfig(env, config.dataDir);
	if (auth.key.alg === "HS256" && auth.key.source === "memory")
		throw new AuthConfigError(
			"DATA_DIR is empty and AUTH_SECRET unset: no secret the gateway shares",
		);
	const token = await issueToken(auth, { scope: values.scope!, ttl, subject: values.sub });
	note(
		auth.key.source === "file"
			? `Signed with the secret of the store in ${config.dataDir} (${auth.key.file}): only a gateway on DATA_DIR=${config.dataDir} accepts it.`
			: "Signed with AUTH_SECRET: only a gateway with the same AUTH_SECRET accepts it.",
	);
	return token;
}

if (require.main === module) {
	tokenCommand(process.argv.slice(2), process.env, (line) =>
		process.stderr.write(`${line}\n`),
	).then(
		(token) => process.stdout.write(`${token}\n`),
		(err) => {
			const known =
				err instanceof ConfigError ||
				err instanceof AuthConfigError ||
				(err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
			process.stderr.write(`${(err as Error).message}\n${known ? USAGE + "\n" : ""}`);
			process.exit(2);
		},
	);
}
