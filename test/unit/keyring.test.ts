/**
 * The keyring on a real broker: LRU grants against a reference model, FIFO waiting, idempotent
 * release, expiry, the key transport and the lease log's seq numbers.
 */
import { pageAll } from "../../src/audit/collect";
import { ServiceBroker } from "moleculer";
import crypto from "node:crypto";
import { CompactSign, compactDecrypt, compactVerify, importJWK, type JWK } from "jose";
import type { KeyringSettings } from "../../src/settings";
import { keyringService } from "../support/system";
import type { Lease, LeaseChange, LeaseDoc, LeaseEvent } from "../../src/contract";
import type { KeyInfo, KeyringStatus } from "../../src/contract";
import { replayLeases } from "../../src/keyring/replay";
import { LeaseKeyOpener } from "../../src/keyring/key-transport";
import type { KeyringStore } from "../../src/keyring/store";
import { advanceUntil, FakeClock, settle } from "../support/fake-clock";
import { signerRequests } from "../support/signer-proofs";

interface SeenEvent extends LeaseEvent {
	event: string;
}

interface Harness {
	broker: ServiceBroker;
	events: SeenEvent[];
	/** The signer's side of the key transport: its session key and what opens its leases. */
	signer: LeaseKeyOpener;
	acquire(holder: string, waitMs?: number): Promise<Lease>;
	release(leaseId: string): Promise<LeaseChange>;
	renew(leaseId: string): Promise<LeaseChange>;
	status(): Promise<KeyringStatus>;
	keys(): Promise<KeyInfo[]>;
	leaseDocs(): Promise<LeaseDoc[]>;
	/** The keyring's clock: time moves only when the test says. */
	clock: FakeClock;
}

const running: ServiceBroker[] = [];

async function startKeyring(settings: Partial<KeyringSettings>): Promise<Harness> {
	const broker = new ServiceBroker({ transporter: null, logger: false });
	const clock = new FakeClock(Date.now());
	broker.createService(
		keyringService(
			{
				sweepIntervalMs: 0,
				leaseTtlMs: 30_000,
				leaseGraceMs: 1_000,
				acquireWaitMs: 5_000,
				...settings,
			},
			{ clock },
		),
	);
	const events: SeenEvent[] = [];
	broker.createService({
		name: "lease-listener",
		events: {
			"lease.*"(ctx) {
				events.push({ event: ctx.eventName ?? "", ...(ctx.params as LeaseEvent) });
			},
		},
	});
	await broker.start();
	running.push(broker);
	const signer = new LeaseKeyOpener();
	const requests = signerRequests();
	// Renewals and releases are proven by the lease's holder: remember who acquired what.
	const holders = new Map<string, string>();
	const holderOf = (leaseId: string) => holders.get(leaseId) ?? "unknown-holder";
	return {
		broker,
		events,
		signer,
		clock,
		acquire: async (holder, waitMs) => {
			const lease = await broker.call<Lease, object>(
				"keyring.acquire",
				requests.acquire(holder, signer.session.publicJwk, waitMs),
			);
			holders.set(lease.leaseId, holder);
			return lease;
		},
		release: (leaseId) =>
			broker.call("keyring.release", requests.release(holderOf(leaseId), leaseId)),
		renew: (leaseId) =>
			broker.call("keyring.renew", requests.renew(holderOf(leaseId), leaseId)),
		status: () => broker.call("keyring.status"),
		keys: () => broker.call("keyring.keys"),
		leaseDocs: () => pageAll<LeaseDoc>(broker, "keyring", "leases", 1000),
	};
}

afterEach(async () => {
	while (running.length) await running.pop()!.stop();
});

/** Deterministic pseudo-random numbers, so a failure can be replayed. */
function random(seed: number): () => number {
	let state = seed >>> 0;
	return () => {
		state = (state * 1664525 + 1013904223) >>> 0;
		return state / 2 ** 32;
	};
}

