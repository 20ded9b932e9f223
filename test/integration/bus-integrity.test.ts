/**
 * A signature proves the record came from the store (issue 18): the attacks of the report,
 * replayed from a node of the test's own on a real nats-server, against a cluster whose roles
 * run in their own processes. Twice: with per-role NATS users (the stranger holds the signer
 * role's stolen password, the most the bus lets a non-keyring node do, and the ops one) and on
 * a nats-server with no users at all. Each attack must fail with a 403 that names why, and
 * nothing stored may change; the run itself, with a lying signer on the bus, completes and
 * audits clean.
 */
import fs from "node:fs";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { connect, type NatsConnection } from "nats";
import { brokerOptions } from "../../src/broker/broker-options";
import type { Cluster } from "../../src/cluster/launcher";
import { loadConfig } from "../../src/config";
import type {
	KeyringStatus,
	LeaseDoc,
	SignatureDoc,
	SignBatchParams,
	StoreSignaturesParams,
} from "../../src/contract";
import { credentialFile, newCredential } from "../../src/identity/credential";
import { makeSubmitProof } from "../../src/identity/submit-proof";
import { makeTicket } from "../../src/identity/ticket";
import type { NatsRole } from "../../src/broker/nats-permissions";
import {
	auditCluster,
	batches,
	leases,
	scenario,
	signatures,
	startTestCluster,
	stopTestCluster,
	until,
} from "../support/cluster";
import { stopBroker } from "../support/broker";
import { startNatsServer, type NatsServer } from "../support/nats-server";

const RECORDS = 2_000;

interface Setup {
	name: string;
	/** The NATS user the stranger connects as (null: a server with no users). */
	user: NatsRole | null;
}

/** What the stranger read off the bus during the run: real requests, with their tickets and tokens. */
interface Sniffed {
	signBatch: SignBatchParams[];
	storeSignatures: StoreSignaturesParams[];
}

