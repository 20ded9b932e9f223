/**
 * One keyring only: a second keyring on the same embedded store is refused by the lock file
 * (a stale lock of a dead process is taken over), and keyring nodes on one NATS namespace
 * elect exactly one active keyring, even when they start at the same moment.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { keyringService } from "./support/system";
import { brokerOptions } from "../src/broker-options";
import { loadConfig } from "../src/config";
import type { Lease } from "../src/contract";
import { LeaseKeyOpener } from "../src/keyring/key-transport";
import { LOCK_FILE } from "../src/keyring/store-lock";
import { startNatsServer, type NatsServer } from "./support/nats-server";
import { sleep } from "../src/clock";

const running: ServiceBroker[] = [];
afterEach(async () => {
	while (running.length) await running.pop()!.stop().catch(() => undefined);
});

function keyringBroker(options: { dataDir?: string; transporter?: string; namespace?: string; nodeID?: string; settleMs?: number } = {}): ServiceBroker {
	const config = loadConfig({ DATA_DIR: "", TRANSPORTER: options.transporter ?? "", NAMESPACE: options.namespace ?? "keyring-test", KEYS: "3" });
	const broker = new ServiceBroker(brokerOptions(config, { nodeID: options.nodeID ?? `keyring-test-${running.length}`, logLevel: false }));
	broker.createService(keyringService({ dataDir: options.dataDir ?? "", keys: 3, sweepIntervalMs: 0, electionSettleMs: options.settleMs ?? 1_000 }));
	running.push(broker);
	return broker;
}

/** The pid of a process that has exited: nobody holds it now. */
function deadPid(): Promise<number> {
	const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
	return new Promise(resolve => child.once("exit", () => resolve(child.pid!)));
}

describe("one keyring per embedded store", () => {
	let dataDir: string;
	beforeEach(() => {
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "keyring-lock-"));
	});
	afterEach(() => fs.rmSync(dataDir, { recursive: true, force: true }));

	test("a second keyring on the same DATA_DIR is refused while the first runs, and starts once it stopped", async () => {
		const first = keyringBroker({ dataDir });
		await first.start();
		const holder = JSON.parse(fs.readFileSync(path.join(dataDir, LOCK_FILE), "utf8"));
		expect(holder).toMatchObject({ pid: process.pid, nodeID: first.nodeID });

		const second = keyringBroker({ dataDir });
		await expect(second.start()).rejects.toThrow(/keyring store .* is in use by another keyring \(pid \d+ .*node keyring-test-0/);
		await second.stop();
		// The refused one left the lock alone.
		expect(JSON.parse(fs.readFileSync(path.join(dataDir, LOCK_FILE), "utf8")).token).toBe(holder.token);

		await first.stop();
		expect(fs.existsSync(path.join(dataDir, LOCK_FILE))).toBe(false);
		const third = keyringBroker({ dataDir });
		await third.start();
		expect(await third.call("keyring.status")).toMatchObject({ keys: 3 });
	});

	test("a lock held by another live process refuses the keyring before it opens (or seeds) the store", async () => {
		const other = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"], { stdio: "ignore" });
		try {
			fs.writeFileSync(path.join(dataDir, LOCK_FILE), JSON.stringify({ pid: other.pid, nodeID: "elsewhere", hostname: os.hostname(), since: new Date().toISOString(), token: "other" }));
			const refused = keyringBroker({ dataDir });
			await expect(refused.start()).rejects.toThrow(new RegExp(`in use by another keyring \\(pid ${other.pid} .*node elsewhere`));
			expect(fs.readdirSync(dataDir).sort()).toEqual([LOCK_FILE]);
		} finally {
			other.kill("SIGKILL");
		}
	});

	test("a stale lock left by a killed keyring is taken over", async () => {
		fs.writeFileSync(path.join(dataDir, LOCK_FILE), JSON.stringify({ pid: await deadPid(), nodeID: "killed", hostname: os.hostname(), since: new Date().toISOString(), token: "stale" }));
		const keyring = keyringBroker({ dataDir });
		await keyring.start();
		expect(JSON.parse(fs.readFileSync(path.join(dataDir, LOCK_FILE), "utf8"))).toMatchObject({ pid: process.pid, nodeID: keyring.nodeID });
	});
});

