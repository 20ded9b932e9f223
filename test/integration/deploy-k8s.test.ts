/**
 * k8s/ without a cluster: every manifest validates against the Kubernetes API schemas that
 * kubernetes-models bundles (no network), and the deployment's promises hold: one keyring
 * that never runs twice, autoscaled signers with a disruption budget, probes on the routes
 * src/broker/health.ts serves, pinned images, limits, a restricted securityContext, graceful stops.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { parse, parseAllDocuments } from "yaml";
import { evalScriptOf, runHealthScript } from "../support/mongo-health";
import { findNatsServer } from "../support/nats-server";
import { authorizationBlock, NATS_ROLES, type NatsRole } from "../../src/broker/nats-permissions";
import { HealthMiddleware } from "../../src/broker/health";
import { makeNatsCertificates } from "../../src/cluster/nats-certs";

const ROOT = path.resolve(__dirname, "../..");
/** The NATS StatefulSet's pods. */
const NATS_MEMBERS = ["nats-0", "nats-1", "nats-2"];
const K8S = path.join(ROOT, "k8s");

type Manifest = {
	apiVersion: string;
	kind: string;
	metadata: {
		name: string;
		labels?: Record<string, string>;
		annotations?: Record<string, string>;
	};
	spec?: any;
	data?: Record<string, string>;
};
type Container = {
	name: string;
	image: string;
	env?: any[];
	envFrom?: any[];
	ports?: any[];
	livenessProbe?: any;
	readinessProbe?: any;
	startupProbe?: any;
	resources?: any;
	securityContext?: any;
};

interface Kustomization {
	namespace: string;
	resources: string[];
	secretGenerator?: Array<{ name: string; envs?: string[] }>;
	images?: Array<{ name: string; newName?: string; newTag?: string }>;
}

const kustomization = parse(
	fs.readFileSync(path.join(K8S, "kustomization.yaml"), "utf8"),
) as Kustomization;
const files = fs
	.readdirSync(K8S)
	.filter((file) => /\.ya?ml$/.test(file) && file !== "kustomization.yaml")
	.sort();
const manifests: Array<Manifest & { file: string }> = files.flatMap((file) =>
	parseAllDocuments(fs.readFileSync(path.join(K8S, file), "utf8")).map((doc) => {
		if (doc.errors.length)
			throw new Error(`${file}: ${doc.errors.map((e) => e.message).join("; ")}`);
		return { ...(doc.toJS() as Manifest), file };
	}),
);
const find = (kind: string, name: string) =>
	manifests.find((m) => m.kind === kind && m.metadata.name === name);
const workloads = manifests.filter((m) => ["Deployment", "StatefulSet"].includes(m.kind));
const containersOf = (m: Manifest): Container[] => m.spec.template.spec.containers;
const envOf = (c: Container): Record<string, any> =>
	Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));
/** The app's workloads: the ones that run our image with a role. */
const appWorkloads = workloads.filter((m) =>
	containersOf(m).some((c) => envOf(c).SERVICES !== undefined),
);
const roleOf = (m: Manifest) => String(envOf(containersOf(m)[0]).SERVICES);
const configMap = manifests.find((m) => m.kind === "ConfigMap")!;
const secretTemplate = fs.readFileSync(path.join(K8S, "secrets.env.example"), "utf8");
const secretKeys = secretTemplate
	.split("\n")
	.filter((line) => /^[A-Z_]+=/.test(line))
	.map((line) => line.split("=")[0]);
const secretName = kustomization.secretGenerator?.[0]?.name;

/** The schema-carrying model class for an apiVersion/kind, from the bundled API schemas. */
function modelFor(apiVersion: string, kind: string): { new (data: object): { validate(): void } } {
	const group = require(`kubernetes-models/${apiVersion}`) as Record<string, any>;
	if (typeof group[kind] !== "function") throw new Error(`no schema for ${apiVersion} ${kind}`);
	return group[kind];
}

