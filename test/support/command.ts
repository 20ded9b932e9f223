/**
 * A command as a user runs it in a terminal (`npm run serve`, `npm run dev`,
 * `moleculer-runner services`): its own process group, its output kept, lines typed into its
 * input, and Ctrl-C sent to the whole group as a terminal does.
 */
import { spawn, type ChildProcess } from "node:child_process";

export interface Command {
	child: ChildProcess;
	output(): string;
	/** The exit code (null when ended by a signal). */
	exited: Promise<number | null>;
	/** The first match of `pattern` in the output; rejects when the process ends or time runs out first. */
	waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
	/** Types a line into its input (started with `stdin: true`). */
	send(line: string): void;
	/** Ctrl-C to its process group (SIGKILL after 20 s); true when a broker said it stopped cleanly. */
	interrupt(): Promise<boolean>;
}

const started = new Set<Command>();

export function startCommand(
	file: string,
	args: string[],
	options: { cwd: string; env: NodeJS.ProcessEnv; stdin?: boolean },
): Command {
	const child = spawn(file, args, {
		cwd: options.cwd,
		env: options.env,
		stdio: [options.stdin ? "pipe" : "ignore", "pipe", "pipe"],
		detached: true,
	});
	let output = "";
	child.stdout!.on("data", (chunk) => (output += chunk));
	child.stderr!.on("data", (chunk) => (output += chunk));
	let ended = false;
	const exited = new Promise<number | null>((resolve) =>
		child.once("exit", (code) => {
			ended = true;
			resolve(code);
		}),
	);
	const signalGroup = (signal: NodeJS.Signals) => {
		try {
			process.kill(-child.pid!, signal);
		} catch {
			// gone already
		}
	};
	const command: Command = {
		child,
		output: () => output,
		exited,
		async waitFor(pattern, timeoutMs = 60_000) {
			const deadline = Date.now() + timeoutMs;
			for (;;) {
				const match = output.match(pattern);
				if (match) return match;
				if (ended || Date.now() > deadline)
					throw new Error(
						`${file} ${args.join(" ")} ${ended ? "exited" : `ran ${timeoutMs} ms`} without ${pattern}:\n${output}`,
					);
				await new Promise((resolve) => setTimeout(resolve, 100));
			}
		},
		send(line) {
			child.stdin!.write(`${line}\n`);
		},
		async interrupt() {
			if (!ended) signalGroup("SIGINT");
			const timer = setTimeout(() => signalGroup("SIGKILL"), 20_000);
			await exited;
			clearTimeout(timer);
			return /ServiceBroker is stopped\. Good bye\./.test(output);
		},
	};
	started.add(command);
	void exited.then(() => started.delete(command));
	return command;
}

/** Ends every command still running (afterAll). */
export async function stopAllCommands(): Promise<void> {
	await Promise.all([...started].map((command) => command.interrupt()));
}
