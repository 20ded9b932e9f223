/**
 * TRANSPORTER as a list of NATS servers, over TLS or not, and the NATS certificate variables
 * (src/nats-tls.ts, read by src/config.ts): what nats.js is given, and every refusal
 * naming its variable. Files with real certificates, and a real TLS connection, are
 * test/integration/nats-tls.test.ts (making certificates needs the openssl command).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { brokerOptions } from "../../src/broker/broker-options";
import { nodeIdFor, roleUrl, transporterUser } from "../../src/broker/nats-permissions";
import { natsEndpoints, natsTransporterOptions, redactUrl } from "../../src/nats-tls";
import { ConfigError, loadConfig } from "../../src/config";

let dir: string;
beforeAll(() => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "nats-tls-unit-"));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const THREE = "tls://ops:pw@n0:4222,tls://ops:pw@n1:4223,tls://n2:4224";

describe("TRANSPORTER as a list of servers", () => {
	test("one nats:// URL is one server, its credentials the connection's", () => {
		expect(natsEndpoints("nats://api:secret@127.0.0.1:4222")).toEqual({
			servers: ["127.0.0.1:4222"],
			tls: false,
			user: "api",
			pass: "secret",
		});
	});

	test("a comma-separated list of tls:// URLs is every server, TLS required, credentials from the URLs", () => {
		expect(natsEndpoints(THREE)).toEqual({
			servers: ["n0:4222", "n1:4223", "n2:4224"],
			tls: true,
			user: "ops",
			pass: "pw",
		});
		expect(natsEndpoints("nats://a:4222, nats://b").servers).toEqual(["a:4222", "b:4222"]);
	});

	test("Moleculer gets servers, user, pass and tls, and no url it would split again", () => {
		const config = loadConfig({ TRANSPORTER: THREE, DATA_DIR: "" });
		const transporter = brokerOptions(config).transporter as {
			type: string;
			options: Record<string, unknown>;
		};
		expect(transporter.type).toBe("NATS");
		expect(transporter.options).toMatchObject({
			servers: ["n0:4222", "n1:4223", "n2:4224"],
			user: "ops",
			pass: "pw",
			tls: {},
			maxReconnectAttempts: -1,
		});
		expect(transporter.options.url).toBeUndefined();
		expect(natsTransporterOptions("nats://127.0.0.1:4222", null)).toEqual({
			servers: ["127.0.0.1:4222"],
		});
	});

	test("the ops user is found on a list too, and roleUrl gives every URL the role's credentials", () => {
		expect(transporterUser(THREE)).toBe("ops");
		expect(nodeIdFor(THREE, "me")).toBe("ops.me");
		expect(roleUrl("tls://127.0.0.1:1,tls://127.0.0.1:2", "signer", "s3cret")).toBe(
			"tls://signer:s3cret@127.0.0.1:1,tls://signer:s3cret@127.0.0.1:2",
		);
	});

	test("passwords are hidden in messages, on every URL", () => {
		expect(redactUrl("nats://a:x@h:1,nats://a:y@h:2")).toBe(
			"nats://a:***@h:1,nats://a:***@h:2",
		);
	});

	test("NATS_PASSWORD_FILE puts the password into every URL, each of which must name the user", () => {
		const file = path.join(dir, "password");
		fs.writeFileSync(file, "from-file\n");
		expect(
			loadConfig({
				TRANSPORTER: "nats://api@n0:4222,nats://api@n1:4222",
				NATS_PASSWORD_FILE: file,
				DATA_DIR: "",
			}).transporter,
		).toBe("nats://api:from-file@n0:4222,nats://api:from-file@n1:4222");
		expect(() =>
			loadConfig({
				TRANSPORTER: "nats://api@n0:4222,nats://n1:4222",
				NATS_PASSWORD_FILE: file,
			}),
		).toThrow("NATS_PASSWORD_FILE is set, so every TRANSPORTER URL must name the user");
	});

	test.each([
		[
			"redis://x",
			"TRANSPORTER must be a nats:// URL or a tls:// URL, or a comma-separated list",
		],
		["nats://a:4222,", "TRANSPORTER must be a nats:// URL or a tls:// URL"],
		["nats://a:4222,redis://b", 'got "redis://b"'],
		["nats://a:4222,tls://b:4222", "TRANSPORTER mixes nats:// and tls:// URLs"],
		[
			"nats://a:x@a:1,nats://b:y@b:2",
			"TRANSPORTER URLs name different NATS users or passwords",
		],
		["nats://a:4222/path", "TRANSPORTER URLs name a server only"],
	])("TRANSPORTER=%j is refused by name", (value, message) => {
		expect(() => loadConfig({ TRANSPORTER: value })).toThrow(ConfigError);
		expect(() => loadConfig({ TRANSPORTER: value })).toThrow(message);
	});

	test("different passwords are not printed in the refusal", () => {
		expect(() => loadConfig({ TRANSPORTER: "nats://a:x1@a:1,nats://a:y1@b:2" })).toThrow(
			/nats:\/\/a:\*\*\*@a:1, nats:\/\/a:\*\*\*@b:2/,
		);
	});
});

describe("NATS_CA_FILE, NATS_CERT_FILE, NATS_KEY_FILE", () => {
	const tls = "tls://127.0.0.1:4222";

	test("none set: no TLS files; tls:// alone trusts the system's CAs", () => {
		expect(loadConfig({ TRANSPORTER: tls, DATA_DIR: "" }).natsTls).toBeNull();
	});

	test("a missing file stops the node naming the variable and what to do", () => {
		const missing = path.join(dir, "nope.pem");
		expect(() => loadConfig({ TRANSPORTER: tls, NATS_CA_FILE: missing })).toThrow(
			`NATS_CA_FILE ${missing} cannot be read (ENOENT): point NATS_CA_FILE at a PEM file`,
		);
		expect(() =>
			loadConfig({ TRANSPORTER: tls, NATS_CERT_FILE: missing, NATS_KEY_FILE: missing }),
		).toThrow(`NATS_CERT_FILE ${missing} cannot be read (ENOENT)`);
	});

	test("a file that is not PEM, or PEM that is no certificate, is refused by name", () => {
		const text = path.join(dir, "text.pem");
		fs.writeFileSync(text, "hello");
		expect(() => loadConfig({ TRANSPORTER: tls, NATS_CA_FILE: text })).toThrow(
			`NATS_CA_FILE ${text} is not a PEM file`,
		);
		const bogus = path.join(dir, "bogus.pem");
		fs.writeFileSync(bogus, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
		expect(() => loadConfig({ TRANSPORTER: tls, NATS_CA_FILE: bogus })).toThrow(
			`NATS_CA_FILE ${bogus} holds no valid certificate`,
		);
	});

	test("a client certificate without its key (or a key without its certificate) is refused", () => {
		const file = path.join(dir, "any.pem");
		fs.writeFileSync(file, "x");
		expect(() => loadConfig({ TRANSPORTER: tls, NATS_CERT_FILE: file })).toThrow(
			"NATS_CERT_FILE is set but NATS_KEY_FILE is not",
		);
		expect(() => loadConfig({ TRANSPORTER: tls, NATS_KEY_FILE: file })).toThrow(
			"NATS_KEY_FILE is set but NATS_CERT_FILE is not",
		);
	});

	test("a certificate file with nats:// URLs is refused: TLS needs tls:// URLs", () => {
		const file = path.join(dir, "unread.pem");
		expect(() =>
			loadConfig({ TRANSPORTER: "nats://127.0.0.1:4222", NATS_CA_FILE: file }),
		).toThrow("NATS_CA_FILE set but TRANSPORTER names nats:// URLs: use tls:// URLs");
	});
});