describe.each<Setup>([
	{
		name: "per-role NATS users, the stranger holding the signer user's password",
		user: "signer",
	},
	{ name: "a nats-server with no users", user: null },
])("on $name", ({ user }) => {
	let nats: NatsServer | undefined;
	let cluster: Cluster | undefined;
	let stranger: ServiceBroker | undefined;
	let sniffer: NatsConnection | undefined;
	const sniffed: Sniffed = { signBatch: [], storeSignatures: [] };
	let lies = 0;
	let runId = "";

	const url = (role: NatsRole) => (user ? cluster!.natsUrl(role) : cluster!.transporter);

	/** A node of the test's own on the cluster's bus. */
	async function node(role: NatsRole, nodeID: string): Promise<ServiceBroker> {
		const config = loadConfig({
			TRANSPORTER: url(role),
			NAMESPACE: cluster!.namespace,
			DATA_DIR: "",
		});
		const broker = new ServiceBroker({
			...brokerOptions(config, { nodeID, logLevel: false }),
			skipProcessEventRegistration: true,
		});
		await broker.start();
		return broker;
	}

	beforeAll(async () => {
		if (!user) nats = await startNatsServer();
		cluster = await startTestCluster({
			records: RECORDS,
			keys: 5,
			batchSize: 100,
			signers: 1,
			...(nats ? { transporter: nats.url } : {}),
		});
		// A signer of the stranger's own, answering "signed, all stored" without signing anything.
		stranger = await node(user ?? "signer", "evil-node");
		stranger.createService({
			name: "signer",
			actions: {
				signBatch: (ctx) => {
					const params = ctx.params as SignBatchParams;
					lies++;
					return {
						batchId: params.batchId,
						keyId: "key-000001",
						leaseId: "made-up",
						signer: "evil-node",
						stored: params.records.length,
						duplicates: 0,
						leaseWaitMs: 0,
					};
				},
				inFlight: () => ({ batchIds: [] }),
			},
		});
		await stranger.waitForServices("keyring", 10_000);
		// Everything the stranger can read on the bus.
		const sniffUrl = new URL(url(user ?? "signer"));
		sniffer = await connect({
			servers: `${sniffUrl.hostname}:${sniffUrl.port}`,
			...(sniffUrl.username
				? {
						user: decodeURIComponent(sniffUrl.username),
						pass: decodeURIComponent(sniffUrl.password),
					}
				: {}),
		});
		sniffer.subscribe(`MOL-${cluster.namespace}.>`, {
			callback: (_err, message) => {
				try {
					const packet = JSON.parse(Buffer.from(message.data).toString("utf8")) as {
						action?: string;
						params?: unknown;
					};
					if (packet.action === "signer.signBatch")
						sniffed.signBatch.push(packet.params as SignBatchParams);
					if (packet.action === "records.storeSignatures")
						sniffed.storeSignatures.push(packet.params as StoreSignaturesParams);
				} catch {
					// not a JSON packet
				}
			},
		});
		await until("the stranger's signer to be seen by the cluster", 10_000, async () =>
			(await cluster!.connect()).registry
				.getServiceList({ onlyAvailable: true })
				.some((s) => s.name === "signer" && s.nodeID === "evil-node"),
		);
	}, 120_000);

	afterAll(async () => {
		await sniffer?.close().catch(() => undefined);
		await stopBroker(stranger).catch(() => undefined);
		await stopTestCluster(cluster);
		await nats?.stop();
	});

	test(
		"a run with a lying signer on the bus: batches are counted from what records holds, the liar gets no more, every record is signed once and the audit passes",
		() =>
			scenario(
				() => cluster,
				async () => {
					const run = await cluster!.startRun(100);
					runId = run.runId;
					const ended = await cluster!.runEnded(run.runId, 120_000);
					expect(ended.status).toBe("completed");
					// The liar was sent at least one batch, and none of its "stored" signatures was counted.
					expect(lies).toBeGreaterThan(0);
					expect(ended.report!.signedThisRun).toBe(RECORDS);
					const broker = await cluster!.connect();
					const told = (await batches(broker)).filter(
						(b) =>
							b.runId === run.runId && b.error?.includes("signer evil-node answered"),
					);
					expect(told.length).toBe(lies);
					expect(told.every((b) => b.status === "failed" && b.stored === 0)).toBe(true);
					expect(cluster!.role("main").output()).toMatch(
						/Signer evil-node gets no more batches of run/,
					);
					expect((await signatures(broker)).length).toBe(RECORDS);
					const verdict = await auditCluster(cluster!);
					expect(verdict.violations).toEqual([]);
					// The stranger saw the real traffic: what the next attacks replay.
					expect(sniffed.signBatch.length).toBeGreaterThan(0);
					expect(sniffed.storeSignatures.length).toBeGreaterThan(0);
				},
			),
		150_000,
	);

	/** What the stores hold now: every signature and lease, to compare after an attack. */
	async function stored(): Promise<{ signatures: SignatureDoc[]; leases: LeaseDoc[] }> {
		const broker = await cluster!.connect();
		return { signatures: await signatures(broker), leases: await leases(broker) };
	}
	const realSigner = () => cluster!.signers()[0].nodeID;
	const refusal = (promise: Promise<unknown>) =>
		promise.then(
			() => null,
			(err: { code?: number; type?: string; message: string }) => err,
		);

	test(
		"the signing oracle: chosen data with no ticket, a ticket of an unenrolled batcher, or a real ticket read off the bus: 403, no lease, nothing signed",
		() =>
			scenario(
				() => cluster,
				async () => {
					const before = await stored();
					const evil = [
						{
							id: "evil-contract-1",
							data: JSON.stringify({ pay: "attacker", amount: 1e9 }),
						},
					];
					const signer = realSigner();
					// No ticket at all.
					expect(
						await refusal(
							stranger!.call(
								"signer.signBatch",
								{ batchId: "evil-batch-1", runId: "evil-run", records: evil },
								{ nodeID: signer },
							),
						),
					).toMatchObject({ code: 403, type: "DISPATCH_TICKET_MISSING" });
					// A ticket of the stranger's own making, for exactly these records and this signer: the keyring knows no such batcher.
					const forged = makeTicket(newCredential("evil-batcher"), {
						runId: "evil-run",
						batchId: "evil-batch-2",
						records: evil,
						signer,
						ttlMs: 60_000,
					});
					expect(
						await refusal(
							stranger!.call(
								"signer.signBatch",
								{
									batchId: "evil-batch-2",
									runId: "evil-run",
									records: evil,
									ticket: forged,
								},
								{ nodeID: signer },
							),
						),
					).toMatchObject({ code: 403, type: "BATCHER_NOT_ENROLLED" });
					// A real ticket, read off the bus, with chosen data: the signer sees the records are not the ticket's.
					const real = sniffed.signBatch.find(
						(batch) =>
							batch.ticket &&
							JSON.parse(
								Buffer.from(batch.ticket.split(".")[1], "base64url").toString(),
							).node === signer,
					)!;
					expect(
						await refusal(
							stranger!.call(
								"signer.signBatch",
								{ ...real, records: evil },
								{ nodeID: signer },
							),
						),
					).toMatchObject({ code: 403, type: "DISPATCH_TICKET_INVALID" });
					// The same real ticket with its own records, replayed: spent at its first use.
					expect(
						await refusal(stranger!.call("signer.signBatch", real, { nodeID: signer })),
					).toMatchObject({ code: 403, type: "DISPATCH_TICKET_REPLAYED" });
					// Straight to the keyring with the real ticket: no signer credential, no key.
					expect(
						await refusal(
							stranger!.call(
								"keyring.acquire",
								{
									sessionKey: { kty: "OKP", crv: "X25519", x: "A".repeat(43) },
									ticket: real.ticket,
								},
								{ timeout: 5_000 },
							),
						),
					).toMatchObject({ code: 403, type: "SIGNER_PROOF_MISSING" });
					expect(await stored()).toEqual(before);
					expect(cluster!.role(cluster!.signers()[0].name).output()).toMatch(
						/Refused signer\.signBatch of batch evil-batch-1 from node evil-node: Refused: signer\.signBatch carries no dispatch ticket/,
					);
				},
			),
		60_000,
	);

	test(
		"storing signatures as a stranger: garbage with no token, or under a real lease token read off the bus: 403, the first signature stays",
		() =>
			scenario(
				() => cluster,
				async () => {
					const before = await stored();
					const garbage = (ids: string[]) =>
						ids.map((recordId) => ({
							recordId,
							jws: "eyJhbGciOiJFZERTQSJ9..Z2FyYmFnZQ",
							signedAt: new Date().toISOString(),
						}));
					const ids = before.signatures.slice(0, 10).map((s) => s.recordId);
					expect(
						await refusal(
							stranger!.call("records.storeSignatures", {
								batchId: "evil",
								keyId: "key-000001",
								leaseId: "evil-lease",
								signatures: garbage(ids),
							}),
						),
					).toMatchObject({ code: 403, type: "LEASE_TOKEN_MISSING" });
					// A real piece, read off the bus: its token and proof, with other signatures for the same records.
					const real = sniffed.storeSignatures[0];
					const replay = await refusal(
						stranger!.call("records.storeSignatures", {
							...real,
							signatures: garbage(real.signatures.map((s) => s.recordId)),
						}),
					);
					expect(replay).toMatchObject({ code: 403 });
					expect(["STORE_PROOF_INVALID", "LEASE_TOKEN_EXPIRED"]).toContain(
						(replay as { type: string }).type,
					);
					// The same token for records of another batch, with the real proof: not the batch's records.
					const other = before.signatures.find((s) => s.batchId !== real.batchId)!;
					expect(
						await refusal(
							stranger!.call("records.storeSignatures", {
								...real,
								signatures: garbage([other.recordId]),
							}),
						),
					).toMatchObject({ code: 403 });
					// Closing a batch is the batcher's alone.
					expect(
						await refusal(
							stranger!.call("records.closeBatch", {
								batchId: real.batchId,
								recordIds: [],
							}),
						),
					).toMatchObject({ code: 403, type: "CLOSE_PROOF_INVALID" });
					expect(await stored()).toEqual(before);
					expect(cluster!.role("main").output()).toMatch(
						/Refused records\.storeSignatures from node evil-node: Refused: records\.storeSignatures carries no lease token/,
					);
				},
			),
		60_000,
	);

	test(
		"starving the keyring: thirty concurrent batches of 5,000 records with no valid ticket are refused at once and hold no key",
		() =>
			scenario(
				() => cluster,
				async () => {
					const records = Array.from({ length: 5_000 }, (_, i) => ({
						id: `evil-${i}`,
						data: "x",
					}));
					const signer = realSigner();
					const started = Date.now();
					const answers = await Promise.all(
						Array.from({ length: 30 }, (_, i) =>
							refusal(
								stranger!.call(
									"signer.signBatch",
									{
										batchId: `evil-flood-${i}`,
										runId: "evil-run",
										records,
										ticket: i % 2 ? undefined : "a.b.c",
									},
									{ nodeID: signer, timeout: 30_000 },
								),
							),
						),
					);
					expect(answers.every((answer) => answer?.code === 403)).toBe(true);
					// Refused before any wait for a key: the signer never asked the keyring.
					expect(Date.now() - started).toBeLessThan(20_000);
					const status = await (
						await cluster!.connect()
					).call<KeyringStatus, object>("keyring.status", {});
					expect(status).toMatchObject({ leased: 0, waiting: 0, free: 5 });
				},
			),
		60_000,
	);

	test(
		"the ops user's node cannot make a signer sign either",
		() =>
			scenario(
				() => cluster,
				async () => {
					const ops = await node("ops", "ops-probe");
					try {
						const before = await stored();
						const answer = await refusal(
							ops.call(
								"signer.signBatch",
								{
									batchId: "ops-batch",
									runId: "ops-run",
									records: [{ id: "evil-contract-2", data: "x" }],
								},
								{ nodeID: realSigner(), timeout: 5_000 },
							),
						);
						// Refused by the signer, or not even delivered by NATS: never signed.
						expect(
							answer === null ? "signed" : (answer.type ?? answer.message),
						).toMatch(/DISPATCH_TICKET_MISSING|Request timed out|not available/);
						expect(await stored()).toEqual(before);
					} finally {
						await stopBroker(ops);
					}
				},
			),
		60_000,
	);

	test(
		"adding records is no way around it: records.submit from a stranger with no proof, a forged one, or a real one over other records is 403, and nothing is stored",
		() =>
			scenario(
				() => cluster,
				async () => {
					const broker = await cluster!.connect();
					const records = async () =>
						(await broker.call<{ records: number }>("records.progress")).records;
					const before = await records();
					const chosen = [{ id: "evil-submitted-1", data: "pay the attacker" }];
					expect(
						await refusal(
							stranger!.call("records.submit", {
								records: chosen,
								submitter: "stranger",
								iat: Date.now(),
							}),
						),
					).toMatchObject({ code: 403, type: "SUBMIT_PROOF_MISSING" });
					expect(
						await refusal(
							stranger!.call("records.submit", {
								records: chosen,
								...makeSubmitProof(
									newCredential("evil-batcher"),
									"stranger",
									chosen,
								),
							}),
						),
					).toMatchObject({ code: 403, type: "SUBMIT_PROOF_INVALID" });
					// A real proof, as if read off the bus, carried over other records.
					const batcher = credentialFile(
						path.join(cluster!.dataDir, "batcher.key"),
						false,
					);
					const real = makeSubmitProof(batcher, "gateway-user", [
						{ id: "harmless-1", data: "harmless" },
					]);
					expect(
						await refusal(
							stranger!.call("records.submit", { records: chosen, ...real }),
						),
					).toMatchObject({ code: 403, type: "SUBMIT_PROOF_INVALID" });
					expect(await records()).toBe(before);
					expect(
						await refusal(broker.call("records.get", { id: "evil-submitted-1" })),
					).toMatchObject({ code: 404 });
					expect(cluster!.role("main").output()).toMatch(
						/Refused records\.submit from node evil-node/,
					);
				},
			),
		60_000,
	);

	test("the batcher's and signers' credential files are 0600 in DATA_DIR, and the keyring published its public key there", () =>
		scenario(
			() => cluster,
			async () => {
				for (const file of ["batcher.key", "signer.key", "keyring.pub"])
					expect(fs.statSync(path.join(cluster!.dataDir, file)).mode & 0o777).toBe(0o600);
				const batcher = credentialFile(path.join(cluster!.dataDir, "batcher.key"), false);
				expect(cluster!.role("keyring").output()).toContain(
					`Enrolled the batcher credential "${batcher.name}"`,
				);
				expect(runId).toMatch(/^run-/);
			},
		));
});
