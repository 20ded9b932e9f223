/**
 * TRANSPORTER as a list of NATS servers, over TLS or not (docs/design.md §10), and the options
 * object Moleculer's NATS transporter hands to nats.js. Moleculer splits a `url` of `nats://`
 * URLs by itself but keeps only each host and the first credentials, so a list with `tls://`,
 * credentials or certificates goes through `servers`, `user`, `pass` and `tls` instead.
 *
 * nats.js sends one user and password to whichever server it connects to, so every URL of the
 * list names the same credentials (or none: a URL without them uses the others').
 * src/config.ts reads the variables and turns these errors into ConfigErrors.
 */
import { X509Certificate, createPrivateKey } from "node:crypto";
import fs from "node:fs";

/** The servers of a TRANSPORTER list, and the one set of credentials nats.js sends to each. */
export interface NatsEndpoints {
	/** `host:port` of each URL, in the order given. */
	servers: string[];
	/** Every URL is `tls://`: the client requires TLS (none is `nats://`: a list does not mix them). */
	tls: boolean;
	user: string | null;
	pass: string | null;
}

/** The certificates of NATS_CA_FILE, NATS_CERT_FILE and NATS_KEY_FILE, read and checked at start. */
export interface NatsTls {
	caFile: string | null;
	certFile: string | null;
	keyFile: string | null;
	/** PEM text of each file, as nats.js passes it to Node's tls.connect. */
	ca: string | null;
	cert: string | null;
	key: string | null;
}

const SCHEMES = ["nats:", "tls:"];
const EXAMPLE = "nats://127.0.0.1:4222, or tls://nats-0:4222,tls://nats-1:4222,tls://nats-2:4222";

/** The URLs of a comma-separated TRANSPORTER, each checked; `name` is what the messages call it. */
export function transporterUrls(transporter: string, name = "TRANSPORTER"): URL[] {
	const parts = transporter.split(",").map((part) => part.trim());
	return parts.map((part) => {
		let url: URL | null = null;
		try {
			url = new URL(part);
		} catch {
			// said below
		}
		if (!url || !SCHEMES.includes(url.protocol) || !url.hostname)
			throw new Error(
				`${name} must be a nats:// URL or a tls:// URL, or a comma-separated list of them (e.g. ${EXAMPLE}), got "${part}"`,
			);
		if ((url.pathname && url.pathname !== "/") || url.search || url.hash)
			throw new Error(
				`${name} URLs name a server only (scheme, credentials, host, port), got "${redactUrl(part)}"`,
			);
		return url;
	});
}

/** Parses TRANSPORTER into the servers and credentials nats.js takes. */
export function natsEndpoints(transporter: string, name = "TRANSPORTER"): NatsEndpoints {
	const urls = transporterUrls(transporter, name);
	const schemes = new Set(urls.map((url) => url.protocol));
	if (schemes.size > 1)
		throw new Error(
			`${name} mixes nats:// and tls:// URLs: a client either requires TLS of every server or of none; use one scheme`,
		);
	const named = urls.filter((url) => url.username);
	const credentials = new Set(named.map((url) => `${url.username}:${url.password}`));
	if (credentials.size > 1)
		throw new Error(
			`${name} URLs name different NATS users or passwords (${named.map((url) => redactUrl(url.href)).join(", ")}): ` +
				"the NATS client sends one set to whichever server it connects to; give every URL the same user and password",
		);
	return {
		servers: urls.map(
			(url) =>
				`${url.hostname.includes(":") ? url.host : url.hostname}:${url.port || "4222"}`,
		),
		tls: urls[0].protocol === "tls:",
		user: named[0] ? decodeURIComponent(named[0].username) : null,
		pass: named[0]?.password ? decodeURIComponent(named[0].password) : null,
	};
}

