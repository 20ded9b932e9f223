/**
 * Keys that come and go while leases are granted (docs/design.md §5.8): added keys are granted
 * next, retired and revoked ones never again (their current lease runs out), the last active key
 * stays, KEY_MAX_USES retires a key by itself, only an operator proof changes keys, and a
 * restarted keyring and the audit's replay agree with the keyring that made the changes.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import type { KeyInfo, KeyringStatus, Lease, LeaseChange, LeaseDoc } from "../../src/contract";
import { pageAll } from "../../src/audit/collect";
import { localCredential, newCredential } from "../../src/identity/credential";
import { LeaseKeyOpener } from "../../src/keyring/key-transport";
import { replayLeases } from "../../src/keyring/replay";
import type { KeyringStore } from "../../src/keyring/store";
import type { KeyringSettings } from "../../src/settings";
import { operatorRequests, signerRequests } from "../support/signer-proofs";
import { keyringService } from "../support/system";

const running: ServiceBroker[] = [];
let dataDir: string;

beforeEach(() => {
	dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "keyring-lifecycle-"));
});

afterEach(async () => {
	while (running.length) await running.pop()!.stop();
	fs.rmSync(dataDir, { recursive: true, force: true });
});

async function startKeyring(settings: Partial<KeyringSettings>) {
	const broker = new ServiceBroker({ transporter: null, logger: false });
	broker.createService(
		keyringService({ dataDir, sweepIntervalMs: 0, acquireWaitMs: 2_000, ...settings }),
	);
	await broker.start();
	running.push(broker);
	const signer = new LeaseKeyOpener();
	const requests = signerRequests();
	const operator = operatorRequests();
	const holders = new Map<string, string>();
	const store = () =>
		(broker.getLocalService("keyring") as unknown as { store: KeyringStore }).store;
	return {
		broker,
		acquire: async (holder: string, waitMs?: number) => {
			const lease = await broker.call<Lease, object>(
				"keyring.acquire",
				requests.acquire(holder, signer.session.publicJwk, waitMs),
			);
			holders.set(lease.leaseId, holder);
			return lease;
		},
		release: (leaseId: string) =>
			broker.call<LeaseChange, object>(
				"keyring.release",
				requests.release(holders.get(leaseId)!, leaseId),
			),
		add: (count: number) =>
			broker.call<KeyInfo[], object>("keyring.addKeys", operator.add(count)),
		retire: (keyId: string) =>
			broker.call<KeyInfo, object>("keyring.retireKey", operator.retire(keyId)),
		revoke: (keyId: string, reason: string) =>
			broker.call<KeyInfo, object>("keyring.revokeKey", operator.revoke(keyId, reason)),
		status: () => broker.call<KeyringStatus>("keyring.status"),
		keys: () => broker.call<KeyInfo[]>("keyring.keys"),
		leaseDocs: () => pageAll<LeaseDoc>(broker, "keyring", "leases", 1000),
		store,
		stop: async () => {
			await broker.stop();
			running.splice(running.indexOf(broker), 1);
		},
	};
}

test("an added key is granted next, before keys already used; a retired key is never granted again and its lease runs out; a restart and the audit's replay agree", async () => {
	const ring = await startKeyring({ keys: 2 });
	const first = await ring.acquire("a");
	expect(first.keyId).toBe("key-000");
	await ring.release(first.leaseId);
	expect((await ring.status()).freeQueue).toEqual(["key-001", "key-000"]);

	const added = await ring.add(2);
	expect(added.map((k) => [k.keyId, k.state, k.uses])).toEqual([
		["key-002", "active", 0],
		["key-003", "active", 0],
	]);
	// Never used, so before key-000, which was: after the never-used key-001.
	expect((await ring.status()).freeQueue).toEqual(["key-001", "key-002", "key-003", "key-000"]);
	// The JWKS publishes them at once.
	const jwks = await ring.broker.call<{ keys: Array<{ kid: string }> }>("keyring.jwks");
	expect(jwks.keys.map((k) => k.kid)).toEqual(["key-000", "key-001", "key-002", "key-003"]);

	const held = await ring.acquire("b");
	expect(held.keyId).toBe("key-001");
	// Retired while leased: its lease goes on, and its key does not come back.
	expect(await ring.retire("key-001")).toMatchObject({
		keyId: "key-001",
		state: "retired",
		leased: true,
	});
	// Retired while free: out of the queue at once.
	await ring.retire("key-000");
	expect((await ring.status()).freeQueue).toEqual(["key-002", "key-003"]);
	expect(await ring.release(held.leaseId)).toMatchObject({ changed: true });
	expect((await ring.status()).freeQueue).toEqual(["key-002", "key-003"]);
	const granted = [(await ring.acquire("c")).keyId, (await ring.acquire("d")).keyId];
	expect(granted).toEqual(["key-002", "key-003"]);
	expect(await ring.status()).toMatchObject({ keys: 4, active: 2, free: 0, leased: 2 });
	// Still in the JWKS: the signatures they made keep verifying.
	expect(
		(await ring.broker.call<{ keys: Array<{ kid: string }> }>("keyring.jwks")).keys,
	).toHaveLength(4);

	// The audit's replay, with the key events the store holds, finds the same queue and no fault.
	const events = await ring.store().keyEvents();
	expect(events.map((e) => [e.keyId, e.event])).toEqual([
		["key-002", "added"],
		["key-003", "added"],
		["key-001", "retired"],
		["key-000", "retired"],
	]);
	const status = await ring.status();
	const replay = replayLeases(
		(await ring.keys()).map((k) => k.keyId),
		await ring.leaseDocs(),
		events,
	);
	expect(replay.problems).toEqual([]);
	expect(replay.nonLruGrants).toEqual([]);
	expect(replay.freeQueue).toEqual(status.freeQueue);
	expect(replay.lastSeq).toBe(status.lastSeq);

	// A restarted keyring rebuilds the same: retired keys stay out, the added ones are in.
	await ring.stop();
	const again = await startKeyring({ keys: 2 });
	expect(await again.status()).toMatchObject({ keys: 4, active: 2, leased: 2, free: 0 });
	expect((await again.keys()).map((k) => [k.keyId, k.state])).toEqual([
		["key-000", "retired"],
		["key-001", "retired"],
		["key-002", "active"],
		["key-003", "active"],
	]);
});

test("the last active key is not retired (409) but may be revoked; acquires then wait for an added key", async () => {
	const ring = await startKeyring({ keys: 2 });
	await ring.retire("key-000");
	await expect(ring.retire("key-001")).rejects.toMatchObject({
		code: 409,
		type: "LAST_ACTIVE_KEY",
		// The command it names is one that works.
		message: expect.stringContaining(
			"key-001 is the last active key: add keys first (npm run keys -- add --count N)",
		),
	});
	await expect(ring.retire("key-404")).rejects.toMatchObject({
		code: 404,
		type: "KEY_NOT_FOUND",
		message: "No key key-404 in this keyring (npm run keys -- list lists them)",
	});
	const revoked = await ring.revoke("key-001", "its host was compromised");
	expect(revoked).toMatchObject({ state: "revoked", since: expect.any(String) });
	expect(await ring.status()).toMatchObject({ active: 0, free: 0 });

	// A wait that ends with no active key says so, not that keys are leased.
	await expect(ring.acquire("none", 50)).rejects.toMatchObject({
		code: 503,
		type: "NO_FREE_KEY",
		message: expect.stringMatching(
			/^No active key: all 2 keys are retired or revoked \(npm run keys -- add --count N\); waited \d+ ms/,
		),
	});

	const waiting = ring.acquire("a", 2_000);
	await new Promise((resolve) => setTimeout(resolve, 50));
	await ring.add(1);
	expect((await waiting).keyId).toBe("key-002");
	// Revoked, then retired: it stays revoked; the store says since when.
	await ring.retire("key-001").catch(() => undefined);
	const [stored] = (await ring.store().keys()).filter((k) => k.keyId === "key-001");
	expect(stored).toMatchObject({ revokedReason: "its host was compromised" });
	expect(stored.retiredSeq ?? null).toBeNull();
});

test("KEY_MAX_USES retires a key at the grant that uses it up; its last lease runs out", async () => {
	const ring = await startKeyring({ keys: 2, keyMaxUses: 2 });
	const grants: string[] = [];
	for (let i = 0; i < 3; i++) {
		const lease = await ring.acquire(`s${i}`);
		grants.push(lease.keyId);
		await ring.release(lease.leaseId);
	}
	expect(grants).toEqual(["key-000", "key-001", "key-000"]);
	const keys = await ring.keys();
	expect(keys.map((k) => [k.keyId, k.state, k.uses])).toEqual([
		["key-000", "retired", 2],
		["key-001", "active", 1],
	]);
	const [event] = (await ring.store().keyEvents()).filter((e) => e.keyId === "key-000");
	expect(event).toMatchObject({ event: "retired", reason: "max-uses" });
	// The grant that used it up came first, then its retirement.
	const third = (await ring.leaseDocs()).find((d) => d.holder === "s2")!;
	expect(event.seq).toBeGreaterThan(third.grantSeq);
	expect((await ring.status()).freeQueue).toEqual(["key-001"]);
});

test("only an operator proof made with an enrolled batcher credential changes keys: none, a stranger's, or one for another change is a 403 and nothing changes", async () => {
	const ring = await startKeyring({ keys: 2 });
	const call = (action: string, params: object) =>
		ring.broker.call(action, params).catch((err: Error) => err);
	const stranger = operatorRequests(newCredential("batcher-x"));
	const honest = operatorRequests();
	expect(await call("keyring.addKeys", { count: 1, proof: "" })).toMatchObject({
		code: 403,
		type: "OPERATOR_PROOF_MISSING",
	});
	expect(await call("keyring.addKeys", { count: 1, proof: "a.b.c" })).toMatchObject({
		code: 403,
		type: "OPERATOR_PROOF_INVALID",
	});
	expect(await call("keyring.addKeys", stranger.add(1))).toMatchObject({
		code: 403,
		type: "BATCHER_NOT_ENROLLED",
		message: expect.stringMatching(/Only an operator holding an enrolled batcher credential/),
	});
	// A proof for adding one key does not add five, nor retire a key.
	expect(await call("keyring.addKeys", { ...honest.add(1), count: 5 })).toMatchObject({
		code: 403,
		type: "OPERATOR_PROOF_INVALID",
	});
	expect(
		await call("keyring.retireKey", { keyId: "key-000", proof: honest.add(1).proof }),
	).toMatchObject({ code: 403 });
	// A signer's own credential is not an operator's.
	expect(
		await call("keyring.retireKey", {
			...operatorRequests(localCredential("")).retire("key-000"),
		}),
	).toMatchObject({ code: 403 });
	expect((await ring.keys()).map((k) => [k.keyId, k.state])).toEqual([
		["key-000", "active"],
		["key-001", "active"],
	]);
	expect(await ring.store().keyEvents()).toEqual([]);
});
