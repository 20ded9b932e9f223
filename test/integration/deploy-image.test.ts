/**
 * The image without Docker. First the Dockerfile's promises (multi-stage, pinned Node 22,
 * production dependencies only, non-root, node as PID 1, a HEALTHCHECK). Then its start
 * command: for every role in docker-compose.yml, the exact CMD of the Dockerfile runs in a
 * folder holding only what the Dockerfile copies (from the built dist/), against a local
 * nats-server, with the Dockerfile's ENV and the role's SERVICES, and must report ready with
 * the role's services (and no other role's), serve Prometheus metrics, and exit 0 on SIGTERM
 * within the broker's shutdown timeout.
 *
 * Runs on the compiled JavaScript: `npm test` and `npm run test:integration` build first; after `npx jest`
 * alone, run `npm run build` before this file.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { parse } from "yaml";
import { freePort, startNatsServer, type NatsServer } from "../support/nats-server";
import { until } from "../support/cluster";

const ROOT = path.resolve(__dirname, "../..");
const dockerfile = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8");

interface Instruction {
	keyword: string;
	args: string;
}

/** Dockerfile instructions with continuations joined and comments dropped. */
function instructions(text: string): Instruction[] {
	const joined = text
		.split("\n")
		.filter((line) => !/^\s*#/.test(line))
		.join("\n")
		.replace(/\\\n/g, " ");
	return joined
		.split("\n")
		.map((line) => line.trim())
		.filter(Boolean)
		.map((line) => {
			const [keyword, ...rest] = line.split(/\s+/);
			return { keyword: keyword.toUpperCase(), args: rest.join(" ") };
		});
}

const all = instructions(dockerfile);
const stageStarts = all.map((ins, i) => (ins.keyword === "FROM" ? i : -1)).filter((i) => i >= 0);
const runtime = all.slice(stageStarts[stageStarts.length - 1]);
const argDefaults = Object.fromEntries(
	all
		.filter((i) => i.keyword === "ARG" && i.args.includes("="))
		.map((i) => i.args.split("=") as [string, string]),
);

/** `ENV A=1 B=2` of the final stage, what the container starts with. */
function runtimeEnv(): Record<string, string> {
	const env: Record<string, string> = {};
	for (const ins of runtime.filter((i) => i.keyword === "ENV"))
		for (const [, key, value] of ins.args.matchAll(/([A-Z_][A-Z0-9_]*)=("[^"]*"|\S+)/g))
			env[key] = value.replace(/^"|"$/g, "");
	return env;
}

/**
 * The final stage's file system, built from its COPY lines: build-stage paths (/app/...) come
 * from this checkout's build output, context paths from the checkout. node_modules is linked,
 * not installed (the dev dependencies come along; `npm ci --omit=dev` is not re-run here).
 */
function stageImage(into: string): string {
	const workdir = runtime.filter((i) => i.keyword === "WORKDIR").pop()?.args ?? "/";
	for (const copy of runtime.filter((i) => i.keyword === "COPY")) {
		const parts = copy.args.split(/\s+/);
		const fromBuild = parts[0] === "--from=build";
		const [dest, ...reversedSources] = parts.filter((p) => !p.startsWith("--")).reverse();
		// The compiled pkcs11js binding goes into node_modules, which is linked here already built.
		if (dest.startsWith("./node_modules/")) continue;
		const target = path.resolve(into, path.relative(workdir, path.resolve(workdir, dest)));
		for (const source of reversedSources.reverse()) {
			const from = fromBuild
				? path.join(ROOT, path.relative(workdir, source))
				: path.join(ROOT, source);
			const to =
				dest.endsWith("/") || reversedSources.length > 1
					? path.join(target, path.basename(source))
					: target;
			fs.mkdirSync(path.dirname(to), { recursive: true });
			fs.cpSync(from, to, { recursive: true });
		}
	}
	fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(into, "node_modules"), "dir");
	return into;
}

function runtimeCmd(): string[] {
	const cmd = runtime.filter((i) => i.keyword === "CMD").pop();
	if (!cmd) throw new Error("the Dockerfile's last stage has no CMD");
	return JSON.parse(cmd.args) as string[];
}

describe("Dockerfile", () => {
	test("is multi-stage on a pinned Node 22 image", () => {
		expect(stageStarts.length).toBeGreaterThanOrEqual(2);
		const bases = stageStarts.map((i) =>
			all[i].args
				.split(/\s+/)[0]
				.replace(/^\$\{(\w+)\}$/, (_, name) => argDefaults[name] ?? ""),
		);
		for (const base of bases) expect(base).toMatch(/^node:22\.\d+\.\d+(-[a-z0-9.-]+)?$/);
		expect(all[stageStarts[0]].args).toMatch(/\bAS build$/i);
	});

	test("installs production dependencies only in the image it ships, without install scripts", () => {
		const installs = runtime.filter(
			(i) => i.keyword === "RUN" && /\bnpm (ci|install)\b/.test(i.args),
		);
		expect(installs).toHaveLength(1);
		expect(installs[0].args).toMatch(/npm ci\b.*--omit=dev/);
		expect(installs[0].args).toContain("--ignore-scripts");
		// Only compiled output comes over from the build stage.
		const copies = runtime.filter(
			(i) => i.keyword === "COPY" && i.args.startsWith("--from=build"),
		);
		expect(copies.length).toBeGreaterThan(0);
		for (const copy of copies) expect(copy.args).toMatch(/^--from=build \/app\/dist\//);
		// From the pkcs11js stage, only the binding it compiled (KEY_STORE=pkcs11).
		const native = runtime.filter(
			(i) => i.keyword === "COPY" && i.args.startsWith("--from=pkcs11js"),
		);
		expect(native.map((copy) => copy.args)).toEqual([
			"--from=pkcs11js /app/node_modules/pkcs11js/build/Release/pkcs11.node ./node_modules/pkcs11js/build/Release/pkcs11.node",
		]);
	});

	test("runs as a non-root user, with a HEALTHCHECK on the readiness route", () => {
		const user = runtime.filter((i) => i.keyword === "USER").pop();
		expect(user?.args).toMatch(/^\d+(:\d+)?$/);
		expect(Number(user!.args.split(":")[0])).toBeGreaterThan(0);
		const healthcheck = runtime.find((i) => i.keyword === "HEALTHCHECK");
		expect(healthcheck?.args).toContain("/health/ready");
		expect(healthcheck?.args).toContain("HEALTH_PORT");
	});

	test("starts node itself as PID 1, with SERVICEDIR so SERVICES picks the role", () => {
		// Exec form, no shell and no npm in between: SIGTERM reaches the broker.
		const cmd = runtimeCmd();
		expect(cmd[0]).toBe("node");
		expect(cmd).toContain("node_modules/moleculer/bin/moleculer-runner.js");
		expect(runtime.some((i) => i.keyword === "ENTRYPOINT")).toBe(false);
		// moleculer-runner resolves SERVICES names against SERVICEDIR (the working directory without it).
		expect(runtimeEnv().SERVICEDIR).toBe("dist/services");
		const config = cmd[cmd.indexOf("--config") + 1];
		expect(config).toBe("dist/moleculer.config.js");
	});
});

// ------------------------------------------------------------------ the roles, as the image runs them

const compose = parse(fs.readFileSync(path.join(ROOT, "docker-compose.yml"), "utf8"), {
	merge: true,
}) as { services: Record<string, { environment?: Record<string, string> }> };
const roles = [
	...new Set(
		Object.values(compose.services)
			.map((s) => s.environment?.SERVICES)
			.filter((r): r is string => Boolean(r)),
	),
];
/** The broker's tracking.shutdownTimeout (src/broker/broker-options.ts), plus time to exit. */
const SHUTDOWN_MS = 15_000 + 5_000;
const READY_WITHIN_MS = 30_000;

/** The project's Node 22: this process if it is one, else the `node` dev dependency. */
function node22(): string {
	if (Number(process.versions.node.split(".")[0]) >= 22) return process.execPath;
	const local = path.join(ROOT, "node_modules", ".bin", "node");
	const version = spawnSync(local, ["--version"], { encoding: "utf8" }).stdout?.trim() ?? "";
	if (!/^v(2[2-9]|[3-9]\d)\./.test(version))
		throw new Error(
			`Node >= 22 needed to run the image's command; ${local} says "${version}" (npm install)`,
		);
	return local;
}

interface RoleNode {
	role: string;
	child: ChildProcess;
	healthPort: number;
	metricsPort: number;
	httpPort: number;
	dataDir: string;
	output: string;
	exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Variables that would leak a developer's setup into the nodes. */
const CONFIG_VARS = [
	"SERVICES",
	"SERVICEDIR",
	"TRANSPORTER",
	"MONGO_URI",
	"KEYRING_MASTER_KEY",
	"DATA_DIR",
	"NODE_ID",
	"NAMESPACE",
	"PORT",
	"HEALTH_PORT",
	"METRICS_PORT",
	"RECORDS",
	"KEYS",
	"BATCH_SIZE",
	"MOLECULER_CONFIG",
];

function get(port: number, urlPath: string): Promise<{ status: number; text: string }> {
	return new Promise((resolve, reject) => {
		http.get({ host: "127.0.0.1", port, path: urlPath, agent: false }, (res) => {
			let text = "";
			res.setEncoding("utf8");
			res.on("data", (chunk) => (text += chunk));
			res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
		}).on("error", reject);
	});
}

describe("the image's command, per role of docker-compose.yml", () => {
	let nats: NatsServer;
	const nodes = new Map<string, RoleNode>();
	const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "roles-"));

	beforeAll(async () => {
		if (!fs.existsSync(path.join(ROOT, "dist", "moleculer.config.js")))
			throw new Error("dist/ is not built: run `npm run build` (npm test does it first)");
		nats = await startNatsServer();
		// The nodes run where the image would have its files: only what the Dockerfile copies.
		const appDir = stageImage(fs.mkdtempSync(path.join(tmpRoot, "app-")));
		const [command, ...args] = runtimeCmd();
		expect(command).toBe("node");
		const nodeBinary = node22();
		// If jest dies before afterAll, the role nodes must not outlive it.
		process.once("exit", () => {
			for (const node of nodes.values()) node.child.kill("SIGKILL");
		});
		const baseEnv: NodeJS.ProcessEnv = { ...process.env };
		for (const name of CONFIG_VARS) delete baseEnv[name];
		// The cluster starts together, as compose starts it: signers wait for the keyring.
		for (const role of roles) {
			const dataDir = fs.mkdtempSync(path.join(tmpRoot, `${role.replace(/\W+/g, "-")}-`));
			const healthPort = await freePort();
			const metricsPort = await freePort();
			const httpPort = await freePort();
			const env: NodeJS.ProcessEnv = {
				...baseEnv,
				...runtimeEnv(),
				SERVICES: role,
				TRANSPORTER: nats.url,
				DATA_DIR: dataDir,
				HEALTH_PORT: String(healthPort),
				METRICS_PORT: String(metricsPort),
				PORT: String(httpPort),
				RECORDS: "200",
				KEYS: "5",
				LOG_LEVEL: "info",
			};
			const child = spawn(nodeBinary, args, {
				cwd: appDir,
				env,
				stdio: ["ignore", "pipe", "pipe"],
			});
			const node: RoleNode = {
				role,
				child,
				healthPort,
				metricsPort,
				httpPort,
				dataDir,
				output: "",
				exit: new Promise((resolve) =>
					child.once("exit", (code, signal) => resolve({ code, signal })),
				),
			};
			const keep = (chunk: Buffer) =>
				(node.output = (node.output + chunk.toString("utf8")).slice(-30_000));
			child.stdout!.on("data", keep);
			child.stderr!.on("data", keep);
			nodes.set(role, node);
		}
	}, 30_000);

	afterAll(async () => {
		for (const node of nodes.values())
			if (node.child.exitCode === null && node.child.signalCode === null)
				node.child.kill("SIGKILL");
		await Promise.all([...nodes.values()].map((node) => node.exit));
		await nats?.stop();
		fs.rmSync(tmpRoot, { recursive: true, force: true });
	});

	test.each(roles)("SERVICES=%s: its service files are built", (role) => {
		const missing = role
			.split(",")
			.filter(
				(name) => !fs.existsSync(path.join(ROOT, "dist", "services", `${name}.service.js`)),
			);
		expect({ role, missingFromDistServices: missing }).toEqual({
			role,
			missingFromDistServices: [],
		});
	});

	test.each(roles)(
		"SERVICES=%s: comes up ready with its services and no other role's, and serves metrics",
		async (role) => {
			const node = nodes.get(role)!;
			let last = "no answer yet";
			const ready = await until(
				`SERVICES=${role} to answer 200 on /health/ready`,
				READY_WITHIN_MS,
				async () => {
					if (node.child.exitCode !== null || node.child.signalCode !== null)
						throw new Error(
							`SERVICES=${role} exited (${node.child.exitCode ?? node.child.signalCode}) before it was ready`,
						);
					const reply = await get(node.healthPort, "/health/ready").catch(
						(err: Error) => {
							last = `${err.message} (is HealthMiddleware wired into src/broker/broker-options.ts with HEALTH_PORT?)`;
							return null;
						},
					);
					if (reply) last = `${reply.status} ${reply.text}`;
					return reply?.status === 200 ? reply : null;
				},
				250,
			).catch((err: Error) => {
				throw new Error(
					`${err.message}; last /health/ready: ${last}\n--- node output ---\n${node.output}`,
				);
			});
			const { services } = JSON.parse(ready.text) as { services: string[] };
			// Every service the role names runs here (a service file may add helpers, e.g. keyring-election)...
			expect(services).toEqual(expect.arrayContaining(role.split(",")));
			// ...and no service that only another role names.
			const othersOnly = roles
				.flatMap((other) => other.split(","))
				.filter((name) => !role.split(",").includes(name));
			expect({ role, foreign: services.filter((name) => othersOnly.includes(name)) }).toEqual(
				{ role, foreign: [] },
			);
			expect((await get(node.healthPort, "/health/live")).status).toBe(200);
			// What the Prometheus scrape annotations point at.
			const metrics = await get(node.metricsPort, "/metrics");
			expect(metrics.status).toBe(200);
			expect(metrics.text).toContain("moleculer_");
			// The gateway's dashboard comes from public/, which the image must carry.
			if (role.split(",").includes("api"))
				expect((await get(node.httpPort, "/")).status).toBe(200);
		},
	);

	test.each(roles)(
		"SERVICES=%s: exits 0 on SIGTERM within the shutdown timeout",
		async (role) => {
			const node = nodes.get(role)!;
			expect({
				role,
				runningBeforeSigterm:
					node.child.exitCode === null && node.child.signalCode === null,
			}).toEqual({ role, runningBeforeSigterm: true });
			const started = Date.now();
			node.child.kill("SIGTERM");
			const timeout = new Promise<"timeout">((resolve) =>
				setTimeout(() => resolve("timeout"), SHUTDOWN_MS).unref(),
			);
			const result = await Promise.race([node.exit, timeout]);
			if (result === "timeout")
				throw new Error(
					`SERVICES=${role} still running ${SHUTDOWN_MS} ms after SIGTERM:\n${node.output}`,
				);
			expect({ role, ...result }).toEqual({ role, code: 0, signal: null });
			expect(Date.now() - started).toBeLessThan(SHUTDOWN_MS);
		},
		SHUTDOWN_MS + 5_000,
	);
});
