/** Runs the built CLI commands (dist/) as separate processes with Node >= 22. */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";

export const ROOT = path.resolve(__dirname, "../..");

/** The Node running jest is the project's Node 22 (npm scripts put it first on PATH). */
export const NODE = process.execPath;

export interface Finished {
	code: number | null;
	signal: NodeJS.Signals | null;
	stdout: string;
	stderr: string;
}

export function startCli(
	script: string,
	args: string[],
	env: Record<string, string>,
): { child: ChildProcess; output: () => string; finished: Promise<Finished> } {
	const child = spawn(NODE, [path.join(ROOT, "dist/src/cli", script), ...args], {
		cwd: ROOT,
		env: { ...process.env, TRANSPORTER: "", MONGO_URI: "", ...env },
		stdio: ["ignore", "pipe", "pipe"],
	});
	let stdout = "";
	let stderr = "";
	child.stdout!.on("data", (chunk) => (stdout += chunk));
	child.stderr!.on("data", (chunk) => (stderr += chunk));
	const finished = new Promise<Finished>((resolve) =>
		child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr })),
	);
	return { child, output: () => stdout + stderr, finished };
}

export function runCli(
	script: string,
	args: string[],
	env: Record<string, string>,
): Promise<Finished> {
	return startCli(script, args, env).finished;
}
