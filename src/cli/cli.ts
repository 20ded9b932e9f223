/**
 * What every command line shares: flag parsing that fails with one clear line, output that
 * is flushed before the process exits, and one way to turn errors into exit codes.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigError } from "../config";
import { UserError } from "../user-error";

/** A mistake on the command line: one line, the usage, exit code 2. */
export class UsageError extends UserError {}

export type CliOptions = NonNullable<ParseArgsConfig["options"]>;

/** The values of flags declared by `O`: strings, or booleans for boolean flags. */
export type Flags<O extends CliOptions> = {
	[K in keyof O]?: O[K]["type"] extends "boolean" ? boolean : string;
};

/** Strict flags, no positionals; an unknown or malformed flag is a UsageError. */
export function parseCli<O extends CliOptions>(argv: string[], options: O): { values: Flags<O> } {
	try {
		return parseArgs({ args: argv, options, strict: true, allowPositionals: false }) as {
			values: Flags<O>;
		};
	} catch (err) {
		throw new UsageError(`${(err as Error).message.split(". ")[0]} (see --help)`);
	}
}

/** Resolves once `text` is handed to the OS, so exiting right after cannot cut it short. */
export function write(stream: NodeJS.WriteStream, text: string): Promise<void> {
	return new Promise((resolve) => stream.write(text, () => resolve()));
}

/**
 * Runs a command's `main` and exits with its code. A user-facing error exits 2 with one line
 * on stderr (and the usage after a UsageError or ConfigError, when given); anything else is
 * an unexpected error, exit 2 too.
 */
export async function runCli(
	command: string,
	main: () => Promise<number>,
	usage?: string,
): Promise<never> {
	let code: number;
	try {
		code = await main();
	} catch (err) {
		const message = (err as Error)?.message ?? String(err);
		const line =
			`${command}: ${err instanceof UserError ? message : `unexpected error: ${message}`}`.replace(
				/\s*\n\s*/g,
				" ",
			);
		const showUsage = usage && (err instanceof UsageError || err instanceof ConfigError);
		await write(process.stderr, `${line}\n${showUsage ? `${usage}\n` : ""}`);
		code = 2;
	}
	process.exit(code);
}

export interface Command<O extends CliOptions> {
	/** How the command is called, for its error lines (`npm run audit`). */
	name: string;
	usage: string;
	/** Its flags; `--help` is added. */
	options: O;
}

/**
 * Parses the command line (`--help` prints the usage and exits 0), runs `main` with the flags
 * and exits with its code; errors as `runCli` says.
 */
export function runCommand<O extends CliOptions>(
	command: Command<O>,
	main: (flags: Flags<O>) => Promise<number>,
): Promise<never> {
	return runCli(
		command.name,
		async () => {
			const { help, ...flags } = parseCli(process.argv.slice(2), {
				...command.options,
				...HELP,
			}).values;
			if (help) {
				await write(process.stdout, `${command.usage.trimEnd()}\n`);
				return 0;
			}
			return main(flags as Flags<O>);
		},
		command.usage.trimEnd(),
	);
}

const HELP = { help: { type: "boolean", short: "h" } } as const;

/** One subcommand of a command like `npm run apikey -- create --name NAME`: its flags and what it prints. */
export interface Subcommand {
	options: CliOptions;
	run(values: Record<string, string | boolean | undefined>): string | Promise<string>;
}

/**
 * `npm run <name> -- <subcommand> [flags]`: the usage on `--help` (exit 0) or with no
 * subcommand (exit 2), an unknown one named with the ones there are; errors `isUserError`
 * accepts are reported as usage errors, the rest as `runCli` says.
 */
export function runSubcommands(
	name: string,
	usage: string,
	commands: Record<string, Subcommand>,
	isUserError: (err: unknown) => boolean,
): Promise<never> {
	return runCli(
		name,
		async () => {
			const [command, ...rest] = process.argv.slice(2);
			if (!command || command === "--help" || command === "-h") {
				await write(command ? process.stdout : process.stderr, `${usage}\n`);
				return command ? 0 : 2;
			}
			const spec = commands[command];
			const names = Object.keys(commands);
			if (!spec)
				throw new UsageError(
					`Unknown command "${command}": use ${names.slice(0, -1).join(", ")} or ${names.at(-1)}`,
				);
			const { values } = parseCli(rest, spec.options);
			try {
				await write(
					process.stdout,
					`${await spec.run(values as Record<string, string | boolean | undefined>)}\n`,
				);
			} catch (err) {
				if (isUserError(err)) throw new UsageError((err as Error).message);
				throw err;
			}
			return 0;
		},
		usage,
	);
}
