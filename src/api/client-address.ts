/**
 * Who a request comes from, for the limits per client (the start-run rate limit, the event
 * streams): the socket's peer, or, when that peer is a trusted proxy (TRUSTED_PROXIES), the
 * address the proxies put in `X-Forwarded-For`. The header is read from the right (each proxy
 * appends the address it got the request from) and proxies in it that are trusted themselves
 * are skipped: the first address that is not a trusted proxy is the client. Anything else in
 * the header could be written by the client, so it is never read past that point; an entry
 * that is not an IP address means the header is not to be believed, and the peer is the client.
 *
 * Every distinct IP address is a distinct client (127.0.0.2 and 127.0.0.3 are two); the
 * notations of one address are one client (`::ffff:127.0.0.2` is 127.0.0.2, `2001:DB8:0::1`
 * is 2001:db8::1). No broker in here.
 */
import type { IncomingMessage } from "node:http";
import net from "node:net";
import { normalizeAddress, proxyRule } from "../ip-address";

export { normalizeAddress, proxyRule };

/** The trusted proxies: canonical rules (proxyRule) matched with a net.BlockList. */
export class TrustedProxies {
	private readonly list = new net.BlockList();
	readonly rules: readonly string[];

	constructor(rules: readonly string[] = []) {
		const parsed: string[] = [];
		for (const entry of rules) {
			const rule = proxyRule(entry);
			if (!rule) throw new Error(`not an IP address or CIDR range: "${entry}"`);
			const [address, prefix] = rule.split("/");
			this.list.addSubnet(address, Number(prefix), net.isIPv4(address) ? "ipv4" : "ipv6");
			parsed.push(rule);
		}
		this.rules = parsed;
	}

	/** Whether `address` (any notation) is a trusted proxy. */
	has(address: string): boolean {
		if (this.rules.length === 0) return false;
		const canonical = normalizeAddress(address);
		if (!canonical) return false;
		return this.list.check(canonical, net.isIPv4(canonical) ? "ipv4" : "ipv6");
	}
}

/** The part of a request clientAddress reads. */
export type AddressedRequest = Pick<IncomingMessage, "headers"> & {
	socket: { remoteAddress?: string };
};

/** The client of `req` as the limits count it (see the top of this file); "unknown" for a socket already gone. */
export function clientAddress(req: AddressedRequest, trusted: TrustedProxies): string {
	const peer = normalizeAddress(req.socket.remoteAddress ?? "");
	if (!peer) return "unknown";
	const header = req.headers["x-forwarded-for"];
	if (header === undefined || !trusted.has(peer)) return peer;
	// Several X-Forwarded-For lines are one list, in order.
	const entries = (Array.isArray(header) ? header.join(",") : header).split(",");
	let client = peer;
	for (let i = entries.length - 1; i >= 0; i--) {
		const address = normalizeAddress(entries[i]);
		if (!address) return peer;
		client = address;
		if (!trusted.has(address)) return address;
	}
	// Every hop a trusted proxy: the farthest one is where the request started.
	return client;
}
