/**
 * Log lines for people (LOG_FORMAT=text, the default: `[time] LEVEL SERVICE: message`) or for
 * machines (LOG_FORMAT=json: one JSON object per line with time, level, node, service, message,
 * and the run, batch and lease ids a message names). Either way, secrets are masked before a
 * line is written: passwords in URLs, bearer tokens, API keys, private JWK members, base64 keys
 * after a *_KEY= or *_SECRET= name.
 */

type Bindings = { nodeID?: string; ns?: string; mod?: string; svc?: string };
type Printer = { printArgs(args: unknown[]): unknown[] };

const SECRETS: Array<[RegExp, string]> = [
	// scheme://user:password@host
	[/([a-z][a-z0-9+.-]*:\/\/[^\s:/@]+:)[^\s@/]+@/gi, "$1***@"],
	// JWTs (three base64url parts starting with a JSON header)
	[/\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}/g, "***jwt***"],
	// API keys: rsk_<id>_<secret>
	[/\b(rsk_[A-Za-z0-9]{12}_)[A-Za-z0-9_-]{20,}/g, "$1***"],
	// private members of a JWK
	[/("(?:d|p|q|dp|dq|qi|k)"\s*:\s*")[^"]+"/g, '$1***"'],
	// NAME_KEY=..., NAME_SECRET=..., PASSWORD=...
	[/\b([A-Z][A-Z0-9_]*(?:KEY|SECRET|PASSWORD|TOKEN)=)\S+/g, "$1***"],
];

/** The text with every secret this module knows the shape of masked. */
export function redact(text: string): string {
	let out = text;
	for (const [pattern, replacement] of SECRETS) out = out.replace(pattern, replacement);
	return out;
}

const BATCH_ID = /\b(run-\d{17}-[a-z0-9]{4})-b\d{6}\b/;
const RUN_ID = /\brun-\d{17}-[a-z0-9]{4}\b/;
const LEASE_ID = /\blease ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b/i;

/** The run, batch and lease a message names, as fields. */
export function idsOf(message: string): { runId?: string; batchId?: string; leaseId?: string } {
	const ids: { runId?: string; batchId?: string; leaseId?: string } = {};
	const batch = BATCH_ID.exec(message);
	if (batch) {
		ids.batchId = batch[0];
		ids.runId = batch[1];
	} else {
		const run = RUN_ID.exec(message);
		if (run) ids.runId = run[0];
	}
	const lease = LEASE_ID.exec(message);
	if (lease) ids.leaseId = lease[1];
	return ids;
}

/** Object members whose names say they are secret, and the private members of a JWK. */
const SECRET_NAME = /secret|password|passwd|token|masterkey|privatekey|sealed|credential|apikey/i;
const JWK_PRIVATE = new Set(["d", "p", "q", "dp", "dq", "qi", "k"]);

/** A copy of `value` with secret members masked (objects and arrays, a few levels deep). */
function redactValue(value: unknown, depth = 0): unknown {
	if (typeof value === "string") return redact(value);
	if (!value || typeof value !== "object" || depth > 4) return value;
	if (Array.isArray(value)) return value.map((item) => redactValue(item, depth + 1));
	const jwk = "kty" in (value as object);
	return Object.fromEntries(
		Object.entries(value as Record<string, unknown>).map(([key, member]) => [
			key,
			SECRET_NAME.test(key) || (jwk && JWK_PRIVATE.has(key))
				? "***"
				: redactValue(member, depth + 1),
		]),
	);
}

/** What one logger call says: its message and, when it was given one, its error; secrets masked. */
interface LogEntry {
	message: string;
	error?: { name: string; message: string; stack?: string };
}

function messageOf(args: unknown[], printer: Printer): LogEntry {
	const errors = args.filter((a): a is Error => a instanceof Error);
	const rest = args.filter((a) => !(a instanceof Error)).map((a) => redactValue(a));
	const message = redact(printer.printArgs(rest).map(String).join(" "));
	if (!errors.length) return { message };
	const [e] = errors;
	return {
		message: message || redact(e.message),
		error: {
			name: e.name,
			message: redact(e.message),
			...(e.stack ? { stack: redact(e.stack) } : {}),
		},
	};
}

type LogFormatter = (
	this: Printer,
	type: string,
	args: unknown[],
	bindings: Bindings,
	printer: Printer,
) => string[];

/** A Moleculer Console logger formatter that writes each call as the one line `line` makes of it. */
function lineFormatter(
	line: (type: string, bindings: Bindings, entry: LogEntry) => string,
): LogFormatter {
	return (type, args, bindings, printer) => [line(type, bindings, messageOf(args, printer))];
}

/** Moleculer Console logger formatter: one JSON object per line. */
export const jsonLogFormatter = lineFormatter((type, bindings, { message, error }) =>
	JSON.stringify({
		time: new Date().toISOString(),
		level: type,
		node: bindings?.nodeID,
		service: bindings?.svc ?? bindings?.mod,
		message,
		...idsOf(message),
		...(error ? { error } : {}),
	}),
);

/** Moleculer Console logger formatter: `[time] LEVEL SERVICE: message`, secrets masked. */
export const textLogFormatter = lineFormatter((type, bindings, { message, error }) => {
	const service = String(bindings?.svc ?? bindings?.mod ?? "").toUpperCase();
	return `[${new Date().toISOString().substring(11)}] ${type.toUpperCase().padEnd(5)} ${service}: ${message}${error ? `${message ? " " : ""}${error.stack ?? `${error.name}: ${error.message}`}` : ""}`;
});
