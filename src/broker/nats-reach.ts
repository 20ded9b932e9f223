/**
 * Whether a NATS server of TRANSPORTER is there at all, asked by the commands that join a bus
 * for a while and leave (`npm start`, the REPL, `npm run keys`, audit and export, `npm run
 * cluster -- --transporter`) before they start a broker. Moleculer's transit retries a refused
 * connection every 5 s, forever, logging `CONNECTION_REFUSED`: right for a long-running node
 * that NATS may join later (Kubernetes starts them in any order), but a command then hangs and
 * never says what to start. This opens a TCP connection to each server of the list, at once, and
 * closes it: one that takes it is enough (the NATS client finds it), none is a UserError naming
 * the URL and nats-server. Credentials and TLS are the broker's to check, with their own errors.
 */
import net from "node:net";
import { redactUrl, transporterUrls } from "../nats-tls";
import { UserError } from "../user-error";

/** How long a server has to take the connection: a local one answers in a millisecond. */
export const NATS_REACH_MS = 5_000;

export class NatsUnreachableError extends UserError {}

/** Resolves with null when `host:port` takes a TCP connection within `ms`, else with why not. */
function connects(host: string, port: number, ms: number): Promise<string | null> {
	return new Promise((resolve) => {
		const socket = net.connect({ host, port });
		const done = (why: string | null) => {
			socket.destroy();
			resolve(why);
		};
		socket.setTimeout(ms, () => done(`no answer within ${ms / 1000} s`));
		socket.once("connect", () => done(null));
		socket.once("error", (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
	});
}

/**
 * Throws a NatsUnreachableError when no server of `transporter` takes a TCP connection within
 * `ms`; `otherwise` ends the message with what the command can do instead.
 */
export async function assertNatsReachable(
	transporter: string,
	otherwise: string,
	ms = NATS_REACH_MS,
): Promise<void> {
	const servers = transporterUrls(transporter).map((url) => ({
		// A bracketed IPv6 literal, as URL keeps it, is not a host net.connect takes.
		host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
		port: Number(url.port || 4222),
	}));
	const why = await Promise.all(servers.map(({ host, port }) => connects(host, port, ms)));
	if (why.some((reason) => reason === null)) return;
	const tried = servers.map(({ host, port }, i) => `${host}:${port} (${why[i]})`).join(", ");
	const port = servers[0].port;
	throw new NatsUnreachableError(
		`Cannot reach NATS at ${redactUrl(transporter)}: nothing took a connection at ${tried}. ` +
			`Is nats-server running? Start it there (for example \`nats-server -p ${port}\`; ` +
			`on Debian: apt-get install -y nats-server), ${otherwise}`,
	);
}
