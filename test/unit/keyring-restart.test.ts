/**
 * The keyring on an embedded file store: a restart rebuilds the same leases, LRU order and
 * seq from the lease log, keeps its keys, and refuses a master key that does not open them.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { ServiceBroker } from "moleculer";
import type { JWK } from "jose";
import { keyringService } from "../support/system";
import type { KeyDoc, KeyInfo, KeyringStatus, Lease, LeaseChange } from "../../src/contract";
import type { KeyringSettings } from "../../src/settings";
import { LeaseKeyOpener } from "../../src/keyring/key-transport";
import { signerRequests } from "../support/signer-proofs";

let dataDir: string;
const running: ServiceBroker[] = [];

beforeEach(async () => {
	dataDir = await fs.promises.mkdtemp(path.join(os.tmpdir(), "keyring-"));
});

afterEach(async () => {
	while (running.length) await running.pop()!.stop();
	await fs.promises.rm(dataDir, { recursive: true, force: true });
});

function keyringBroker(settings: Partial<KeyringSettings> = {}): ServiceBroker {
	const broker = new ServiceBroker({ transporter: null, logger: false });
	broker.createService(
		keyringService({ dataDir, keys: 6, sweepIntervalMs: 0, leaseTtlMs: 60_000, ...settings }),
	);
	return broker;
}

async function startKeyring(settings: Partial<KeyringSettings> = {}): Promise<ServiceBroker> {
	const broker = keyringBroker(settings);
	await broker.start();
	running.push(broker);
	return broker;
}

async function stop(broker: ServiceBroker): Promise<void> {
	await broker.stop();
	running.splice(running.indexOf(broker), 1);
}

describe("keyring restart", () => {
	test("a restarted keyring rebuilds the same leased set, LRU queue and last seq, with the same keys", async () => {
		const signer = new LeaseKeyOpener();
		const first = await startKeyring();
		const requests = signerRequests();
		const holders = new Map<string, string>();
		const acquire = async (broker: ServiceBroker, holder: string) => {
			const lease = await broker.call<Lease, object>(
				"keyring.acquire",
				requests.acquire(holder, signer.session.publicJwk),
			);
			holders.set(lease.leaseId, holder);
			return lease;
		};
		const release = (broker: ServiceBroker, leaseId: string) =>
			broker.call<LeaseChange, object>(
				"keyring.release",
				requests.release(holders.get(leaseId)!, leaseId),
			);

		const leases: Lease[] = [];
		for (let i = 0; i < 5; i++) leases.push(await acquire(first, `signer-${i}`));
		await release(first, leases[3].leaseId);
		await release(first, leases[0].leaseId);
		leases.push(await acquire(first, "signer-5"));
		await release(first, leases[4].leaseId);
		// Active now: 1, 2, 5; free queue (LRU first): key-003, key-000, key-004.
		const statusBefore = await first.call<KeyringStatus>("keyring.status");
		const keysBefore = await first.call<KeyInfo[]>("keyring.keys");
		const jwksBefore = await first.call<{ keys: JWK[] }>("keyring.jwks");
		const storedKeysBefore = (
			await first.call<{ docs: KeyDoc[] }, object>("keyring.page", { collection: "keys" })
		).docs;
		expect(statusBefore).toMatchObject({
			keys: 6,
			leased: 3,
			free: 3,
			freeQueue: ["key-003", "key-000", "key-004"],
			lastSeq: 9,
		});
		await stop(first);

		expect(fs.statSync(path.join(dataDir, "master.key")).mode & 0o777).toBe(0o600);

		const second = await startKeyring();
		expect(await second.call("keyring.status")).toEqual(statusBefore);
		expect(await second.call("keyring.keys")).toEqual(keysBefore);
		expect(await second.call("keyring.jwks")).toEqual(jwksBefore);
		expect(
			(await second.call<{ docs: KeyDoc[] }, object>("keyring.page", { collection: "keys" }))
				.docs,
		).toEqual(storedKeysBefore);
		expect(keysBefore.filter((k) => k.leased).map((k) => k.leaseId)).toEqual([
			leases[1].leaseId,
			leases[2].leaseId,
			leases[5].leaseId,
		]);

		// The rebuilt state is live: leases from before the restart end, the LRU head is granted next.
		expect(await release(second, leases[2].leaseId)).toMatchObject({ changed: true });
		expect(await release(second, leases[0].leaseId)).toMatchObject({ changed: false });
		const next = await acquire(second, "after-restart");
		expect(next.keyId).toBe("key-003");
		await signer.open(next);
		expect(await second.call("keyring.status")).toMatchObject({
			freeQueue: ["key-000", "key-004", "key-002"],
			lastSeq: 11,
		});
	});

	test("the generated master key file is reused, never replaced", async () => {
		const first = await startKeyring();
		const masterKey = fs.readFileSync(path.join(dataDir, "master.key"), "utf8");
		expect(Buffer.from(masterKey.trim(), "base64")).toHaveLength(32);
		await stop(first);
		const second = await startKeyring();
		expect(fs.readFileSync(path.join(dataDir, "master.key"), "utf8")).toBe(masterKey);
		expect(await second.call<KeyringStatus>("keyring.status")).toMatchObject({
			keys: 6,
			lastSeq: 0,
		});
	});

	test("a wrong master key fails start-up with a clear message", async () => {
		const first = await startKeyring({ masterKey: randomBytes(32).toString("base64") });
		await stop(first);
		expect(fs.existsSync(path.join(dataDir, "master.key"))).toBe(false);

		const wrong = keyringBroker({ masterKey: randomBytes(32).toString("base64") });
		running.push(wrong);
		const failure = await wrong.start().then(
			() => null,
			(err: Error) => err,
		);
		expect(failure?.message).toMatch(
			/master key from KEYRING_MASTER_KEY does not open the keyring's sealed authority key: it is not the key the store was sealed with/,
		);
		expect(failure?.message).not.toMatch(/GCM|decryption operation/i);
	});

	test("sealed keys without their master.key fail start-up instead of getting a fresh master key", async () => {
		const first = await startKeyring();
		await stop(first);
		fs.rmSync(path.join(dataDir, "master.key"));

		const orphan = keyringBroker();
		running.push(orphan);
		await expect(orphan.start()).rejects.toThrow(/master\.key is missing/);
		expect(fs.existsSync(path.join(dataDir, "master.key"))).toBe(false);
	});
});
