/**
 * IP addresses as text: one canonical form per address (what the gateway keys its limits by and
 * what webhook targets are classified by), and TRUSTED_PROXIES entries, which the configuration
 * validates at start. No broker, no I/O.
 */
import net from "node:net";

/**
 * The canonical text of an IP address, or null when `raw` is not one: IPv4 dotted decimal;
 * an IPv4-mapped IPv6 address as its IPv4 address; IPv6 compressed and lower case (RFC 5952),
 * without a zone (`%eth0`).
 */
export function normalizeAddress(raw: string): string | null {
	const text = raw.trim();
	const family = net.isIP(text);
	// Node's isIPv4 takes only four decimal numbers without leading zeros: already canonical.
	if (family === 4) return text;
	if (family !== 6) return null;
	let canonical: string;
	try {
		// The WHATWG URL parser writes IPv6 hosts in the RFC 5952 form.
		canonical = new URL(`http://[${text.split("%")[0]}]/`).hostname.slice(1, -1);
	} catch {
		return null;
	}
	const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
	if (!mapped) return canonical;
	const high = parseInt(mapped[1], 16);
	const low = parseInt(mapped[2], 16);
	return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
}

/**
 * One TRUSTED_PROXIES entry, an address (`127.0.0.1`, `::1`) or a CIDR range (`10.0.0.0/8`,
 * `fd00::/8`), as a canonical `address/prefix`; null when it is neither. An IPv4-mapped
 * range (`::ffff:10.0.0.0/104`) is its IPv4 range (`10.0.0.0/8`), as addresses are.
 */
export function proxyRule(entry: string): string | null {
	const [addressText, prefixText, ...rest] = entry.trim().split("/");
	if (rest.length > 0 || addressText.includes("%")) return null;
	const address = normalizeAddress(addressText);
	if (!address) return null;
	const v4 = net.isIPv4(address);
	const written6 = net.isIPv6(addressText.trim());
	const bits = written6 ? 128 : 32;
	let prefix = bits;
	if (prefixText !== undefined) {
		if (!/^\d{1,3}$/.test(prefixText)) return null;
		prefix = Number(prefixText);
		if (prefix > bits) return null;
	}
	if (v4 && written6) {
		// Written as IPv4-mapped IPv6: the range must stay inside ::ffff:0:0/96.
		if (prefix < 96) return null;
		prefix -= 96;
	}
	return `${address}/${prefix}`;
}
