/**
 * The gateway's outgoing HTTP (webhooks), kept from becoming a way into the network it sits
 * in: by default it refuses loopback, link-local, private and other non-public addresses. One
 * classification (refusedTarget, isPublicAddress) serves the registration of a webhook and its
 * delivery. The check is on the address actually connected to (the DNS answer at connect
 * time, so a name that changes its answer between a check and the request gets nowhere), on
 * literal IPs in any notation the URL parser accepts (`http://0x7f000001/` is 127.0.0.1,
 * `[::ffff:7f00:1]` too), and on the names that are loopback without asking DNS (`localhost`,
 * `LOCALHOST.`, `x.localhost`, `localhost.localdomain`). A webhook is registered only if its
 * name resolves to public addresses or does not resolve yet. No redirects are followed, and at
 * most a few KB of any answer are read.
 */
import dns from "node:dns";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { normalizeAddress } from "./client-address";

export class ForbiddenTargetError extends Error {
	constructor(readonly address: string) {
		super(
			`refused: the webhook's address ${address} is not a public one (set WEBHOOK_ALLOW_PRIVATE=true to allow loopback and private addresses)`,
		);
		this.name = "ForbiddenTargetError";
	}
}

function blockList(
	family: "ipv4" | "ipv6",
	ranges: ReadonlyArray<readonly [string, number]>,
): net.BlockList {
	const list = new net.BlockList();
	for (const [network, prefix] of ranges) list.addSubnet(network, prefix, family);
	return list;
}

/** Every IPv4 range no webhook reaches unless allowed: this network, private, shared, loopback, link-local, protocol assignments, documentation, 6to4 relays, benchmarking, multicast, reserved. */
const NON_PUBLIC_V4 = blockList("ipv4", [
	["0.0.0.0", 8],
	["10.0.0.0", 8],
	["100.64.0.0", 10],
	["127.0.0.0", 8],
	["169.254.0.0", 16],
	["172.16.0.0", 12],
	["192.0.0.0", 24],
	["192.0.2.0", 24],
	["192.88.99.0", 24],
	["192.168.0.0", 16],
	["198.18.0.0", 15],
	["198.51.100.0", 24],
	["203.0.113.0", 24],
	["224.0.0.0", 4],
	["240.0.0.0", 4],
]);

/**
 * IPv6 is public only in global unicast (2000::/3), which leaves out the unspecified and
 * loopback addresses, IPv4-compatible (::/96) and -translated (::ffff:0:0:0/96) forms, NAT64
 * (64:ff9b::/96, 64:ff9b:1::/48), discard (100::/64), unique local (fc00::/7), link-local
 * (fe80::/10), site-local (fec0::/10) and multicast (ff00::/8).
 */
const GLOBAL_UNICAST_V6 = blockList("ipv6", [["2000::", 3]]);
/** ... and not these parts of it: protocol assignments (Teredo, benchmarking, ORCHID), documentation, 6to4 (an IPv4 address inside). */
const NON_PUBLIC_V6 = blockList("ipv6", [
	["2001::", 23],
	["2001:db8::", 32],
	["2002::", 16],
	["3fff::", 20],
]);

/** Whether a webhook may reach `address` (an IP in any notation); false for anything that is not an IP. */
export function isPublicAddress(address: string): boolean {
	// An IPv4 address written as IPv6 (::ffff:127.0.0.1, ::ffff:7f00:1) is that IPv4 address.
	const canonical = normalizeAddress(address);
	if (!canonical) return false;
	if (net.isIPv4(canonical)) return !NON_PUBLIC_V4.check(canonical, "ipv4");
	return GLOBAL_UNICAST_V6.check(canonical, "ipv6") && !NON_PUBLIC_V6.check(canonical, "ipv6");
}

/** Names that are loopback without asking DNS (RFC 6761 `localhost` and the /etc/hosts aliases of loopback), after any trailing dots. */
const LOOPBACK_NAME =
	/^(localhost[46]?|ip6-localhost|ip6-loopback)(\.localdomain[46]?)?$|\.localhost$/;

/**
 * The one check of a URL's host, at registration and at delivery alike: the host as refused
 * (a literal non-public IP, or a loopback name), or null when it may be tried. Any other name
 * is checked on what it resolves to (refusedAnswer), at registration and at connect time.
 */
export function refusedTarget(hostname: string): string | null {
	const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
	if (net.isIP(host)) return isPublicAddress(host) ? null : host;
	return LOOPBACK_NAME.test(host.replace(/\.+$/, "")) ? host : null;
}

/** The first of a name's DNS answers that is not public, or null when all are. */
function refusedAnswer(addresses: readonly dns.LookupAddress[]): string | null {
	return addresses.find((a) => !isPublicAddress(a.address))?.address ?? null;
}

