/**
 * The gateway's outgoing HTTP (webhooks), kept from becoming a way into the network it sits
 * in: by default it refuses loopback, link-local, private and other non-public addresses. The
 * check is on the address actually connected to (the DNS answer at connect time, so a name
 * that changes its answer between a check and the request gets nowhere), and on literal IPs
 * in any notation the URL parser accepts (`http://0x7f000001/` is 127.0.0.1). No redirects are
 * followed, and at most a few KB of any answer are read.
 */
import dns from "node:dns";
import http from "node:http";
import https from "node:https";
import net from "node:net";

export class ForbiddenTargetError extends Error {
	constructor(readonly address: string) {
		super(`refused: the webhook's address ${address} is not a public one (set WEBHOOK_ALLOW_PRIVATE=true to allow loopback and private addresses)`);
		this.name = "ForbiddenTargetError";
	}
}

/** Every range no webhook reaches unless allowed: loopback, private, link-local, shared, multicast, reserved. */
const NON_PUBLIC = (() => {
	const list = new net.BlockList();
	for (const [network, prefix] of [
		["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
		["192.0.0.0", 24], ["192.0.2.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["198.51.100.0", 24], ["203.0.113.0", 24], ["224.0.0.0", 4], ["240.0.0.0", 4]
	] as const)
		list.addSubnet(network, prefix, "ipv4");
	for (const [network, prefix] of [["::", 128], ["::1", 128], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8], ["2001:db8::", 32], ["64:ff9b::", 96], ["100::", 64]] as const)
		list.addSubnet(network, prefix, "ipv6");
	return list;
})();

export function isPublicAddress(address: string): boolean {
	const family = net.isIP(address);
	if (family === 4) return !NON_PUBLIC.check(address, "ipv4");
	if (family !== 6) return false;
	// An IPv4 address written as IPv6 (::ffff:127.0.0.1) is that IPv4 address.
	const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
	if (mapped) return isPublicAddress(mapped[1]);
	return !NON_PUBLIC.check(address, "ipv6");
}

/** A URL a webhook may be registered with: http(s), no credentials, and not a literal non-public IP unless allowed. */
export function checkWebhookUrl(raw: string, allowPrivate: boolean): string | null {
	let url: URL;
	try {
		url = new URL(raw);
	} catch {
		return "callbackUrl must be an absolute http or https URL";
	}
	if (url.protocol !== "http:" && url.protocol !== "https:") return "callbackUrl must be an http or https URL";
	if (url.username || url.password) return "callbackUrl must not carry credentials (user:password@); put a token in its query or path";
	const host = url.hostname.replace(/^\[|\]$/g, "");
	if (!allowPrivate && (net.isIP(host) ? !isPublicAddress(host) : /^localhost$|\.localhost$/i.test(host)))
		return `callbackUrl points at a loopback or private address (${host}); set WEBHOOK_ALLOW_PRIVATE=true to allow it`;
	return null;
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

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void;

/** dns.lookup, refusing any answer that is not a public address. */
function guardedLookup(hostname: string, options: dns.LookupOptions, callback: LookupCallback): void {
	dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
		if (err) return callback(err, []);
		const refused = addresses.find(a => !isPublicAddress(a.address));
		if (refused) return callback(new ForbiddenTargetError(refused.address) as NodeJS.ErrnoException, []);
		if (options.all) return callback(null, addresses);
		callback(null, addresses[0].address, addresses[0].family);
	});
}

/** POSTs `body`; resolves with the answer's status (reading at most `maxResponseBytes` of it). */
export function postJson(raw: string, body: string, headers: Record<string, string>, options: PostOptions): Promise<{ status: number }> {
	return new Promise((resolve, reject) => {
		const url = new URL(raw);
		const host = url.hostname.replace(/^\[|\]$/g, "");
		if (!options.allowPrivate && net.isIP(host) && !isPublicAddress(host)) return reject(new ForbiddenTargetError(host));
		const client = url.protocol === "https:" ? https : http;
		const request = client.request(url, {
			method: "POST",
			headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body), ...headers },
			timeout: options.timeoutMs,
			...(options.allowPrivate ? {} : { lookup: guardedLookup as never }),
			signal: options.signal
		}, response => {
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
		});
		request.on("timeout", () => request.destroy(Object.assign(new Error(`no answer within ${options.timeoutMs} ms`), { name: "TimeoutError" })));
		request.on("error", reject);
		request.end(body);
	});
}
