/**
 * Binding a port the way every listener of this project does (gateway, health, metrics):
 * the port is bound at once, never probed first. When it is taken,
 * - a port the user set (PORT=3000, say) is an error that names the setting;
 * - a default the user did not set gives way to a free port, with a warning naming the
 *   setting, so a second command on the same machine (npm run repl next to npm run serve)
 *   still starts.
 * Either way no `'error'` event is left unhandled.
 */
import type { Server } from "node:net";
import type { AddressInfo } from "node:net";
import type { PortChoice } from "../config";
import { UserError } from "../user-error";

export type { PortChoice };

/** A port the user set is taken (or not allowed). */
export class PortUnavailableError extends UserError {
	constructor(
		readonly choice: PortChoice,
		what: string,
		cause: NodeJS.ErrnoException,
	) {
		super(
			cause.code === "EADDRINUSE"
				? `${choice.variable}=${choice.port}: the port is already in use, so the ${what} cannot listen there. Stop the other process, or set ${choice.variable} to a free port (0 picks any).`
				: `${choice.variable}=${choice.port}: the ${what} cannot listen there (${cause.code ?? cause.message}). Set ${choice.variable} to another port (0 picks any).`,
		);
	}
}

function bind(server: Server, port: number, host: string | undefined): Promise<AddressInfo> {
	return new Promise((resolve, reject) => {
		const onError = (err: Error) => {
			server.off("listening", onListening);
			reject(err);
		};
		const onListening = () => {
			server.off("error", onError);
			resolve(server.address() as AddressInfo);
		};
		server.once("error", onError);
		server.once("listening", onListening);
		server.listen(port, host);
	});
}

/**
 * Binds `server` to the chosen port; if that port is taken and was not set by the user, to
 * a free one, calling `warn` with a line that names the variable. Rejects with a
 * PortUnavailableError otherwise.
 */
export async function listen(
	server: Server,
	choice: PortChoice,
	what: string,
	warn: (line: string) => void,
	host?: string,
): Promise<AddressInfo> {
	try {
		return await bind(server, choice.port, host);
	} catch (err) {
		const error = err as NodeJS.ErrnoException;
		const unavailable = error.code === "EADDRINUSE" || error.code === "EACCES";
		if (!unavailable || choice.explicit || choice.port === 0)
			throw unavailable ? new PortUnavailableError(choice, what, error) : err;
		const address = await bind(server, 0, host);
		warn(
			`Port ${choice.port} (the default of ${choice.variable}) is in use: the ${what} listens on port ${address.port} instead. Set ${choice.variable} to choose one.`,
		);
		return address;
	}
}