describe("k8s/ manifests", () => {
	test("kustomization lists every manifest file, one namespace, and generates the Secret from an ignored file", () => {
		expect([...kustomization.resources].sort()).toEqual(files);
		const namespace = manifests.find((m) => m.kind === "Namespace");
		expect(namespace?.metadata.name).toBe(kustomization.namespace);
		// Namespaces come from kustomize, not from each file.
		for (const m of manifests)
			expect({
				file: m.file,
				kind: m.kind,
				namespace: (m.metadata as any).namespace,
			}).toEqual({ file: m.file, kind: m.kind, namespace: undefined });
		expect(kustomization.secretGenerator).toHaveLength(1);
		const [envFile] = kustomization.secretGenerator![0].envs!;
		// The filled-in copy never reaches git.
		expect(
			spawnSync("git", ["check-ignore", "-q", path.join("k8s", envFile)], { cwd: ROOT })
				.status,
		).toBe(0);
	});

	test.each(manifests.map((m) => [`${m.file}: ${m.kind} ${m.metadata.name}`, m] as const))(
		"%s validates against the Kubernetes API schema",
		(_, manifest) => {
			const { file: _file, ...resource } = manifest;
			const Model = modelFor(resource.apiVersion, resource.kind);
			expect(() => new Model(resource).validate()).not.toThrow();
		},
	);

	test("the schema validator has teeth: a malformed manifest is rejected", () => {
		const Deployment = modelFor("apps/v1", "Deployment");
		const malformed = {
			metadata: { name: "x" },
			spec: {
				replicas: "three",
				selector: {},
				template: { spec: { containers: [{ image: "x:1.0.0" }] } },
			},
		};
		expect(() => new Deployment(malformed).validate()).toThrow(
			/replicas must be integer|must have required property 'name'/,
		);
	});

	test("the generated Secret validates too, and its template holds no value", () => {
		expect(secretKeys.sort()).toEqual([
			"AUTH_SECRET",
			"BATCHER_KEY",
			"KEYRING_MASTER_KEY",
			"KEYRING_PUBLIC_KEY",
			"LEASE_LOG_KEY",
			"MONGO_PASSWORD",
			"MONGO_USERNAME",
			"NATS_API_PASSWORD",
			"NATS_KEYRING_PASSWORD",
			"NATS_OPS_PASSWORD",
			"NATS_SIGNER_PASSWORD",
			"SIGNATURE_LOG_KEY",
			"SIGNER_KEY",
		]);
		for (const line of secretTemplate.split("\n").filter((l) => /^[A-Z_]+=/.test(l)))
			expect(line).toMatch(/^[A-Z_]+=$/);
		const Secret = modelFor("v1", "Secret");
		const generated = {
			apiVersion: "v1",
			kind: "Secret",
			metadata: { name: secretName },
			type: "Opaque",
			data: Object.fromEntries(
				secretKeys.map((k) => [k, Buffer.from("x").toString("base64")]),
			),
		};
		expect(() => new Secret(generated).validate()).not.toThrow();
		// No Secret object with data is committed anywhere in k8s/.
		expect(manifests.filter((m) => m.kind === "Secret")).toEqual([]);
	});

	test("every secret reference names the generated Secret and a key of its template", () => {
		const refs = workloads.flatMap((w) =>
			containersOf(w).flatMap((c) =>
				(c.env ?? [])
					.filter((e) => e.valueFrom?.secretKeyRef)
					.map((e) => ({ workload: w.metadata.name, ...e.valueFrom.secretKeyRef })),
			),
		);
		expect(refs.length).toBeGreaterThan(0);
		for (const ref of refs)
			expect(ref).toEqual({
				workload: ref.workload,
				name: secretName,
				key: expect.any(String),
			});
		for (const ref of refs) expect(secretKeys).toContain(ref.key);
		// Least privilege: only the keyring holds the master key; signers never see MongoDB.
		const holders = (key: string) =>
			refs
				.filter((r) => r.key === key)
				.map((r) => r.workload)
				.sort();
		expect(holders("KEYRING_MASTER_KEY")).toEqual(["keyring"]);
		expect(holders("AUTH_SECRET")).toEqual(["api"]);
		expect(holders("MONGO_PASSWORD")).not.toContain("signer");
		// One NATS user per role: each workload holds only its own password; nats holds them all.
		expect(holders("NATS_KEYRING_PASSWORD")).toEqual(["keyring", "nats"]);
		expect(holders("NATS_API_PASSWORD")).toEqual(["api", "nats"]);
		expect(holders("NATS_SIGNER_PASSWORD")).toEqual(["nats", "signer"]);
		expect(holders("NATS_OPS_PASSWORD")).toEqual(["nats"]);
		// Only the signers hold their credential, only the api node (the batcher) its own.
		expect(holders("SIGNER_KEY")).toEqual(["signer"]);
		expect(holders("BATCHER_KEY")).toEqual(["api"]);
		// Records (api) checks lease tokens with the keyring's public key, and the batcher (api) and the
		// signers derive their request MAC keys with it; the keyring checks it matches its master key.
		expect(holders("KEYRING_PUBLIC_KEY")).toEqual(["api", "keyring", "signer"]);
	});

	test("NATS has one user per role: each workload connects as its own, and the server's configuration is the permissions src/broker/nats-permissions.ts writes", async () => {
		const userOf: Record<string, string> = { keyring: "keyring", api: "api", signer: "signer" };
		for (const w of appWorkloads) {
			const role = userOf[w.metadata.name];
			expect({
				workload: w.metadata.name,
				transporter: envOf(containersOf(w)[0]).TRANSPORTER,
			}).toEqual({
				workload: w.metadata.name,
				// Every member of the StatefulSet, over TLS.
				transporter: NATS_MEMBERS.map(
					(member) =>
						`tls://${role}:$(NATS_${role.toUpperCase()}_PASSWORD)@${member}.nats-headless:4222`,
				).join(","),
			});
		}
		const nats = find("StatefulSet", "nats")!;
		const [server] = containersOf(nats) as any[];
		expect(server.args).toEqual(["-c", "/etc/nats/nats-server.conf"]);
		const volume = nats.spec.template.spec.volumes.find(
			(v: any) => v.configMap?.name === "nats-config",
		);
		expect(server.volumeMounts).toContainEqual({
			name: volume.name,
			mountPath: "/etc/nats/nats-server.conf",
			subPath: "nats-server.conf",
			readOnly: true,
		});
		expect((kustomization as any).configMapGenerator).toEqual([
			{ name: "nats-config", files: ["nats-server.conf"] },
		]);
		// The committed configuration is the generator's, for the keyring's node ids here (keyring-0) and in compose (keyring).
		const committed = fs.readFileSync(path.join(K8S, "nats-server.conf"), "utf8");
		const passwords = Object.fromEntries(
			NATS_ROLES.map((role) => [role, `$NATS_${role.toUpperCase()}_PASSWORD`]),
		) as Record<NatsRole, string>;
		expect(committed.slice(committed.indexOf("authorization {"))).toBe(
			authorizationBlock("signing", ["keyring", "keyring-0"], passwords),
		);
		const keyring = find("StatefulSet", "keyring")!;
		expect(keyring.metadata.name + "-0").toBe("keyring-0");
		expect(envOf(containersOf(keyring)[0]).NODE_ID).toEqual({
			fieldRef: { fieldPath: "metadata.name" },
		});
		expect((configMap.data as Record<string, string>).NAMESPACE ?? "signing").toBe("signing");
		// And nats-server accepts it, with the member's environment and certificates in place.
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "k8s-nats-"));
		const certs = await makeNatsCertificates(path.join(dir, "tls"));
		const config = path.join(dir, "nats-server.conf");
		fs.writeFileSync(
			config,
			committed
				.replaceAll("/etc/nats/tls/tls.crt", certs.serverCert)
				.replaceAll("/etc/nats/tls/tls.key", certs.serverKey)
				.replaceAll("/etc/nats/tls/ca.crt", certs.caFile),
		);
		const memberEnv = Object.fromEntries(
			(server.env as any[])
				.filter((e) => e.value !== undefined)
				.map((e) => [e.name, e.value]),
		);
		const tested = spawnSync(findNatsServer(), ["-c", config, "-t"], {
			encoding: "utf8",
			env: {
				...process.env,
				...memberEnv,
				NATS_SERVER_NAME: "nats-0",
				...Object.fromEntries(
					NATS_ROLES.map((role) => [`NATS_${role.toUpperCase()}_PASSWORD`, "x"]),
				),
			},
		});
		fs.rmSync(dir, { recursive: true, force: true });
		expect({ status: tested.status, output: tested.stdout + tested.stderr }).toEqual({
			status: 0,
			output: expect.stringContaining("is valid"),
		});
	});

	test("the roles match docker-compose.yml", () => {
		const compose = parse(fs.readFileSync(path.join(ROOT, "docker-compose.yml"), "utf8"), {
			merge: true,
		}) as { services: Record<string, { environment?: Record<string, string> }> };
		const composeRoles = Object.values(compose.services)
			.map((s) => s.environment?.SERVICES)
			.filter(Boolean)
			.sort();
		expect(appWorkloads.map(roleOf).sort()).toEqual(composeRoles);
	});

	test("the keyring is a single replica that never runs twice, even during an update", () => {
		const keyrings = appWorkloads.filter((w) => roleOf(w).split(",").includes("keyring"));
		expect(keyrings).toHaveLength(1);
		const [keyring] = keyrings;
		expect(keyring.spec.replicas).toBe(1);
		if (keyring.kind === "StatefulSet") {
			// Deletes the old pod and waits for it to be gone before creating the new one.
			expect(keyring.spec.updateStrategy?.type ?? "RollingUpdate").toBe("RollingUpdate");
			expect(keyring.spec.podManagementPolicy ?? "OrderedReady").toBe("OrderedReady");
		} else {
			expect(keyring.kind).toBe("Deployment");
			expect(keyring.spec.strategy?.type).toBe("Recreate");
		}
		// Nothing may scale it.
		const scaled = manifests
			.filter((m) => m.kind === "HorizontalPodAutoscaler")
			.map((h) => h.spec.scaleTargetRef.name);
		expect(scaled).not.toContain(keyring.metadata.name);
	});

	test("the api node (with the batcher) is single too, replaced with Recreate", () => {
		const api = appWorkloads.find((w) => roleOf(w).split(",").includes("batcher"))!;
		expect(api.kind).toBe("Deployment");
		expect(api.spec.replicas).toBe(1);
		expect(api.spec.strategy?.type).toBe("Recreate");
	});

	test("signers: a Deployment with several replicas, an autoscaler and a disruption budget", () => {
		const signer = appWorkloads.find((w) => roleOf(w) === "signer")!;
		expect(signer.kind).toBe("Deployment");
		expect(signer.spec.replicas).toBeGreaterThanOrEqual(2);
		const podLabels = signer.spec.template.metadata.labels;
		expect(signer.spec.selector.matchLabels).toEqual(podLabels);

		const hpa = manifests.find(
			(m) =>
				m.kind === "HorizontalPodAutoscaler" &&
				m.spec.scaleTargetRef.name === signer.metadata.name,
		)!;
		expect(hpa).toBeDefined();
		expect(hpa.apiVersion).toBe("autoscaling/v2");
		expect(hpa.spec.scaleTargetRef).toEqual({
			apiVersion: "apps/v1",
			kind: "Deployment",
			name: signer.metadata.name,
		});
		expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
		expect(hpa.spec.maxReplicas).toBeGreaterThan(hpa.spec.minReplicas);
		expect(hpa.spec.metrics.length).toBeGreaterThan(0);
		// CPU utilization targets need CPU requests to be computed against.
		for (const c of containersOf(signer)) expect(c.resources.requests.cpu).toBeDefined();

		const pdb = find("PodDisruptionBudget", "signer")!;
		expect(pdb.apiVersion).toBe("policy/v1");
		expect(pdb.spec.selector.matchLabels).toEqual(podLabels);
		expect(pdb.spec.maxUnavailable ?? pdb.spec.minAvailable).toBeDefined();
	});

	test("the api has a Service and an Ingress that reach its http port", () => {
		const api = appWorkloads.find((w) => roleOf(w).split(",").includes("api"))!;
		const service = find("Service", "api")!;
		expect(service.spec.selector).toEqual(api.spec.selector.matchLabels);
		const httpPort = containersOf(api)[0].ports!.find((p) => p.name === "http");
		expect(httpPort.containerPort).toBe(Number(configMap.data!.PORT));
		expect(service.spec.ports.find((p: any) => p.name === "http").targetPort).toBe("http");
		const ingress = manifests.find((m) => m.kind === "Ingress")!;
		const backends = ingress.spec.rules.flatMap((r: any) =>
			r.http.paths.map((p: any) => p.backend.service),
		);
		expect(backends).toEqual([{ name: "api", port: { name: "http" } }]);
	});

	test("only the api pod has a writable DATA_DIR; the keyring fails closed without its master key", () => {
		const dataMounts = (w: Manifest) =>
			containersOf(w).flatMap((c) =>
				((c as any).volumeMounts ?? []).filter((v: any) => v.mountPath === "/data"),
			);
		const api = appWorkloads.find((w) => roleOf(w).split(",").includes("api"))!;
		// The gateway writes its webhook signing key there (read-only root filesystem elsewhere).
		expect(dataMounts(api)).toHaveLength(1);
		for (const w of appWorkloads.filter((w) => w !== api))
			expect({ w: w.metadata.name, mounts: dataMounts(w) }).toEqual({
				w: w.metadata.name,
				mounts: [],
			});

		// The keyring's master key comes from the Secret, and not optionally: without it the
		// kubelet refuses to create the container, so the keyring never starts on a generated key.
		const keyring = appWorkloads.find((w) => roleOf(w) === "keyring")!;
		const [container] = containersOf(keyring);
		const masterKey = (container.env ?? []).find((e: any) => e.name === "KEYRING_MASTER_KEY");
		expect(masterKey?.value).toBeUndefined();
		expect(masterKey?.valueFrom?.secretKeyRef).toEqual({
			name: secretName,
			key: "KEYRING_MASTER_KEY",
		});
		expect(secretKeys).toContain("KEYRING_MASTER_KEY");
		// Nowhere to write one either: no volume at DATA_DIR and a read-only root filesystem.
		expect(container.securityContext?.readOnlyRootFilesystem).toBe(true);
		// No other workload can read it.
		for (const w of appWorkloads.filter((w) => w !== keyring))
			expect({
				w: w.metadata.name,
				env: (containersOf(w)[0].env ?? []).filter(
					(e: any) => e.name === "KEYRING_MASTER_KEY",
				),
			}).toEqual({ w: w.metadata.name, env: [] });
	});

	test("MongoDB runs as a StatefulSet with a persistent volume; NATS is there", () => {
		const mongo = find("StatefulSet", "mongo")!;
		expect(mongo.spec.volumeClaimTemplates).toHaveLength(1);
		const mount = containersOf(mongo)[0] as any;
		expect(mount.volumeMounts.find((v: any) => v.mountPath === "/data/db").name).toBe(
			mongo.spec.volumeClaimTemplates[0].metadata.name,
		);
		expect(find("Service", "mongo")?.spec.clusterIP).toBe("None");
		expect(find("StatefulSet", "nats")).toBeDefined();
		expect(find("Service", "nats")?.spec.ports.map((p: any) => p.port)).toContain(4222);
		// The app reaches them by those names.
		for (const w of appWorkloads)
			expect(envOf(containersOf(w)[0]).TRANSPORTER).toMatch(/@nats-2\.nats-headless:4222$/);
		for (const w of appWorkloads.filter((w) => envOf(containersOf(w)[0]).MONGO_URI))
			expect(envOf(containersOf(w)[0]).MONGO_URI).toMatch(
				/@mongo-0\.mongo:27017,mongo-1\.mongo:27017,mongo-2\.mongo:27017\//,
			);
	});

	describe("NATS is a StatefulSet of three, routed over a headless Service, over TLS from Secrets", () => {
		const nats = find("StatefulSet", "nats")!;
		const [server] = containersOf(nats) as any[];

		test("three members with stable names, one per node where it can, at most one down by choice", () => {
			expect(nats.spec.replicas).toBe(3);
			expect(nats.spec.serviceName).toBe("nats-headless");
			const headless = find("Service", "nats-headless")!;
			expect(headless.spec.clusterIP).toBe("None");
			expect(headless.spec.publishNotReadyAddresses).toBe(true);
			expect(headless.spec.ports.map((p: any) => p.port).sort()).toEqual([4222, 6222, 8222]);
			expect(
				nats.spec.template.spec.affinity.podAntiAffinity
					.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey,
			).toBe("kubernetes.io/hostname");
			const budget = manifests.find(
				(m) => m.kind === "PodDisruptionBudget" && m.metadata.name === "nats",
			)!;
			expect(budget.spec.maxUnavailable).toBe(1);
			expect(budget.spec.selector.matchLabels).toEqual(nats.spec.selector.matchLabels);
		});

		test("every member routes to every member by its headless name, and names itself after its pod", () => {
			const env = envOf(server);
			expect(env.NATS_SERVER_NAME).toEqual({ fieldRef: { fieldPath: "metadata.name" } });
			expect([env.NATS_ROUTE_1, env.NATS_ROUTE_2, env.NATS_ROUTE_3]).toEqual(
				NATS_MEMBERS.map((member) => `nats-route://${member}.nats-headless:6222`),
			);
			expect(fs.readFileSync(path.join(K8S, "nats-server.conf"), "utf8")).toContain(
				"routes: [$NATS_ROUTE_1, $NATS_ROUTE_2, $NATS_ROUTE_3]",
			);
		});

		test("the members' certificates come from the nats-server-tls Secret, the nodes' from nats-client-tls", () => {
			const tlsVolume = nats.spec.template.spec.volumes.find((v: any) => v.name === "tls");
			expect(tlsVolume.secret.secretName).toBe("nats-server-tls");
			expect(server.volumeMounts).toContainEqual({
				name: "tls",
				mountPath: "/etc/nats/tls",
				readOnly: true,
			});
			for (const w of appWorkloads) {
				const volume = w.spec.template.spec.volumes.find(
					(v: any) => v.name === "nats-client-tls",
				);
				expect({ w: w.metadata.name, secret: volume?.secret?.secretName }).toEqual({
					w: w.metadata.name,
					secret: "nats-client-tls",
				});
				expect((containersOf(w)[0] as any).volumeMounts).toContainEqual({
					name: "nats-client-tls",
					mountPath: "/etc/nats-tls",
					readOnly: true,
				});
			}
			expect(configMap.data).toMatchObject({
				NATS_CA_FILE: "/etc/nats-tls/ca.crt",
				NATS_CERT_FILE: "/etc/nats-tls/tls.crt",
				NATS_KEY_FILE: "/etc/nats-tls/tls.key",
			});
		});
	});

	describe("MongoDB is a replica set of three members, with access control and a disruption budget", () => {
		const mongo = find("StatefulSet", "mongo")!;
		const [container] = containersOf(mongo) as any[];
		const probe = container.readinessProbe.exec.command as string[];
		/** The script mongosh runs on pod `pod`: sh puts the pod's name in for $(hostname). */
		const scriptOn = (pod: string) => evalScriptOf(probe[2]).replaceAll("$(hostname)", pod);
		const members = [0, 1, 2].map((i) => ({ _id: i, host: `mongo-${i}.mongo:27017` }));

		test("three members started together, one per node where it can, at most one down by choice, 8.0 images", () => {
			expect(mongo.spec.replicas).toBe(3);
			// rs.initiate needs every member up: OrderedReady would wait for mongo-0 to be ready first.
			expect(mongo.spec.podManagementPolicy).toBe("Parallel");
			const spread =
				mongo.spec.template.spec.affinity.podAntiAffinity
					.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm;
			expect(spread).toEqual({
				topologyKey: "kubernetes.io/hostname",
				labelSelector: { matchLabels: mongo.spec.selector.matchLabels },
			});
			const pdb = find("PodDisruptionBudget", "mongo")!;
			expect(pdb.apiVersion).toBe("policy/v1");
			expect(pdb.spec.selector.matchLabels).toEqual(mongo.spec.selector.matchLabels);
			// Two of three stay: a majority, so majority writes go on.
			expect(pdb.spec.maxUnavailable).toBe(1);
			expect(container.image).toMatch(/^mongo:8\.0\.\d+$/);
		});

		test("only mongo-0 creates the root user: the others join empty, as rs.initiate requires", () => {
			expect(container.command.slice(0, 2)).toEqual(["sh", "-c"]);
			expect(spawnSync("sh", ["-n", "-c", container.command[2]]).status).toBe(0);
			expect(container.command[2]).toMatch(
				/^\[ "\$\(hostname\)" = mongo-0 \] \|\| unset MONGO_INITDB_ROOT_USERNAME MONGO_INITDB_ROOT_PASSWORD; exec docker-entrypoint\.sh mongod "\$@"$/,
			);
			expect(container.command[3]).toBe("mongod");
		});

		test("the liveness probe pings with mongosh", () => {
			expect(container.livenessProbe.exec.command.slice(0, 2)).toEqual([
				"mongosh",
				"--quiet",
			]);
		});

		test("mongod runs as rs0 with a key file an init container writes, mode 0400, into a volume of its own", () => {
			const args = container.args as string[];
			expect(args).toEqual(expect.arrayContaining(["--replSet", "rs0", "--keyFile"]));
			const keyFile = args[args.indexOf("--keyFile") + 1];
			const mount = container.volumeMounts.find((v: any) =>
				keyFile.startsWith(`${v.mountPath}/`),
			);
			expect(mount).toMatchObject({ readOnly: true });
			const init = (mongo.spec.template.spec.initContainers as any[]).find((c) =>
				c.volumeMounts.some((v: any) => v.name === mount.name),
			);
			expect(init.command.join(" ")).toContain(`chmod 0400 ${keyFile}`);
			expect(init.image).toBe(container.image);
			// The same key on every member: derived from the Secret, never random per pod.
			expect(init.command.join(" ")).not.toContain("urandom");
			expect(init.env).toEqual([
				{
					name: "MONGO_PASSWORD",
					valueFrom: { secretKeyRef: { name: secretName, key: "MONGO_PASSWORD" } },
				},
			]);
			// Its name resolves before it is ready: the readiness probe initiates the set under it.
			expect(find("Service", "mongo")?.spec.publishNotReadyAddresses).toBe(true);
		});

		test("every MONGO_URI names the replica set", () => {
			for (const w of appWorkloads.filter((w) => envOf(containersOf(w)[0]).MONGO_URI))
				expect(envOf(containersOf(w)[0]).MONGO_URI).toMatch(/[?&]replicaSet=rs0(&|$)/);
		});

		test("the readiness probe is a valid shell command, authenticates, and uses mongosh", () => {
			expect(probe.slice(0, 2)).toEqual(["sh", "-c"]);
			expect(probe[2]).toMatch(/^mongosh --quiet/);
			expect(probe[2]).toContain(
				'-u "$MONGO_INITDB_ROOT_USERNAME" -p "$MONGO_INITDB_ROOT_PASSWORD" --authenticationDatabase admin',
			);
			expect(spawnSync("sh", ["-n", "-c", probe[2]]).status).toBe(0);
		});

		test("mongo-0 initiates the set of three under the names clients use, and is ready once primary", () => {
			const state = { initiated: false, primary: false };
			expect(runHealthScript(scriptOn("mongo-0"), "mongosh", state)).toEqual({
				exitCode: 1,
				initiatedWith: { _id: "rs0", members },
			});
			state.primary = true;
			expect(runHealthScript(scriptOn("mongo-0"), "mongosh", state)).toEqual({
				exitCode: 0,
				initiatedWith: null,
			});
		});

		test("mongo-1 and mongo-2 never initiate a set of their own; they are ready once secondaries", () => {
			for (const pod of ["mongo-1", "mongo-2"]) {
				const state = { initiated: false, primary: false, secondary: false };
				expect(runHealthScript(scriptOn(pod), "mongosh", state)).toEqual({
					exitCode: 1,
					initiatedWith: null,
				});
				// mongo-0's initiation reached it, and it caught up.
				Object.assign(state, { initiated: true, secondary: true });
				expect(runHealthScript(scriptOn(pod), "mongosh", state)).toEqual({
					exitCode: 0,
					initiatedWith: null,
				});
			}
		});
	});

	test("every image is pinned, never latest", () => {
		for (const w of workloads)
			for (const c of containersOf(w)) {
				expect({ workload: w.metadata.name, image: c.image }).toEqual({
					workload: w.metadata.name,
					image: expect.stringMatching(/^[a-z0-9./-]+:\d+\.\d+\.\d+(-[a-z0-9.]+)?$/),
				});
				expect(c.image).not.toMatch(/:latest$/);
			}
		for (const image of kustomization.images ?? [])
			expect(image.newTag).toMatch(/^\d+\.\d+\.\d+/);
	});

	test("every container has resource requests and limits and a restrictive securityContext", () => {
		for (const w of workloads) {
			const pod = w.spec.template.spec;
			const where = `${w.kind} ${w.metadata.name}`;
			expect({
				where,
				runAsNonRoot: pod.securityContext?.runAsNonRoot,
				seccomp: pod.securityContext?.seccompProfile?.type,
				token: pod.automountServiceAccountToken,
			}).toEqual({ where, runAsNonRoot: true, seccomp: "RuntimeDefault", token: false });
			expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
			for (const c of containersOf(w)) {
				expect({ where, c: c.name, resources: c.resources }).toEqual({
					where,
					c: c.name,
					resources: {
						requests: { cpu: expect.anything(), memory: expect.anything() },
						limits: { cpu: expect.anything(), memory: expect.anything() },
					},
				});
				expect({ where, c: c.name, securityContext: c.securityContext }).toEqual({
					where,
					c: c.name,
					securityContext: {
						allowPrivilegeEscalation: false,
						readOnlyRootFilesystem: true,
						capabilities: { drop: ["ALL"] },
					},
				});
				expect({
					where,
					c: c.name,
					liveness: Boolean(c.livenessProbe),
					readiness: Boolean(c.readinessProbe),
				}).toEqual({ where, c: c.name, liveness: true, readiness: true });
			}
		}
	});

	test("app probes use HEALTH_PORT and the health routes; Prometheus scrapes METRICS_PORT /metrics", () => {
		const healthPort = Number(configMap.data!.HEALTH_PORT);
		const metricsPort = Number(configMap.data!.METRICS_PORT);
		expect(healthPort).toBeGreaterThan(0);
		for (const w of appWorkloads) {
			const c = containersOf(w)[0];
			expect(c.envFrom).toEqual([{ configMapRef: { name: configMap.metadata.name } }]);
			const portNumber = (port: string | number) =>
				typeof port === "number"
					? port
					: c.ports!.find((p) => p.name === port)?.containerPort;
			expect({
				w: w.metadata.name,
				path: c.livenessProbe.httpGet.path,
				port: portNumber(c.livenessProbe.httpGet.port),
			}).toEqual({ w: w.metadata.name, path: "/health/live", port: healthPort });
			expect({
				w: w.metadata.name,
				path: c.readinessProbe.httpGet.path,
				port: portNumber(c.readinessProbe.httpGet.port),
			}).toEqual({ w: w.metadata.name, path: "/health/ready", port: healthPort });
			if (c.startupProbe) expect(c.startupProbe.httpGet.path).toBe("/health/live");
			const annotations = w.spec.template.metadata.annotations;
			expect({ w: w.metadata.name, annotations }).toEqual({
				w: w.metadata.name,
				annotations: {
					"prometheus.io/scrape": "true",
					"prometheus.io/port": String(metricsPort),
					"prometheus.io/path": "/metrics",
				},
			});
			expect(c.ports!.map((p) => p.containerPort)).toEqual(
				expect.arrayContaining([healthPort, metricsPort]),
			);
		}
	});

	test("pods get longer to stop than the broker's shutdown timeout", () => {
		const { brokerOptions } =
			require("../../src/broker/broker-options") as typeof import("../../src/broker/broker-options");
		const { loadConfig } = require("../../src/config") as typeof import("../../src/config");
		const { shutdownTimeout } = brokerOptions(loadConfig({})).tracking as {
			shutdownTimeout: number;
		};
		for (const w of appWorkloads)
			expect({
				w: w.metadata.name,
				grace: w.spec.template.spec.terminationGracePeriodSeconds > shutdownTimeout / 1000,
			}).toEqual({ w: w.metadata.name, grace: true });
	});

	test("the ConfigMap sets only configuration names the app reads", () => {
		const configSource = fs.readFileSync(path.join(ROOT, "src", "config.ts"), "utf8");
		const known = new Set(
			[...configSource.matchAll(/env: "([A-Z_]+)"|pick\("([A-Z_]+)"|\benv\.([A-Z_]+)/g)].map(
				(m) => m[1] ?? m[2] ?? m[3],
			),
		);
		// Read by the health middleware's wiring (src/broker/health.ts) until src/config.ts has it.
		known.add("HEALTH_PORT");
		for (const key of Object.keys(configMap.data!))
			expect({ key, known: known.has(key) }).toEqual({ key, known: true });
	});

	test("the probe routes answer on a real broker with the health middleware", async () => {
		const health = HealthMiddleware({ port: 0, host: "127.0.0.1" });
		const broker = new ServiceBroker({ logger: false, middlewares: [health] });
		await broker.start();
		try {
			const { port } = health.address()!;
			const paths = new Set(
				appWorkloads.flatMap((w) =>
					containersOf(w).flatMap((c) =>
						[c.livenessProbe, c.readinessProbe, c.startupProbe]
							.filter(Boolean)
							.map((p: any) => p.httpGet.path),
					),
				),
			);
			expect([...paths].sort()).toEqual(["/health/live", "/health/ready"]);
			for (const probePath of paths)
				expect({ probePath, status: await status(port, probePath) }).toEqual({
					probePath,
					status: 200,
				});
		} finally {
			await broker.stop();
		}
	});
});

function status(port: number, urlPath: string): Promise<number> {
	return new Promise((resolve, reject) => {
		http.get({ host: "127.0.0.1", port, path: urlPath }, (res) => {
			res.resume();
			resolve(res.statusCode ?? 0);
		}).on("error", reject);
	});
}
