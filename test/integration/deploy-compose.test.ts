/**
 * docker-compose.yml, checked without Docker: parsed and held to what the deployment promises
 * (pinned images, health checks, one keyring, scalable signers, MongoDB and NATS wired in,
 * no secret committed). `docker compose config` runs too where a compose CLI is installed.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parse } from "yaml";
import { evalScriptOf, runHealthScript } from "../support/mongo-health";
import { findNatsServer } from "../support/nats-server";

const ROOT = path.resolve(__dirname, "../..");
const COMPOSE_FILE = path.join(ROOT, "docker-compose.yml");

interface ComposeService {
	image?: string;
	build?: unknown;
	command?: string[] | string;
	environment?: Record<string, string | number | null>;
	healthcheck?: { test?: string[] | string; disable?: boolean };
	depends_on?: Record<string, { condition?: string }>;
	deploy?: { replicas?: number };
	container_name?: string;
	ports?: string[];
	volumes?: string[];
	restart?: string;
	stop_grace_period?: string;
}
interface ComposeFile {
	services: Record<string, ComposeService>;
	volumes?: Record<string, unknown>;
}

const compose = parse(fs.readFileSync(COMPOSE_FILE, "utf8"), { merge: true }) as ComposeFile;
const services = compose.services;
const env = (name: string): Record<string, string> =>
	Object.fromEntries(
		Object.entries(services[name]?.environment ?? {}).map(([key, value]) => [
			key,
			String(value),
		]),
	);
/** Long-running nodes of the app: the ones with a role. */
const roleServices = Object.entries(services).filter(
	([, service]) => service.environment?.SERVICES !== undefined,
);
const roleOf = (name: string) => String(services[name].environment!.SERVICES);

/** Seconds of a compose duration such as "45s" or "1m30s". */
function seconds(duration: string | undefined): number {
	if (!duration) return 10; // compose's default stop grace period
	let total = 0;
	for (const [, value, unit] of duration.matchAll(/(\d+(?:\.\d+)?)(h|m|s|ms)/g))
		total +=
			Number(value) * { h: 3600, m: 60, s: 1, ms: 0.001 }[unit as "h" | "m" | "s" | "ms"];
	return total;
}