/** Applies `change` to every URL of a TRANSPORTER list and writes the list back. */
export function mapTransporterUrls(transporter: string, change: (url: URL) => void): string {
	return transporterUrls(transporter)
		.map((url) => {
			change(url);
			return url.toString().replace(/\/$/, "");
		})
		.join(",");
}

/** A TRANSPORTER (one URL or a list) without its passwords, for messages and logs. */
export function redactUrl(transporter: string | null): string {
	return (transporter ?? "").replace(/([a-z]+:\/\/[^:/@,]+:)[^@/,]+@/gi, "$1***@");
}

function readPem(variable: string, file: string): string {
	let text: string;
	try {
		text = fs.readFileSync(file, "utf8");
	} catch (err) {
		throw new Error(
			`${variable} ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): point ${variable} at a PEM file this process may read`,
		);
	}
	if (!text.includes("-----BEGIN "))
		throw new Error(`${variable} ${file} is not a PEM file: give the PEM-encoded file`);
	return text;
}

function checkCertificates(variable: string, file: string, pem: string): X509Certificate {
	try {
		return new X509Certificate(pem);
	} catch (err) {
		throw new Error(
			`${variable} ${file} holds no valid certificate (${(err as Error).message}): give a PEM certificate`,
		);
	}
}

/**
 * Reads and checks the NATS certificate files (null when none is set): the CA must be a
 * certificate, the client certificate and key must both be given and belong together.
 */
export function readNatsTls(files: {
	caFile?: string | null;
	certFile?: string | null;
	keyFile?: string | null;
}): NatsTls | null {
	const caFile = files.caFile || null;
	const certFile = files.certFile || null;
	const keyFile = files.keyFile || null;
	if (!caFile && !certFile && !keyFile) return null;
	if (Boolean(certFile) !== Boolean(keyFile))
		throw new Error(
			certFile
				? "NATS_CERT_FILE is set but NATS_KEY_FILE is not: a client certificate needs its private key; set both or neither"
				: "NATS_KEY_FILE is set but NATS_CERT_FILE is not: a client key needs its certificate; set both or neither",
		);
	const ca = caFile ? readPem("NATS_CA_FILE", caFile) : null;
	if (caFile && ca) checkCertificates("NATS_CA_FILE", caFile, ca);
	const cert = certFile ? readPem("NATS_CERT_FILE", certFile) : null;
	const key = keyFile ? readPem("NATS_KEY_FILE", keyFile) : null;
	if (certFile && keyFile && cert && key) {
		const certificate = checkCertificates("NATS_CERT_FILE", certFile, cert);
		let privateKey;
		try {
			privateKey = createPrivateKey(key);
		} catch (err) {
			throw new Error(
				`NATS_KEY_FILE ${keyFile} holds no valid private key (${(err as Error).message}): give the PEM private key of NATS_CERT_FILE`,
			);
		}
		if (!certificate.checkPrivateKey(privateKey))
			throw new Error(
				`NATS_KEY_FILE ${keyFile} is not the private key of NATS_CERT_FILE ${certFile}: give the key the certificate was made for`,
			);
	}
	return { caFile, certFile, keyFile, ca, cert, key };
}

/**
 * The options object of Moleculer's NATS transporter for a validated TRANSPORTER: no `url`
 * (Moleculer would rebuild the list from it), the servers, the credentials and, with
 * `tls://` URLs, the TLS options nats.js gives Node's tls.connect.
 */
export function natsTransporterOptions(
	transporter: string,
	tls: NatsTls | null,
): Record<string, unknown> {
	const endpoints = natsEndpoints(transporter);
	return {
		servers: endpoints.servers,
		...(endpoints.user ? { user: endpoints.user } : {}),
		...(endpoints.pass ? { pass: endpoints.pass } : {}),
		...(endpoints.tls
			? {
					tls: {
						...(tls?.ca ? { ca: [tls.ca] } : {}),
						...(tls?.cert ? { cert: tls.cert } : {}),
						...(tls?.key ? { key: tls.key } : {}),
					},
				}
			: {}),
	};
}