describe("one active keyring per NATS namespace", () => {
	let nats: NatsServer;
	beforeAll(async () => {
		nats = await startNatsServer();
	});
	afterAll(async () => {
		await nats?.stop();
	});

	test("two keyrings starting at the same moment: exactly one serves, the other refuses and says which", async () => {
		const namespace = `election-${Date.now()}`;
		const a = keyringBroker({ transporter: nats.url, namespace, nodeID: "keyring-a" });
		const b = keyringBroker({ transporter: nats.url, namespace, nodeID: "keyring-b" });
		const outcomes = await Promise.all([a.start().then(() => "active", (err: Error) => err.message), b.start().then(() => "active", (err: Error) => err.message)]);
		expect(outcomes.filter(o => o === "active")).toHaveLength(1);
		// Claims that overlap go to the lower node id; on a loaded machine one may also claim
		// before the other is in sight, and then the later one finds it active. Never both.
		const winner = outcomes[0] === "active" ? "keyring-a" : "keyring-b";
		const loser = outcomes[0] === "active" ? outcomes[1] : outcomes[0];
		expect(loser).toMatch(new RegExp(`refuses to start: keyring node '${winner}' (is claiming too and its node id sorts first|claimed at the same time|is already active)`));
		if (winner === "keyring-b") expect(loser).toMatch(/'keyring-b' is already active/);

		// A third, later: refused because one is active; signers only ever see the first.
		const c = keyringBroker({ transporter: nats.url, namespace, nodeID: "keyring-0-late" });
		await expect(c.start()).rejects.toThrow(new RegExp(`keyring node '${winner}' is already active on NATS namespace`));
		const client = new ServiceBroker(brokerOptions(loadConfig({ DATA_DIR: "", TRANSPORTER: nats.url, NAMESPACE: namespace }), { nodeID: "client", logLevel: false }));
		running.push(client);
		await client.start();
		await client.waitForServices("keyring", 10_000);
		const offering = client.registry.getServiceList({ onlyAvailable: true }).filter(s => s.name === "keyring").map(s => s.nodeID);
		expect(offering).toEqual([winner]);
	});

	test("an active keyring that sees another one appear (a healed partition) stops granting and renewing at once", async () => {
		const namespace = `fence-${Date.now()}`;
		const active = keyringBroker({ transporter: nats.url, namespace, nodeID: "keyring-active", settleMs: 300 });
		await active.start();
		const session = new LeaseKeyOpener().session;
		const lease = await active.call<Lease, object>("keyring.acquire", { holder: "signer-x", sessionKey: session.publicJwk });
		for (let i = 0; i < 2; i++) await active.call("keyring.acquire", { holder: "signer-x", sessionKey: session.publicJwk });
		// Every key is leased: this caller waits in line.
		const waiting = active.call("keyring.acquire", { holder: "signer-z", sessionKey: session.publicJwk, waitMs: 60_000 }).then(() => null, (err: Error) => err);

		// A node that offers `keyring` without an election: only a split brain looks like this.
		const rival = new ServiceBroker(brokerOptions(loadConfig({ DATA_DIR: "", TRANSPORTER: nats.url, NAMESPACE: namespace }), { nodeID: "keyring-rival", logLevel: false }));
		running.push(rival);
		rival.createService({ name: "keyring", actions: { status: () => ({}) } });
		await rival.start();

		await expect(until(() => active.call("keyring.acquire", { holder: "signer-y", sessionKey: session.publicJwk, waitMs: 100 }, { nodeID: "keyring-active" }).then(() => false, (err: { type?: string }) => err.type === "KEYRING_CONFLICT")))
			.resolves.toBe(true);
		await expect(active.call("keyring.renew", { leaseId: lease.leaseId }, { nodeID: "keyring-active" })).rejects.toMatchObject({ code: 503, type: "KEYRING_CONFLICT", message: expect.stringContaining("keyring node 'keyring-rival' is active too") });
		// The caller that was waiting in line is turned away as well, not left for a minute.
		expect(await waiting).toMatchObject({ type: "KEYRING_CONFLICT" });
		// Handing a key back stays possible: it can only make fewer keys leased.
		await expect(active.call("keyring.release", { leaseId: lease.leaseId }, { nodeID: "keyring-active" })).resolves.toMatchObject({ changed: true });
	});
});

async function until(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<boolean> {
	const deadline = Date.now() + timeoutMs;
	while (Date.now() < deadline) {
		if (await check()) return true;
		await sleep(50);
	}
	return false;
}
