/**
 * The keyring's lease cycles per second (`npm run bench`, `keyringCyclesPerSecond`): a keyring
 * service on a fresh embedded store, in this process, and signers asking it for leases as fast as
 * it grants them. A cycle is one acquire (with the signer's proof and a dispatch ticket of the
 * batcher, each under its request MAC key, src/identity/request-mac.ts; the private key sealed
 * to the signer's session; a lease token signed) and one release (with its proof), both written
 * to the store. The proofs and tickets are made here too, which the keyring does not do in a
 * cluster: the figure is what one process does, a floor for the keyring alone.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { createKeyringService } from "../../services/keyring.service";
import { loadConfig } from "../config";
import { Actions, call } from "../contract";
import { localCredential } from "../identity/credential";
import { makeProof } from "../identity/proof";
import { RequestMacKey } from "../identity/request-mac";
import { makeTicket } from "../identity/ticket";
import { createSessionKey } from "../keyring/key-transport";
import { serviceSettings } from "../settings";

/** Signers asking at once: more than enough to keep one keyring busy. */
const SIGNERS = 16;

export async function leaseCyclesPerSecond(keys: number, seconds = 3): Promise<number> {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-bench-keyring-"));
	const config = loadConfig({ KEYS: String(keys), DATA_DIR: dataDir });
	const broker = new ServiceBroker({ transporter: null, logger: false });
	broker.createService(
		createKeyringService({ ...serviceSettings(config).keyring, sweepIntervalMs: 0 }),
	);
	try {
		await broker.start();
		const signer = localCredential(dataDir, "signer");
		const batcher = localCredential(dataDir, "batcher");
		const trust = { keyringPublicKey: null, keyringPublicKeyFile: config.keyringPublicKeyFile };
		const signerMac = new RequestMacKey("signer", trust).current(signer);
		const batcherMac = new RequestMacKey("batcher", trust).current(batcher);
		if (!signerMac || !batcherMac)
			throw new Error("the bench's keyring published no authority key");
		const sessionKey = createSessionKey().publicJwk;
		const sk = String(sessionKey.x);
		let batches = 0;
		const cycle = async (node: string) => {
			const ticket = makeTicket(
				batcher,
				{
					runId: "bench",
					batchId: `bench-${batches++}`,
					records: [{ id: "rec-bench", data: "bench" }],
					signer: node,
					ttlMs: 60_000,
				},
				Date.now(),
				batcherMac,
			);
			const proof = makeProof(signer, { act: "acquire", node, sk }, Date.now(), signerMac);
			const lease = await call(broker, Actions.keyring.acquire, {
				sessionKey: { kty: "OKP", crv: "X25519", x: sk },
				ticket,
				proof,
			});
			const lid = lease.leaseId;
			await call(broker, Actions.keyring.release, {
				leaseId: lid,
				proof: makeProof(signer, { act: "release", node, lid }, Date.now(), signerMac),
			});
		};
		const cyclesFor = async (ms: number) => {
			const end = performance.now() + ms;
			let cycles = 0;
			await Promise.all(
				Array.from({ length: SIGNERS }, async (_, i) => {
					while (performance.now() < end) {
						await cycle(`bench-signer-${i}`);
						cycles++;
					}
				}),
			);
			return cycles;
		};
		await cyclesFor(500);
		const started = performance.now();
		const cycles = await cyclesFor(seconds * 1000);
		return cycles / ((performance.now() - started) / 1000);
	} finally {
		await broker.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
}
