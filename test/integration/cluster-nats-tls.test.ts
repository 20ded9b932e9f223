/**
 * `npm run cluster -- --nats 3 --tls`: the whole job over a NATS cluster of three routed
 * nats-servers, clients and routes over TLS, with the certificates it makes in
 * DATA_DIR/cluster/tls; every role is given all three URLs.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { runCli } from "../support/cli";

test("npm run cluster -- --nats 3 --tls signs every record over three routed nats-servers with TLS, audits, and exits 0", async () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-cluster-tls-"));
	try {
		const env = { DATA_DIR: dataDir, RECORDS: "3000", KEYS: "5" };
		const result = await runCli(
			"cluster.js",
			["--nats", "3", "--tls", "--signers", "2", "--batch-size", "100"],
			env,
		);
		const said = `${result.stdout}\n${result.stderr}`;
		expect(said).toContain(
			"a local NATS cluster of 3 routed nats-servers over TLS (clients and routes)",
		);
		// Every role gets the three members (passwords are not printed).
		expect(result.stdout).toMatch(
			/NATS: tls:\/\/127\.0\.0\.1:\d+,tls:\/\/127\.0\.0\.1:\d+,tls:\/\/127\.0\.0\.1:\d+ /,
		);
		expect(result.stdout).toContain("Audit PASSED: 3000/3000 records signed, 0 violations");
		expect(result.code).toBe(0);

		const root = path.join(dataDir, "cluster");
		const tls = path.join(root, "tls");
		expect(fs.statSync(tls).mode & 0o777).toBe(0o700);
		for (const file of fs.readdirSync(tls))
			expect(fs.statSync(path.join(tls, file)).mode & 0o777).toBe(0o600);
		// Three configurations, each with TLS for clients and for routes, and routes to the two others.
		for (const n of [1, 2, 3]) {
			const conf = fs.readFileSync(path.join(root, `nats-server-${n}.conf`), "utf8");
			expect(fs.statSync(path.join(root, `nats-server-${n}.conf`)).mode & 0o777).toBe(0o600);
			expect(conf).toMatch(/^tls \{/m);
			expect(conf).toMatch(/cluster \{[\s\S]*tls \{[\s\S]*verify: true/);
			expect(conf.match(/nats-route:\/\/127\.0\.0\.1:\d+/g)).toHaveLength(2);
		}
		// Each role's log shows it connected to NATS.
		for (const role of ["keyring", "main", "signer-1", "signer-2"])
			expect(fs.readFileSync(path.join(root, "logs", `${role}.log`), "utf8")).toContain(
				"NATS client is connected",
			);
	} finally {
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
});

test.each([
	[["--nats", "0"], '--nats must be an integer from 1 to 9 (nats-servers to start), got "0"'],
	[
		["--transporter", "nats://127.0.0.1:4222", "--tls"],
		"--transporter joins a running NATS: --nats and --tls choose the one to start instead",
	],
	[["--transporter", "nats://a:1,tls://b:2"], "--transporter mixes nats:// and tls:// URLs"],
])(
	"npm run cluster %j is refused with its usage, before starting anything",
	async (args, message) => {
		const dataDir = "/nonexistent/cluster-tls-should-not-be-created";
		const result = await runCli("cluster.js", args, { DATA_DIR: dataDir });
		expect(result.code).toBe(2);
		expect(result.stderr).toContain(message);
		expect(result.stderr).toContain("Usage: npm run cluster");
		expect(fs.existsSync(dataDir)).toBe(false);
	},
);