const privateAddressAdvice = "set WEBHOOK_ALLOW_PRIVATE=true to allow it";

/** A URL a webhook may be registered with: http(s), no credentials, and not a literal non-public IP or loopback name unless allowed. */
export function checkWebhookUrl(raw: string, allowPrivate: boolean): string | null {
	let url: URL;
	try {
		url = new URL(raw);
	} catch {
		return "callbackUrl must be an absolute http or https URL";
	}
	if (url.protocol !== "http:" && url.protocol !== "https:")
		return "callbackUrl must be an http or https URL";
	if (url.username || url.password)
		return "callbackUrl must not carry credentials (user:password@); put a token in its query or path";
	const refused = allowPrivate ? null : refusedTarget(url.hostname);
	if (refused)
		return `callbackUrl points at a loopback or private address (${refused}); ${privateAddressAdvice}`;
	return null;
}

export type Resolver = (hostname: string) => Promise<dns.LookupAddress[]>;
const systemResolver: Resolver = (hostname) => dns.promises.lookup(hostname, { all: true });

/**
 * checkWebhookUrl, then a name resolved as delivery resolves it (dns.lookup): refused when an
 * answer is not public. A name that does not resolve within `timeoutMs` (or at all) is
 * accepted; delivery checks its answers again when it connects.
 */
export async function checkWebhookTarget(
	raw: string,
	allowPrivate: boolean,
	resolve: Resolver = systemResolver,
	timeoutMs = 2_000,
): Promise<string | null> {
	const refused = checkWebhookUrl(raw, allowPrivate);
	if (refused || allowPrivate) return refused;
	const host = new URL(raw).hostname;
	if (net.isIP(host.replace(/^\[|\]$/g, ""))) return null;
	let timer: NodeJS.Timeout | undefined;
	const answers = await Promise.race([
		resolve(host).catch(() => null),
		new Promise<null>((done) => (timer = setTimeout(() => done(null), timeoutMs).unref())),
	]).finally(() => clearTimeout(timer));
	const address = answers && refusedAnswer(answers);
	return address
		? `callbackUrl points at a loopback or private address (${host} resolves to ${address}); ${privateAddressAdvice}`
		: null;
}

/** The URL as public reads may show it: no query, no credentials (a token there stays private). */
export function publicUrl(raw: string): string {
	try {
		const url = new URL(raw);
		return `${url.protocol}//${url.host}${url.pathname}`;
	} catch {
		return "(invalid URL)";
	}
}

export interface PostOptions {
	timeoutMs: number;
	signal?: AbortSignal;
	allowPrivate: boolean;
	/** Bytes of the answer read at most (the rest is dropped with the connection). */
	maxResponseBytes: number;
}

type LookupCallback = (
	err: NodeJS.ErrnoException | null,
	address: string | dns.LookupAddress[],
	family?: number,
) => void;

/** dns.lookup, refusing any answer that is not a public address. */
function guardedLookup(
	hostname: string,
	options: dns.LookupOptions,
	callback: LookupCallback,
): void {
	dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
		if (err) return callback(err, []);
		const refused = refusedAnswer(addresses);
		if (refused)
			return callback(new ForbiddenTargetError(refused) as NodeJS.ErrnoException, []);
		if (options.all) return callback(null, addresses);
		callback(null, addresses[0].address, addresses[0].family);
	});
}

/** POSTs `body`; resolves with the answer's status (reading at most `maxResponseBytes` of it). */
export function postJson(
	raw: string,
	body: string,
	headers: Record<string, string>,
	options: PostOptions,
): Promise<{ status: number }> {
	return new Promise((resolve, reject) => {
		const url = new URL(raw);
		const refused = options.allowPrivate ? null : refusedTarget(url.hostname);
		if (refused) return reject(new ForbiddenTargetError(refused));
		const client = url.protocol === "https:" ? https : http;
		const request = client.request(
			url,
			{
				method: "POST",
				headers: {
					"Content-Type": "application/json",
					"Content-Length": Buffer.byteLength(body),
					...headers,
				},
				timeout: options.timeoutMs,
				...(options.allowPrivate ? {} : { lookup: guardedLookup as never }),
				signal: options.signal,
			},
			(response) => {
				let read = 0;
				response.on("data", (chunk: Buffer) => {
					read += chunk.length;
					// Enough to know it answered; a huge answer is not ours to hold.
					if (read > options.maxResponseBytes) response.destroy();
				});
				const done = () => resolve({ status: response.statusCode ?? 0 });
				response.on("end", done);
				response.on("close", done);
				response.on("error", done);
			},
		);
		request.on("timeout", () =>
			request.destroy(
				Object.assign(new Error(`no answer within ${options.timeoutMs} ms`), {
					name: "TimeoutError",
				}),
			),
		);
		request.on("error", reject);
		request.end(body);
	});
}
