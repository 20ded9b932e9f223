/**
 * Certificates for NATS over TLS on one machine (`npm run cluster -- --tls`, the tests): a CA,
 * one server certificate every nats-server uses for clients and routes, and one client
 * certificate, made with the `openssl` command (no hand-made ASN.1). The folder is 0700 and
 * every file 0600; the CA's key stays in it so nothing else is needed to make more.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { ensurePrivateDir, makePrivate } from "../private-files";

const run = promisify(execFile);

export interface NatsCertificates {
	dir: string;
	/** The CA certificate clients and servers trust (NATS_CA_FILE). */
	caFile: string;
	/** The servers' certificate and key (serverAuth and clientAuth: a route is both). */
	serverCert: string;
	serverKey: string;
	/** A client certificate and key (NATS_CERT_FILE, NATS_KEY_FILE). */
	clientCert: string;
	clientKey: string;
}

/** Found on PATH, as a shell would. */
const OPENSSL = "openssl";
const DAYS_CA = "3650";
const DAYS_LEAF = "825";
const CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

async function openssl(args: string[], cwd: string): Promise<void> {
	try {
		await run(OPENSSL, args, { cwd });
	} catch (err) {
		const failure = err as NodeJS.ErrnoException & { stderr?: string };
		throw new Error(
			failure.code === "ENOENT"
				? "--tls needs the openssl command, which is not on PATH: install it (apt-get install -y openssl)"
				: `openssl ${args[0]} failed: ${failure.stderr?.trim() || failure.message}`,
		);
	}
}

/** The subjectAltName of names and addresses: `DNS:localhost,IP:127.0.0.1,...`. */
export function subjectAltName(hosts: string[]): string {
	return [...new Set(hosts)].map((host) => `${net.isIP(host) ? "IP" : "DNS"}:${host}`).join(",");
}

async function issue(
	dir: string,
	name: string,
	subject: string,
	extensions: string,
): Promise<{ cert: string; key: string }> {
	const key = path.join(dir, `${name}-key.pem`);
	const cert = path.join(dir, `${name}.pem`);
	const csr = path.join(dir, `${name}.csr`);
	const ext = path.join(dir, `${name}.ext`);
	fs.writeFileSync(ext, `${extensions}\n`, { mode: 0o600 });
	try {
		await openssl(["req", ...CURVE, "-keyout", key, "-out", csr, "-subj", subject], dir);
		await openssl(
			[
				"x509",
				"-req",
				"-in",
				csr,
				"-CA",
				"ca.pem",
				"-CAkey",
				"ca-key.pem",
				"-set_serial",
				`0x${Date.now().toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`,
				"-days",
				DAYS_LEAF,
				"-extfile",
				ext,
				"-out",
				cert,
			],
			dir,
		);
	} finally {
		fs.rmSync(csr, { force: true });
		fs.rmSync(ext, { force: true });
	}
	makePrivate(key);
	makePrivate(cert);
	return { cert, key };
}

/**
 * Makes a fresh CA, a server certificate for `hosts` (names and IP addresses the servers are
 * reached at: 127.0.0.1 and localhost are always in) and a client certificate in `dir`.
 */
export async function makeNatsCertificates(
	dir: string,
	hosts: string[] = [],
): Promise<NatsCertificates> {
	ensurePrivateDir(dir);
	fs.chmodSync(dir, 0o700);
	const caFile = path.join(dir, "ca.pem");
	await openssl(
		[
			"req",
			"-x509",
			...CURVE,
			"-keyout",
			"ca-key.pem",
			"-out",
			"ca.pem",
			"-days",
			DAYS_CA,
			"-subj",
			"/CN=record-signer NATS CA",
			"-addext",
			"basicConstraints=critical,CA:TRUE",
			"-addext",
			"keyUsage=critical,keyCertSign,cRLSign",
		],
		dir,
	);
	makePrivate(path.join(dir, "ca-key.pem"));
	makePrivate(caFile);
	const server = await issue(
		dir,
		"server",
		"/CN=nats",
		[
			`subjectAltName=${subjectAltName(["localhost", "127.0.0.1", ...hosts])}`,
			"keyUsage=critical,digitalSignature,keyEncipherment",
			"extendedKeyUsage=serverAuth,clientAuth",
		].join("\n"),
	);
	const client = await issue(
		dir,
		"client",
		"/CN=record-signer node",
		["keyUsage=critical,digitalSignature", "extendedKeyUsage=clientAuth"].join("\n"),
	);
	return {
		dir,
		caFile,
		serverCert: server.cert,
		serverKey: server.key,
		clientCert: client.cert,
		clientKey: client.key,
	};
}