describe("keyring", () => {
	test("every grant takes the head of the LRU queue over 2,000 random grants and releases", async () => {
		const keys = 8;
		const ring = await startKeyring({ keys });
		const model = Array.from({ length: keys }, (_, i) => `key-00${i}`);
		const held: Lease[] = [];
		const next = random(42);
		let grants = 0;
		let releases = 0;
		for (let op = 0; op < 2000; op++) {
			const grant = model.length > 0 && (held.length === 0 || next() < 0.5);
			if (grant) {
				const lease = await ring.acquire(`holder-${op}`);
				expect(lease.keyId).toBe(model.shift());
				held.push(lease);
				grants++;
			} else {
				const [lease] = held.splice(Math.floor(next() * held.length), 1);
				const change = await ring.release(lease.leaseId);
				expect(change.changed).toBe(true);
				model.push(lease.keyId);
				releases++;
			}
		}
		expect(grants).toBeGreaterThan(800);
		expect(releases).toBeGreaterThan(800);
		const status = await ring.status();
		expect(status.freeQueue).toEqual(model);
		expect(status.leased).toBe(held.length);
		const keyList = await ring.keys();
		expect(
			keyList
				.filter((k) => k.leased)
				.map((k) => k.leaseId)
				.sort(),
		).toEqual(held.map((l) => l.leaseId).sort());
		expect(keyList.reduce((sum, k) => sum + k.uses, 0)).toBe(grants);
	});

	test("never-used keys come first, in keyId order, then keys by release time", async () => {
		const ring = await startKeyring({ keys: 4 });
		const first = await ring.acquire("a");
		const second = await ring.acquire("b");
		expect([first.keyId, second.keyId]).toEqual(["key-000", "key-001"]);
		await ring.release(second.leaseId);
		await ring.release(first.leaseId);
		// key-002 and key-003 were never used: they go before the released ones.
		const grants = [];
		for (let i = 0; i < 4; i++) grants.push((await ring.acquire(`c${i}`)).keyId);
		expect(grants).toEqual(["key-002", "key-003", "key-001", "key-000"]);
	});

	test("callers wait in FIFO order when every key is leased; one past its wait gets NO_FREE_KEY (503)", async () => {
		const ring = await startKeyring({ keys: 2 });
		const served: string[] = [];
		const calls = ["w0", "w1", "w2", "w3", "w4"].map((holder) =>
			ring.acquire(holder, 5_000).then((lease) => {
				served.push(holder);
				return lease;
			}),
		);
		const [l0, l1] = await Promise.all(calls.slice(0, 2));
		await settle();
		// Granted in call order (replies may arrive in either order: each is sealed on its own).
		expect([l0.keyId, l1.keyId]).toEqual(["key-000", "key-001"]);
		expect(served.sort()).toEqual(["w0", "w1"]);
		expect((await ring.status()).waiting).toBe(3);

		await ring.release(l1.leaseId);
		const l2 = await calls[2];
		expect(l2.keyId).toBe(l1.keyId);
		await ring.release(l0.leaseId);
		const l3 = await calls[3];
		expect(l3.keyId).toBe(l0.keyId);
		await ring.release(l2.leaseId);
		await calls[4];
		expect(served.slice(2)).toEqual(["w2", "w3", "w4"]);

		const late = ring.acquire("late", 150).then(
			() => null,
			(err: { code: number; type: string; message: string }) => err,
		);
		// Its proof checked, it waits in line from now.
		await settle();
		await ring.clock.advance(149);
		expect((await ring.status()).waiting).toBe(1);
		await ring.clock.advance(1);
		expect(await late).toMatchObject({
			code: 503,
			type: "NO_FREE_KEY",
			message: expect.stringMatching(
				/^All 2 active keys are leased; waited 150 ms \(limit 150 ms\)/,
			),
		});
		expect((await ring.status()).waiting).toBe(0);

		// The three that waited were granted with no time passing: their waits are 0 on this clock, and said so.
		const waitEvents = ring.events.filter(
			(e) => e.event === "lease.granted" && ["w2", "w3", "w4"].includes(e.holder),
		);
		expect(waitEvents.map((e) => e.waitMs)).toEqual([0, 0, 0]);
	});

	test("a wait is bounded by the keyring's acquireWaitMs even when the caller offers more", async () => {
		const ring = await startKeyring({ keys: 1, acquireWaitMs: 100 });
		await ring.acquire("holder");
		const patient = ring.acquire("patient", 60_000).catch((err: Error) => err);
		await settle();
		await ring.clock.advance(100);
		expect(await patient).toMatchObject({
			code: 503,
			type: "NO_FREE_KEY",
			data: { limitMs: 100, waitedMs: 100 },
		});
	});

	test("release is idempotent: a second release changes nothing and says so", async () => {
		const ring = await startKeyring({ keys: 3 });
		const lease = await ring.acquire("a");
		const first = await ring.release(lease.leaseId);
		expect(first).toEqual({ leaseId: lease.leaseId, changed: true });
		const before = await ring.status();
		const again = await ring.release(lease.leaseId);
		expect(again.changed).toBe(false);
		expect(again.reason).toMatch(/already ended \(released/);
		expect(await ring.status()).toEqual(before);
		const unknown = await ring.release("no-such-lease");
		expect(unknown).toMatchObject({
			changed: false,
			reason: expect.stringMatching(/unknown lease/),
		});
		expect(ring.events.filter((e) => e.event === "lease.released")).toHaveLength(1);
	});

	test("renew extends a current lease and keeps it from being reclaimed", async () => {
		const ring = await startKeyring({
			keys: 1,
			leaseTtlMs: 300,
			leaseGraceMs: 100,
			sweepIntervalMs: 50,
		});
		const lease = await ring.acquire("renewer");
		let expiresAt = lease.expiresAt;
		for (let i = 0; i < 5; i++) {
			await ring.clock.advance(150);
			const change = await ring.renew(lease.leaseId);
			expect(change.changed).toBe(true);
			expect(Date.parse(change.expiresAt!)).toBeGreaterThan(Date.parse(expiresAt));
			expiresAt = change.expiresAt!;
		}
		expect(ring.events.filter((e) => e.event === "lease.expired")).toHaveLength(0);
		const [doc] = (await ring.leaseDocs()).filter((d) => d.leaseId === lease.leaseId);
		expect(doc.expiresAt).toBe(expiresAt);
		expect(doc.end).toBeNull();
	});

	test("an expired lease is reclaimed only after ttl + grace; a stale release or renew then changes nothing", async () => {
		const ring = await startKeyring({
			keys: 1,
			leaseTtlMs: 300,
			leaseGraceMs: 100,
			sweepIntervalMs: 50,
		});
		const stale = await ring.acquire("paused-signer");
		await ring.clock.advance(349);
		// Past expiresAt (300), within the grace (100): still leased.
		expect((await ring.status()).leased).toBe(1);
		expect(ring.events.filter((e) => e.event === "lease.expired")).toHaveLength(0);
		// The sweep at 400 ms is the first one past expiresAt + grace.
		await ring.clock.advance(50);
		expect(ring.events.filter((e) => e.event === "lease.expired")).toHaveLength(0);
		await ring.clock.advance(1);
		const expired = ring.events.find((e) => e.event === "lease.expired");
		expect(expired).toMatchObject({
			leaseId: stale.leaseId,
			keyId: "key-000",
			holder: "paused-signer",
		});
		expect(await ring.status()).toMatchObject({ free: 1, leased: 0 });

		const fresh = await ring.acquire("next-signer");
		expect(fresh.keyId).toBe("key-000");
		const release = await ring.release(stale.leaseId);
		expect(release).toMatchObject({ changed: false, reason: expect.stringMatching(/expired/) });
		const renew = await ring.renew(stale.leaseId);
		expect(renew).toMatchObject({ changed: false, reason: expect.stringMatching(/expired/) });
		// The key stays with its new holder.
		const [key] = await ring.keys();
		expect(key).toMatchObject({
			keyId: "key-000",
			leased: true,
			leaseId: fresh.leaseId,
			holder: "next-signer",
		});
		const docs = await ring.leaseDocs();
		expect(docs.find((d) => d.leaseId === stale.leaseId)).toMatchObject({ end: "expired" });
		expect(docs.find((d) => d.leaseId === fresh.leaseId)).toMatchObject({ end: null });
	});

	test("an acquire that finds no free key reclaims expired leases itself, with the sweep off", async () => {
		const ring = await startKeyring({
			keys: 1,
			leaseTtlMs: 100,
			leaseGraceMs: 50,
			sweepIntervalMs: 0,
		});
		const stale = await ring.acquire("gone");
		await ring.clock.advance(150);
		expect((await ring.status()).leased).toBe(1);
		const lease = await ring.acquire("next", 0);
		expect(lease.keyId).toBe(stale.keyId);
		expect(ring.events.map((e) => e.event)).toEqual([
			"lease.granted",
			"lease.expired",
			"lease.granted",
		]);
	});

	test("the leased key opens only with the signer's session key and signs for the JWKS entry; no `d` in replies", async () => {
		const ring = await startKeyring({ keys: 3 });
		const lease = await ring.acquire("signer-1");
		if (lease.key === undefined) throw new Error("a software keyring seals the leased key");
		const signingKey = await ring.signer.open(lease);
		expect(signingKey.extractable).toBe(false);
		expect(signingKey.algorithm.name).toBe("Ed25519");
		// A standard JWE: jose opens it with the key both sides derive (A256KW), bound to this key and lease.
		expect(lease.key.split(".")).toHaveLength(5);
		const header = JSON.parse(Buffer.from(lease.key.split(".")[0], "base64url").toString());
		expect(header).toMatchObject({
			alg: "A256KW",
			enc: "A256GCM",
			kid: lease.keyId,
			lid: lease.leaseId,
		});
		await expect(ring.signer.open({ ...lease, leaseId: "another-lease" })).rejects.toThrow(
			/sealed for .* under lease/,
		);

		const jwks = await ring.broker.call<{ keys: JWK[] }>("keyring.jwks");
		expect(jwks.keys.map((k) => k.kid)).toEqual(["key-000", "key-001", "key-002"]);
		const jwk = jwks.keys.find((k) => k.kid === lease.keyId)!;
		expect(jwk).toMatchObject({ kty: "OKP", crv: "Ed25519", alg: "EdDSA", use: "sig" });
		const payload = new TextEncoder().encode(JSON.stringify({ id: "1", data: "hello" }));
		const jws = await new CompactSign(payload)
			.setProtectedHeader({ alg: "EdDSA", kid: lease.keyId })
			.sign(signingKey);
		const verified = await compactVerify(jws, await importJWK(jwk, "EdDSA"));
		expect(new TextDecoder().decode(verified.payload)).toBe(
			JSON.stringify({ id: "1", data: "hello" }),
		);
		// Another key of the ring does not verify it.
		const other = jwks.keys.find((k) => k.kid !== lease.keyId)!;
		await expect(compactVerify(jws, await importJWK(other, "EdDSA"))).rejects.toThrow();

		// Someone else's session key cannot open it.
		await expect(new LeaseKeyOpener().open(lease)).rejects.toThrow();
		// Any JOSE library opens it with the key-encryption key the scheme derives (src/keyring/key-transport.ts):
		// HKDF-SHA256 of the X25519 shared secret, salted and bound to both public keys.
		const shared = crypto.diffieHellman({
			privateKey: ring.signer.session.privateKey,
			publicKey: crypto.createPublicKey({ key: lease.transportKey, format: "jwk" }),
		});
		const kek = new Uint8Array(
			crypto.hkdfSync(
				"sha256",
				shared,
				"record-signer lease key transport v1",
				`signer=${ring.signer.session.publicJwk.x};keyring=${lease.transportKey.x}`,
				32,
			),
		);
		const { plaintext } = await compactDecrypt(lease.key, kek);
		const opened = JSON.parse(new TextDecoder().decode(plaintext)) as JWK;
		expect(opened).toMatchObject({
			kty: "OKP",
			crv: "Ed25519",
			x: jwk.x,
			d: expect.any(String),
		});

		for (const reply of [
			lease,
			jwks,
			await ring.keys(),
			await ring.status(),
			ring.events,
			await ring.broker.call("keyring.page", { collection: "keys" }),
		])
			expect(JSON.stringify(reply)).not.toMatch(/"d"\s*:/);
	});

	test("a malformed session key is a 422 and grants nothing", async () => {
		const ring = await startKeyring({ keys: 1 });
		const bad = ring.broker.call(
			"keyring.acquire",
			signerRequests().acquire("x", { kty: "OKP", crv: "X25519", x: "tooshort" }),
		);
		await expect(bad).rejects.toMatchObject({ code: 422, type: "INVALID_SESSION_KEY" });
		await expect(
			ring.broker.call(
				"keyring.acquire",
				signerRequests().acquire("x", { kty: "OKP", crv: "Ed25519", x: "abc" }),
			),
		).rejects.toMatchObject({ code: 422 });
		expect(await ring.status()).toMatchObject({ free: 1, leased: 0, lastSeq: 0 });
		expect(await ring.leaseDocs()).toHaveLength(0);
	});

	test("the master key is not published with the service's settings", async () => {
		const masterKey = Buffer.alloc(32, 7).toString("base64");
		const ring = await startKeyring({ keys: 1, masterKey });
		const services = await ring.broker.call<
			Array<{ name: string; settings: Record<string, unknown> }>,
			object
		>("$node.services", { withSettings: true });
		const keyring = services.find((s) => s.name === "keyring")!;
		expect(keyring.settings).toMatchObject({ keys: 1 });
		expect(keyring.settings).not.toHaveProperty("masterKey");
		expect(JSON.stringify(services)).not.toContain(masterKey);
	});

	test("every grant, release and reclaim is stored with a unique increasing seq that replays to the live state", async () => {
		const ring = await startKeyring({
			keys: 5,
			leaseTtlMs: 200,
			leaseGraceMs: 50,
			sweepIntervalMs: 25,
		});
		const next = random(7);
		const held: Lease[] = [];
		for (let op = 0; op < 300; op++) {
			if (held.length < 5 && (held.length === 0 || next() < 0.55))
				held.push(await ring.acquire(`h${op}`));
			else await ring.release(held.splice(Math.floor(next() * held.length), 1)[0].leaseId);
		}
		// Leave two to expire while concurrent acquires and releases go on.
		const abandoned = held.splice(0, 2);
		await Promise.all(held.map((l) => ring.release(l.leaseId)));
		await ring.clock.advance(400);
		const burst = await Promise.all([
			ring.acquire("b1"),
			ring.acquire("b2"),
			ring.acquire("b3"),
		]);
		await Promise.all(burst.map((l) => ring.release(l.leaseId)));

		const docs = await ring.leaseDocs();
		expect(
			docs.filter((d) => abandoned.some((a) => a.leaseId === d.leaseId)).map((d) => d.end),
		).toEqual(["expired", "expired"]);
		const seqs = docs.flatMap((d) =>
			d.endSeq === null ? [d.grantSeq] : [d.grantSeq, d.endSeq],
		);
		expect(new Set(seqs).size).toBe(seqs.length);
		const status = await ring.status();
		expect(Math.max(...seqs)).toBe(status.lastSeq);
		expect([...seqs].sort((a, b) => a - b)).toEqual(
			Array.from({ length: seqs.length }, (_, i) => i + 1),
		);
		for (const d of docs) if (d.endSeq !== null) expect(d.endSeq).toBeGreaterThan(d.grantSeq);
		// Events went out in seq order too.
		const eventSeqs = ring.events.map((e) => e.seq);
		expect(eventSeqs).toEqual([...eventSeqs].sort((a, b) => a - b));
		expect(eventSeqs).toHaveLength(seqs.length);

		const replay = replayLeases(["key-000", "key-001", "key-002", "key-003", "key-004"], docs);
		expect(replay.problems).toEqual([]);
		expect(replay.nonLruGrants).toEqual([]);
		expect(replay.freeQueue).toEqual(status.freeQueue);
		expect(replay.lastSeq).toBe(status.lastSeq);
	});
});

/** Where the store-write tests run: the embedded store always, MongoDB too when MONGO_URI is set. */
interface Backend {
	name: string;
	settings(): Partial<KeyringSettings>;
	cleanup(): Promise<void>;
}
const backends: Backend[] = [
	{ name: "the embedded store", settings: () => ({}), cleanup: async () => undefined },
];
if (process.env.MONGO_URI) {
	let n = 0;
	let uri = "";
	backends.push({
		name: "MongoDB",
		settings() {
			const url = new URL(process.env.MONGO_URI!);
			url.pathname = `/signing-keyring-test-${process.pid}-${++n}`;
			uri = url.toString();
			return { mongoUri: uri, masterKey: Buffer.alloc(32, 9).toString("base64") };
		},
		async cleanup() {
			if (!uri) return;
			const { connectMongo } = await import("../../src/store/mongo");
			const connection = await connectMongo(
				uri,
				{
					broker: null,
					logger: new ServiceBroker({ logger: false }).getLogger("keyring-test"),
				},
				"keys",
			);
			await connection.db.command({ dropDatabase: 1 });
			await connection.close();
			uri = "";
		},
	});
}

// Listed, not left out, when there is no server: Jest shows the MongoDB variant as skipped, with the reason.
if (!process.env.MONGO_URI)
	describe.skip("keyring store writes on MongoDB: needs MONGO_URI (a MongoDB replica set); not set", () =>
		test("a store write that keeps failing, and one whose reply was lost", () => undefined));

describe.each(backends)("keyring store writes on $name", (backend) => {
	afterEach(async () => {
		while (running.length) await running.pop()!.stop();
		await backend.cleanup();
	});

	test("a store write that keeps failing is tried again, then refused, and leaves the in-memory state as it was", async () => {
		const ring = await startKeyring({ ...backend.settings(), keys: 2 });
		const store = (ring.broker.getLocalService("keyring") as unknown as { store: KeyringStore })
			.store;
		const { insertLease, endLease } = store;
		let tries = 0;
		store.insertLease = () => (tries++, Promise.reject(new Error("disk full")));
		const refused = ring.acquire("a", 0).catch((err: Error) => err);
		expect(await advanceUntil(ring.clock, refused)).toMatchObject({
			message: expect.stringMatching(/disk full/),
		});
		expect(tries).toBe(4);
		expect(await ring.status()).toMatchObject({
			free: 2,
			leased: 0,
			freeQueue: ["key-000", "key-001"],
			lastSeq: 0,
		});
		store.insertLease = insertLease;

		const lease = await ring.acquire("a");
		expect(lease.keyId).toBe("key-000");
		store.endLease = () => Promise.reject(new Error("disk full"));
		const notReleased = ring.release(lease.leaseId).catch((err: Error) => err);
		expect(await advanceUntil(ring.clock, notReleased)).toMatchObject({
			message: expect.stringMatching(/disk full/),
		});
		expect(await ring.status()).toMatchObject({ free: 1, leased: 1, freeQueue: ["key-001"] });
		store.endLease = endLease;
		expect(await ring.release(lease.leaseId)).toMatchObject({ changed: true });
		// Only what the store accepted was announced, and no seq was stored twice.
		expect(ring.events.map((e) => e.event)).toEqual(["lease.granted", "lease.released"]);
		const docs = await ring.leaseDocs();
		expect(docs).toHaveLength(1);
		expect(docs[0].endSeq).toBeGreaterThan(docs[0].grantSeq);
	});

	test("a commit that fails stops the keyring: the grant it held is told to nobody, and later acquires get a 503 saying to restart it", async () => {
		const ring = await startKeyring({ ...backend.settings(), keys: 2 });
		const store = (ring.broker.getLocalService("keyring") as unknown as { store: KeyringStore })
			.store;
		const first = await ring.acquire("a");
		store.durable = () => Promise.reject(new Error("disk I/O error"));
		const refused = await ring.acquire("b").catch((err: Error) => err);
		expect(refused).toMatchObject({
			code: 503,
			type: "KEYRING_STORE_FAILED",
			message: expect.stringMatching(
				/could not commit.*disk I\/O error.*restart the keyring/,
			),
		});
		expect(await ring.acquire("c").catch((err: Error) => err)).toMatchObject({
			type: "KEYRING_STORE_FAILED",
		});
		// Only the committed grant was announced; the uncommitted one reached nobody.
		expect(ring.events.map((e) => [e.event, e.leaseId])).toEqual([
			["lease.granted", first.leaseId],
		]);
	});

	test("a write the store applied but whose reply was lost is not made twice: one grant, one end, the LRU order kept", async () => {
		const ring = await startKeyring({ ...backend.settings(), keys: 3 });
		const store = (ring.broker.getLocalService("keyring") as unknown as { store: KeyringStore })
			.store;
		const { insertLease, endLease } = store;
		// Applies the write, then drops its reply, as a connection reset after the server wrote would.
		const replyLost =
			<A extends unknown[], R>(write: (...args: A) => Promise<R>) =>
			async (...args: A): Promise<R> => {
				await write.apply(store, args);
				throw new Error("connection reset: the reply was lost");
			};
		store.insertLease = replyLost(insertLease);
		const first = await advanceUntil(ring.clock, ring.acquire("a"));
		store.insertLease = insertLease;
		expect(first.keyId).toBe("key-000");
		expect((await ring.leaseDocs()).map((d) => [d.leaseId, d.keyId, d.grantSeq])).toEqual([
			[first.leaseId, "key-000", 1],
		]);

		store.endLease = replyLost(endLease);
		expect(await advanceUntil(ring.clock, ring.release(first.leaseId))).toMatchObject({
			changed: true,
		});
		store.endLease = endLease;
		expect(await ring.leaseDocs()).toEqual([
			expect.objectContaining({ leaseId: first.leaseId, end: "released", endSeq: 2 }),
		]);
		expect(await ring.release(first.leaseId)).toMatchObject({ changed: false });

		// The state carried on as the store has it: key-000 went to the tail, the next grants follow the LRU order.
		const next = [
			(await ring.acquire("b")).keyId,
			(await ring.acquire("c")).keyId,
			(await ring.acquire("d")).keyId,
		];
		expect(next).toEqual(["key-001", "key-002", "key-000"]);
		const seqs = (await ring.leaseDocs()).flatMap((d) =>
			d.endSeq === null ? [d.grantSeq] : [d.grantSeq, d.endSeq],
		);
		expect([...seqs].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5]);
		expect(ring.events.map((e) => e.event)).toEqual([
			"lease.granted",
			"lease.released",
			"lease.granted",
			"lease.granted",
			"lease.granted",
		]);
	});
});