describe("docker-compose.yml", () => {
	test("has NATS, MongoDB, the keyring, the api node, signers and the one-shot run", () => {
		expect(Object.keys(services).sort()).toEqual([
			"api",
			"keyring",
			"mongo",
			"nats-1",
			"nats-2",
			"nats-3",
			"nats-certs",
			"nats-passwords",
			"run",
			"signer",
		]);
		expect(roleServices.map(([name]) => name).sort()).toEqual(["api", "keyring", "signer"]);
		expect(roleOf("keyring")).toBe("keyring");
		expect(roleOf("api").split(",").sort()).toEqual(["api", "batcher", "metrics", "records"]);
		expect(roleOf("signer")).toBe("signer");
	});

	test("every image is pinned to an exact version, never latest", () => {
		const ownVersion = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"))
			.version as string;
		for (const [name, service] of Object.entries(services)) {
			expect({ name, image: service.image }).toEqual({
				name,
				image: expect.stringMatching(/^[a-z0-9./-]+:\d+\.\d+\.\d+(-[a-z0-9.]+)?$/),
			});
			expect(service.image).not.toMatch(/:latest$/);
		}
		for (const name of NATS_MEMBERS) expect(services[name].image).toMatch(/^nats:2\.\d+\.\d+/);
		expect(services.mongo.image).toMatch(/^mongo:\d+\.\d+\.\d+$/);
		// The app's image carries the package version and is built from the Dockerfile here.
		for (const [name, service] of roleServices) {
			expect({ name, image: service.image }).toEqual({
				name,
				image: `record-signer:${ownVersion}`,
			});
			expect(service.build).toBeDefined();
		}
	});

	test("the MongoDB server is 8.0, one the installed driver supports", () => {
		// The driver declares the server lines it speaks (lib/cmap/wire_protocol/constants.js).
		const driverVersion = require("mongodb/package.json").version as string;
		expect(driverVersion).toMatch(/^7\./);
		const { MIN_SUPPORTED_SERVER_VERSION, MAX_SUPPORTED_SERVER_VERSION } =
			require("mongodb/lib/cmap/wire_protocol/constants") as Record<string, string>;
		const line = (version: string) =>
			version
				.split(".")
				.slice(0, 2)
				.map(Number)
				.reduce((major, minor) => major * 100 + minor);
		const server = line(services.mongo.image!.split(":")[1]);
		expect(server).toBe(800);
		expect(server).toBeGreaterThanOrEqual(line(MIN_SUPPORTED_SERVER_VERSION));
		expect(server).toBeLessThanOrEqual(line(MAX_SUPPORTED_SERVER_VERSION));
	});

	test("every long-running service has a health check; NATS and MongoDB are waited for until healthy", () => {
		for (const [name, service] of Object.entries(services)) {
			if (service.restart === "no") continue; // the one-shot run exits by design
			expect({ name, disabled: service.healthcheck?.disable ?? false }).toEqual({
				name,
				disabled: false,
			});
			expect({ name, test: service.healthcheck?.test?.[0] }).toEqual({
				name,
				test: expect.stringMatching(/^CMD(-SHELL)?$/),
			});
		}
		for (const [name, service] of roleServices) {
			for (const member of NATS_MEMBERS)
				expect({ name, member, nats: service.depends_on?.[member]?.condition }).toEqual({
					name,
					member,
					nats: "service_healthy",
				});
			// App nodes report ready on the health route every role serves.
			expect(JSON.stringify(service.healthcheck?.test)).toContain("/health/ready");
			expect(env(name).HEALTH_PORT).toBe("3001");
		}
		for (const name of ["keyring", "api"])
			expect(services[name].depends_on?.mongo?.condition).toBe("service_healthy");
		expect(Object.keys(services.run.depends_on ?? {}).sort()).toEqual([
			"api",
			"keyring",
			"signer",
		]);
	});

	test("exactly one keyring, several signers", () => {
		// A fixed container_name makes compose refuse to scale the service past one.
		expect(services.keyring.container_name).toBeTruthy();
		expect(services.keyring.deploy?.replicas ?? 1).toBe(1);
		// The batcher on the api node is single too.
		expect(services.api.container_name).toBeTruthy();
		expect(services.signer.container_name).toBeUndefined();
		expect(services.signer.deploy?.replicas).toBeGreaterThanOrEqual(2);
		// Host ports on a scaled service would collide.
		expect(services.signer.ports).toBeUndefined();
	});

	describe("NATS has one user per role, its passwords made on the first start", () => {
		const script = (name: string) =>
			String((services[name].command as string[])[0]).replaceAll("$$", "$");

		test("the passwords are made once, one per role, readable by the app's user; nats-server starts with them and the committed configuration", () => {
			const root = fs.mkdtempSync(path.join(os.tmpdir(), "compose-nats-"));
			try {
				for (const role of ["keyring", "signer", "api", "ops"])
					fs.mkdirSync(path.join(root, role));
				const make = () =>
					spawnSync(
						"sh",
						["-c", script("nats-passwords").replaceAll("/secrets/", `${root}/`)],
						{ encoding: "utf8" },
					);
				expect(make().status).toBe(0);
				const passwords = ["keyring", "signer", "api", "ops"].map((role) =>
					fs.readFileSync(path.join(root, role, "nats-password"), "utf8").trim(),
				);
				expect(new Set(passwords).size).toBe(4);
				// Starting with a letter: nats-server would read a value such as 1e5... as a number and refuse it.
				for (const password of passwords)
					expect(password).toMatch(/^[A-Za-z][A-Za-z0-9]{20,}$/);
				expect(fs.statSync(path.join(root, "api", "nats-password")).mode & 0o444).toBe(
					0o444,
				);
				// A second start keeps them.
				expect(make().status).toBe(0);
				expect(
					fs.readFileSync(path.join(root, "api", "nats-password"), "utf8").trim(),
				).toBe(passwords[2]);
				// A member's own start line, pointed at these files, its certificates and the committed configuration, in test mode.
				const tls = makeComposeCertificates(root);
				const start =
					script("nats-1")
						.replaceAll("/secrets/", `${root}/`)
						.replace("/etc/nats/nats-server.conf", memberConfig(root, tls.server)) +
					" -t";
				const tested = spawnSync(
					"sh",
					["-c", start.replace("exec nats-server", `exec ${findNatsServer()}`)],
					{ encoding: "utf8", env: { ...process.env, ...env("nats-1") } },
				);
				expect({ status: tested.status, output: tested.stdout + tested.stderr }).toEqual({
					status: 0,
					output: expect.stringContaining("is valid"),
				});
			} finally {
				fs.rmSync(root, { recursive: true, force: true });
			}
		});

		test("the keyring runs under the node id the permissions name; its signers' credential is shared read-only", () => {
			expect(env("keyring").NODE_ID).toBe("keyring");
			expect(fs.readFileSync(path.join(ROOT, "k8s", "nats-server.conf"), "utf8")).toContain(
				'"MOL-signing.REQ.keyring"',
			);
			expect(env("keyring").SIGNER_KEY_FILE).toBe("/credentials/signer.key");
			expect(services.keyring.volumes).toContain("signer-credential:/credentials");
			expect(env("signer").SIGNER_KEY_FILE).toBe("/credentials/signer.key");
			expect(services.signer.volumes).toContain("signer-credential:/credentials:ro");
			expect(services.signer.depends_on?.keyring?.condition).toBe("service_healthy");
			for (const name of ["api", "run"])
				expect({
					name,
					volumes: (services[name].volumes ?? []).filter((v) =>
						v.startsWith("signer-credential"),
					),
				}).toEqual({ name, volumes: [] });
			// The batcher's credential and the keyring's public key: made by the keyring, read by the api node only.
			expect(env("keyring").BATCHER_KEY_FILE).toBe("/batcher-credential/batcher.key");
			expect(env("api").BATCHER_KEY_FILE).toBe("/batcher-credential/batcher.key");
			expect(services.api.volumes).toEqual(
				expect.arrayContaining([
					"batcher-credential:/batcher-credential:ro",
					"keyring-public:/keyring-public:ro",
				]),
			);
			expect(env("keyring").KEYRING_PUBLIC_KEY_FILE).toBe(env("api").KEYRING_PUBLIC_KEY_FILE);
			for (const name of ["signer", "run"])
				expect({
					name,
					volumes: (services[name].volumes ?? []).filter((v) =>
						v.startsWith("batcher-credential"),
					),
				}).toEqual({ name, volumes: [] });
		});
	});

	describe("NATS is a cluster of three over TLS, its certificates made on the first start", () => {
		test("the members route to each other by name over TLS and require a client certificate", () => {
			for (const member of NATS_MEMBERS) {
				expect(services[member].volumes).toEqual(
					expect.arrayContaining([
						"./k8s/nats-server.conf:/etc/nats/nats-server.conf:ro",
						"nats-server-tls:/etc/nats/tls:ro",
					]),
				);
				expect(env(member).NATS_SERVER_NAME).toBe(member);
				expect([1, 2, 3].map((i) => env(member)[`NATS_ROUTE_${i}`]).sort()).toEqual(
					NATS_MEMBERS.map((name) => `nats-route://${name}:6222`),
				);
				expect(services[member].depends_on?.["nats-certs"]?.condition).toBe(
					"service_completed_successfully",
				);
			}
			const config = fs.readFileSync(path.join(ROOT, "k8s", "nats-server.conf"), "utf8");
			expect(config).toMatch(/^tls \{[^}]*verify: true/m);
			expect(config).toMatch(/cluster \{[\s\S]*tls \{[^}]*verify: true/);
			expect(config).toContain("routes: [$NATS_ROUTE_1, $NATS_ROUTE_2, $NATS_ROUTE_3]");
		});

		test("nats-certs makes a CA, the members' certificate for their names and the nodes' client certificate, once; the nodes' configuration accepts them", () => {
			const root = fs.mkdtempSync(path.join(os.tmpdir(), "compose-certs-"));
			try {
				const dirs = makeComposeCertificates(root);
				expect(fs.readdirSync(dirs.server).sort()).toEqual([
					"ca.crt",
					"tls.crt",
					"tls.key",
				]);
				expect(fs.readdirSync(dirs.client).sort()).toEqual([
					"ca.crt",
					"tls.crt",
					"tls.key",
				]);
				for (const dir of [dirs.server, dirs.client])
					for (const file of fs.readdirSync(dir))
						expect(fs.statSync(path.join(dir, file)).mode & 0o777).toBe(0o600);
				if (process.getuid?.() === 0)
					expect(fs.statSync(path.join(dirs.client, "tls.key")).uid).toBe(1000);
				// The CA's key stays in its own volume, which no member or node mounts.
				expect(fs.existsSync(path.join(dirs.ca, "ca.key"))).toBe(true);
				for (const [name, service] of Object.entries(services))
					if (name !== "nats-certs")
						expect({
							name,
							ca: (service.volumes ?? []).filter((v) => v.startsWith("nats-ca")),
						}).toEqual({ name, ca: [] });
				const ca = new X509Certificate(fs.readFileSync(path.join(dirs.ca, "ca.crt")));
				const server = new X509Certificate(
					fs.readFileSync(path.join(dirs.server, "tls.crt")),
				);
				expect(server.verify(ca.publicKey)).toBe(true);
				for (const member of NATS_MEMBERS) expect(server.checkHost(member)).toBe(member);
				// The nodes' variables, as compose sets them, accept the client files (a key that matches its certificate).
				const { loadConfig } =
					require("../../src/config") as typeof import("../../src/config");
				const tls = loadConfig({
					TRANSPORTER: env("signer").TRANSPORTER,
					NATS_CA_FILE: path.join(dirs.client, "ca.crt"),
					NATS_CERT_FILE: path.join(dirs.client, "tls.crt"),
					NATS_KEY_FILE: path.join(dirs.client, "tls.key"),
					DATA_DIR: "",
				}).natsTls;
				expect(tls?.cert).toContain("BEGIN CERTIFICATE");
				// A second start keeps them.
				const before = fs.readFileSync(path.join(dirs.server, "tls.crt"), "utf8");
				makeComposeCertificates(root);
				expect(fs.readFileSync(path.join(dirs.server, "tls.crt"), "utf8")).toBe(before);
			} finally {
				fs.rmSync(root, { recursive: true, force: true });
			}
		});
	});

	describe("MongoDB is a replica set of one member", () => {
		const command = String(services.mongo.healthcheck!.test![1]).replaceAll("$$", "$");
		const script = evalScriptOf(command);

		test("mongod runs as rs0 and every MONGO_URI names it", () => {
			expect(services.mongo.command).toEqual(expect.arrayContaining(["--replSet", "rs0"]));
			for (const [name] of roleServices.filter(([, s]) => s.environment?.MONGO_URI))
				expect({ name, uri: env(name).MONGO_URI }).toEqual({
					name,
					uri: expect.stringMatching(/[?&]replicaSet=rs0(&|$)/),
				});
		});

		test("the health check is a valid shell command using mongosh", () => {
			expect(services.mongo.healthcheck!.test![0]).toBe("CMD-SHELL");
			expect(command).toMatch(/^mongosh --quiet --eval "/);
			expect(spawnSync("sh", ["-n", "-c", command]).status).toBe(0);
		});

		test("a fresh member is initiated under the name clients use, then reported healthy once primary", () => {
			const state = { initiated: false, primary: false };
			const first = runHealthScript(script, "mongosh", state);
			const host = new URL(env("keyring").MONGO_URI).host;
			expect(first).toEqual({
				exitCode: 1,
				initiatedWith: { _id: "rs0", members: [{ _id: 0, host }] },
			});
			state.primary = true;
			expect(runHealthScript(script, "mongosh", state)).toEqual({
				exitCode: 0,
				initiatedWith: null,
			});
		});
	});

	test("MONGO_URI and TRANSPORTER point at the compose servers; each role is its own NATS user, its password in a volume of its own", () => {
		const natsRole: Record<string, string> = {
			keyring: "keyring",
			api: "api",
			signer: "signer",
			run: "ops",
		};
		for (const [name, role] of Object.entries(natsRole)) {
			expect({
				name,
				transporter: env(name).TRANSPORTER,
				file: env(name).NATS_PASSWORD_FILE,
				ca: env(name).NATS_CA_FILE,
				cert: env(name).NATS_CERT_FILE,
				key: env(name).NATS_KEY_FILE,
			}).toEqual({
				name,
				// Every member, over TLS, with the node's certificate.
				transporter: NATS_MEMBERS.map((member) => `tls://${role}@${member}:4222`).join(","),
				file: "/run/nats/nats-password",
				ca: "/run/nats-tls/ca.crt",
				cert: "/run/nats-tls/tls.crt",
				key: "/run/nats-tls/tls.key",
			});
			expect({
				name,
				volumes: services[name].volumes?.filter((v) => v.startsWith("nats-")),
			}).toEqual({
				name,
				volumes: [`nats-${role}:/run/nats:ro`, "nats-client-tls:/run/nats-tls:ro"],
			});
		}
		// Only nats and the one-shot that makes them see every password.
		for (const [name, service] of Object.entries(services).filter(
			([name]) => !(name in natsRole) && !name.startsWith("nats"),
		))
			expect({
				name,
				volumes: (service.volumes ?? []).filter((v) => v.startsWith("nats-")),
			}).toEqual({ name, volumes: [] });
		// Data owners use MongoDB; the stateless signer gets no database at all.
		expect(env("keyring").MONGO_URI).toMatch(/^mongodb:\/\/mongo:27017\/\w+\?replicaSet=rs0$/);
		expect(env("api").MONGO_URI).toBe(env("keyring").MONGO_URI);
		expect(env("signer").MONGO_URI).toBeUndefined();
		expect(compose.volumes).toHaveProperty("mongo-data");
		// The gateway keeps its token secret and webhook key in DATA_DIR: a volume, so restarts keep them.
		expect(services.api.volumes).toContain(`api-data:${runtimeDataDir()}`);
	});

	test("nodes get longer to stop than the broker's shutdown timeout", () => {
		const { brokerOptions } =
			require("../../src/broker/broker-options") as typeof import("../../src/broker/broker-options");
		const { loadConfig } = require("../../src/config") as typeof import("../../src/config");
		const tracking = brokerOptions(loadConfig({})).tracking as { shutdownTimeout: number };
		expect(tracking.shutdownTimeout).toBeGreaterThan(0);
		for (const [name, service] of roleServices)
			expect({
				name,
				graceOver: seconds(service.stop_grace_period) > tracking.shutdownTimeout / 1000,
			}).toEqual({ name, graceOver: true });
	});

	test("no secret value is committed: the master key is the keyring's own (made in its volume) unless .env supplies one", () => {
		const secretName = /(^|_)(KEY|SECRET|PASSWORD|PASS|TOKEN|CREDENTIALS?)$/i;
		for (const [name, service] of Object.entries(services))
			for (const [key, value] of Object.entries(service.environment ?? {})) {
				if (secretName.test(key))
					expect({ name, key, value }).toEqual({
						name,
						key,
						value: expect.stringMatching(/^\$\{[A-Z_]+(:\?[^}]*|:-)?\}$/),
					});
				// No user:password@ inside a connection URL either.
				expect({
					name,
					key,
					credentialsInUrl: /:\/\/[^/@\s]+:[^/@\s]+@/.test(String(value)),
				}).toEqual({ name, key, credentialsInUrl: false });
			}
		// Optional: unset, the keyring makes one in DATA_DIR on its own volume and keeps it there (and warns).
		expect(env("keyring").KEYRING_MASTER_KEY).toBe("${KEYRING_MASTER_KEY:-}");
		expect(services.keyring.volumes).toContain(`keyring-data:${runtimeDataDir()}`);
		expect(compose.volumes).toHaveProperty("keyring-data");
		// Only the keyring ever sees it.
		for (const [name] of Object.entries(services))
			if (name !== "keyring") expect(env(name).KEYRING_MASTER_KEY).toBeUndefined();

		const example = fs.readFileSync(path.join(ROOT, ".env.example"), "utf8");
		expect(example).toMatch(/^KEYRING_MASTER_KEY=$/m);
		for (const line of example.split("\n").filter((l) => /^[A-Z_]+=/.test(l)))
			if (secretName.test(line.split("=")[0])) expect(line).toMatch(/=$/);
		// .env is ignored by git and not in the repository.
		expect(spawnSync("git", ["check-ignore", "-q", ".env"], { cwd: ROOT }).status).toBe(0);
		expect(
			execFileSync("git", ["ls-files", ".env", "secrets", "k8s/secrets"], {
				cwd: ROOT,
				encoding: "utf8",
			}).trim(),
		).toBe("");
	});

	test("the image build context leaves local state and secrets out", () => {
		const ignore = fs
			.readFileSync(path.join(ROOT, ".dockerignore"), "utf8")
			.split("\n")
			.map((l) => l.trim())
			.filter((l) => l && !l.startsWith("#"));
		// Deny everything, then allow only the build inputs: .env, data/ and node_modules/ never go in.
		expect(ignore[0]).toBe("*");
		const allowed = ignore
			.filter((l) => l.startsWith("!"))
			.map((l) => l.slice(1).replace(/\/$/, ""));
		expect(allowed.sort()).toEqual([
			"mixins",
			"moleculer.config.ts",
			"package-lock.json",
			"package.json",
			"public",
			"services",
			"src",
			"tsconfig.json",
		]);
	});

	// The one sub-check that needs a tool: the compose CLI's own validation. Everything above runs everywhere.
	const composeCli = findComposeCli();
	(composeCli ? test : test.skip)(
		`${composeCli ? composeCli.join(" ") : "docker compose (not installed, skipped)"} config accepts the file`,
		() => {
			const [command, ...prefix] = composeCli!;
			// An empty env file keeps a developer's real .env out of the check.
			const emptyEnvFile = path.join(
				fs.mkdtempSync(path.join(os.tmpdir(), "compose-")),
				"empty.env",
			);
			fs.writeFileSync(emptyEnvFile, "");
			const check = (extraEnv: Record<string, string | undefined>) =>
				spawnSync(
					command,
					[...prefix, "--env-file", emptyEnvFile, "-f", COMPOSE_FILE, "config", "-q"],
					{
						cwd: ROOT,
						encoding: "utf8",
						env: {
							...withoutKey(process.env),
							...extraEnv,
							COMPOSE_PROJECT_NAME: "record-signer-test",
						},
					},
				);
			// No .env at all: `docker compose up` needs no preparation.
			const bare = check({});
			expect({ status: bare.status, stderr: bare.stderr }).toEqual({
				status: 0,
				stderr: expect.any(String),
			});
			const withKey = check({ KEYRING_MASTER_KEY: Buffer.alloc(32, 7).toString("base64") });
			expect({ status: withKey.status, stderr: withKey.stderr }).toEqual({
				status: 0,
				stderr: expect.any(String),
			});
		},
	);
});

/** The NATS cluster's members. */
const NATS_MEMBERS = ["nats-1", "nats-2", "nats-3"];

/** Runs the nats-certs one-shot's script with its volumes as folders under `root`. */
function makeComposeCertificates(root: string): { ca: string; server: string; client: string } {
	const dirs = {
		ca: path.join(root, "ca"),
		server: path.join(root, "server"),
		client: path.join(root, "client"),
	};
	for (const dir of Object.values(dirs)) fs.mkdirSync(dir, { recursive: true });
	let script = String((services["nats-certs"].command as string[])[0])
		.replaceAll("$$", "$")
		// The volumes' mount points (`/ca`, `/server/*`), not `ca.crt` under them.
		.replace(
			/\/(ca|server|client)(?=[/\s"*]|$)/g,
			(_, volume: keyof typeof dirs) => dirs[volume],
		);
	// In the container it runs as root; here only root may give the files to user 1000.
	if (process.getuid?.() !== 0) script = script.replace("chown 1000:1000", "true");
	const made = spawnSync("sh", ["-c", script], { encoding: "utf8" });
	if (made.status !== 0) throw new Error(`nats-certs failed: ${made.stderr}`);
	return dirs;
}

/** The committed nats-server configuration with its certificate paths pointed at `tlsDir`. */
function memberConfig(root: string, tlsDir: string): string {
	const file = path.join(root, "nats-server.conf");
	fs.writeFileSync(
		file,
		fs
			.readFileSync(path.join(ROOT, "k8s", "nats-server.conf"), "utf8")
			.replaceAll("/etc/nats/tls/", `${tlsDir}/`),
	);
	return file;
}

/** DATA_DIR as the Dockerfile's runtime stage sets it. */
function runtimeDataDir(): string {
	const match = /\bDATA_DIR=(\S+)/.exec(fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8"));
	if (!match) throw new Error("the Dockerfile sets no DATA_DIR");
	return match[1];
}

describe("docker-compose.softhsm.yml, the SoftHSM profile", () => {
	const PROFILE_FILE = path.join(ROOT, "docker-compose.softhsm.yml");
	const profile = parse(fs.readFileSync(PROFILE_FILE, "utf8"), { merge: true }) as ComposeFile;
	const tokenCommand = String(
		(profile.services["softhsm-token"].command as string[])[0],
	).replaceAll("$$", "$");

	test("gives only the keyring and the signers the token: KEY_STORE=pkcs11, SoftHSM's module, the label and the PIN file, in the one volume they share", () => {
		expect(Object.keys(profile.services).sort()).toEqual([
			"keyring",
			"signer",
			"softhsm-token",
		]);
		for (const name of ["keyring", "signer"]) {
			const service = profile.services[name];
			expect({ name, environment: service.environment }).toEqual({
				name,
				environment: {
					KEY_STORE: "pkcs11",
					PKCS11_MODULE: "/usr/lib/softhsm/libsofthsm2.so",
					PKCS11_TOKEN_LABEL: "record-signer",
					PKCS11_PIN_FILE: "/softhsm/user-pin",
					SOFTHSM2_CONF: "/softhsm/softhsm2.conf",
				},
			});
			expect(service.volumes).toEqual(["softhsm:/softhsm"]);
			expect(service.depends_on).toEqual({
				"softhsm-token": { condition: "service_completed_successfully" },
			});
			// The image with SoftHSM, under a tag of its own.
			expect(service.build).toEqual({ context: ".", args: { SOFTHSM: "1" } });
			expect(service.image).toBe("record-signer:0.1.0-softhsm");
			// Base services keep their roles: the profile adds to them, it does not replace them.
			expect(services[name].environment?.SERVICES).toBe(name);
		}
	});

	test("softhsm-token makes the token and a random PIN once, 0600, and commits no PIN", () => {
		expect(spawnSync("sh", ["-n", "-c", tokenCommand]).status).toBe(0);
		expect(tokenCommand).toMatch(/^\[ -s \/softhsm\/user-pin \] && exit 0;/);
		expect(tokenCommand).toContain("umask 077");
		expect(tokenCommand).toMatch(/head -c 18 \/dev\/urandom .*> \/softhsm\/user-pin\.new/);
		expect(tokenCommand).toMatch(
			/softhsm2-util --init-token --free --label record-signer --pin "\$\(cat \/softhsm\/user-pin\.new\)"/,
		);
		expect(profile.services["softhsm-token"].volumes).toEqual(["softhsm:/softhsm"]);
		expect(profile.volumes).toHaveProperty("softhsm");
	});

	(findComposeCli() ? test : test.skip)(
		"compose config accepts it on top of docker-compose.yml",
		() => {
			const [command, ...prefix] = findComposeCli()!;
			const checked = spawnSync(
				command,
				[...prefix, "-f", COMPOSE_FILE, "-f", PROFILE_FILE, "config", "-q"],
				{
					cwd: ROOT,
					encoding: "utf8",
					env: { ...withoutKey(process.env), COMPOSE_PROJECT_NAME: "record-signer-test" },
				},
			);
			expect({ status: checked.status, stderr: checked.stderr }).toEqual({
				status: 0,
				stderr: expect.any(String),
			});
		},
	);
});

function withoutKey(source: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
	const copy = { ...source };
	delete copy.KEYRING_MASTER_KEY;
	return copy;
}

/** `docker compose` (v2 plugin) or `docker-compose` (v1, Debian's package), whichever works. */
function findComposeCli(): string[] | null {
	for (const candidate of [["docker", "compose"], ["docker-compose"]]) {
		const probe = spawnSync(candidate[0], [...candidate.slice(1), "version"], {
			encoding: "utf8",
		});
		if (probe.status === 0) return candidate;
	}
	return null;
}
