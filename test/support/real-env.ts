/**
 * Sets a variable in this process's real environment, which native libraries read with getenv
 * (SoftHSM reads SOFTHSM2_CONF when Cryptoki starts). A Jest test's `process.env` is a copy, so
 * setting it there reaches no library: a worker thread sharing the environment (SHARE_ENV) sets it.
 */
import { SHARE_ENV, Worker } from "node:worker_threads";

export function setRealEnv(name: string, value: string): Promise<void> {
	return new Promise((resolve, reject) => {
		const worker = new Worker(
			`process.env[${JSON.stringify(name)}] = ${JSON.stringify(value)};`,
			{
				eval: true,
				env: SHARE_ENV,
			},
		);
		worker.on("error", reject);
		worker.on("exit", (code) =>
			code === 0 ? resolve() : reject(new Error(`setting ${name} exited ${code}`)),
		);
	});
}
