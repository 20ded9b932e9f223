/**
 * Everything issue 25 rotates, during one run (docs/design.md §5.8, §6.1): the master key that
 * seals the keys, the signer credential and the batcher credential. Each new credential is
 * enrolled beside the old one and written over the node's key file; the nodes switch to it
 * without a restart, the old one is revoked, and the run goes on past the revocations, completes
 * with one signature per record and audits clean. Afterwards the old master key opens nothing.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { pageAll } from "../../src/audit/collect";
import type { MasterKeyRotation, SignatureDoc } from "../../src/contract";
import {
	credentialFile,
	newCredential,
	type CredentialSource,
	type CredentialRole,
} from "../../src/identity/credential";
import { rotateCredentialFile } from "../../src/keyring/local-trust";
import type { KeyringStore } from "../../src/keyring/store";
import { makeProof, operatorOp } from "../../src/identity/proof";
import { makeSubmitProof } from "../../src/identity/submit-proof";
import { makeCloseProof } from "../../src/identity/ticket";
import { operatorRequests } from "../support/signer-proofs";
import { auditSystem, keyringService, startSystem, type TestSystem } from "../support/system";

const RECORDS = 40_000;
let dataDir: string;
let system: TestSystem | undefined;

beforeEach(() => {
	dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "rotation-run-"));
});

afterEach(async () => {
	await system?.broker.stop();
	system = undefined;
	fs.rmSync(dataDir, { recursive: true, force: true });
});

const file = (name: string) => path.join(dataDir, name);

test("the master key, the signer credential and the batcher credential are rotated while a run goes on: nodes switch without a restart, the old credentials are revoked, the run completes with one signature per record and audits clean, and the old master key opens nothing", async () => {
	system = await startSystem({ records: RECORDS, keys: 3, window: 2, dataDir });
	const { broker } = system;
	const store = (broker.getLocalService("keyring") as unknown as { store: KeyringStore }).store;
	const inUse = (service: string) =>
		(
			broker.getLocalService(service) as unknown as { credentials: CredentialSource }
		).credentials.current().name;
	const signedSoFar = async () =>
		(await broker.call<{ signed: number }>("records.progress")).signed;
	const after = async (signed: number) => {
		while ((await signedSoFar()) < signed) await new Promise((r) => setTimeout(r, 5));
	};
	const until = async (done: () => boolean) => {
		while (!done()) await new Promise((r) => setTimeout(r, 20));
	};
	const oldMaster = fs.readFileSync(file("master.key"), "utf8");
	const oldSigner = credentialFile(file("signer.key"), false).name;
	const oldBatcherCredential = credentialFile(file("batcher.key"), false);
	const oldBatcher = oldBatcherCredential.name;
	const keyringPub = fs.readFileSync(file("keyring.pub"), "utf8");

	const completion = system.nextCompletion();
	await broker.call("batcher.start", { batchSize: 5 });

	// 1. The master key, with an operator proof made with the batcher credential.
	await after(2_000);
	fs.writeFileSync(file("master.key.next"), Buffer.alloc(32, 5).toString("base64") + "\n", {
		mode: 0o600,
	});
	const rotation = await broker.call<MasterKeyRotation, object>("keyring.rotateMasterKey", {
		proof: makeProof(credentialFile(file("batcher.key"), false), {
			act: "keys",
			node: "operator-node",
			op: operatorOp("rotate", "master-key"),
		}),
	});
	expect(rotation).toMatchObject({ sealedKeys: 3, masterKey: file("master.key") });
	expect(fs.existsSync(file("master.key.next"))).toBe(false);

	// 2. The signer's and the batcher's credentials: enrolled beside the old, written over the files.
	const rotate = (role: CredentialRole, name: string) =>
		rotateCredentialFile(store, role, file(`${role}.key`), name);
	await rotate("signer", "signer-2");
	await rotate("batcher", "batcher-2");
	// Each node reads its file again within a second: no restart.
	await until(() => inUse("signer") === "signer-2" && inUse("batcher") === "batcher-2");
	const switchedAt = await signedSoFar();
	await after(switchedAt + 2_000);

	// 3. The old ones revoked, once what began under them has ended.
	const at = new Date().toISOString();
	expect(await store.revoke("signer", oldSigner, at)).toBe(true);
	expect(await store.revoke("batcher", oldBatcher, at)).toBe(true);
	// The keyring and records read enrolments at most every 5 s: past that, only the new ones act.
	await new Promise((r) => setTimeout(r, 5_500));
	const addKey = (batcher: typeof oldBatcherCredential) =>
		broker.call("keyring.addKeys", operatorRequests(batcher).add(1)).catch((err: Error) => err);
	expect(await addKey(oldBatcherCredential)).toMatchObject({
		code: 403,
		type: "BATCHER_REVOKED",
	});
	expect(await addKey(credentialFile(file("batcher.key"), false))).toMatchObject([
		{ keyId: "key-003" },
	]);
	// The run was still going once the revocations had taken effect.
	expect(await signedSoFar()).toBeLessThan(RECORDS);

	const event = await completion;
	expect(event.status).toBe("completed");
	expect(event.report.signedThisRun).toBe(RECORDS);
	const signatures = await pageAll<SignatureDoc>(broker, "records", "signatures");
	expect(signatures).toHaveLength(RECORDS);
	expect(new Set(signatures.map((s) => s.recordId)).size).toBe(RECORDS);
	const verdict = await auditSystem(broker);
	expect(verdict.violations).toEqual([]);
	expect(verdict.ok).toBe(true);
	expect(fs.readFileSync(file("keyring.pub"), "utf8")).toBe(keyringPub);
	await broker.stop();
	system = undefined;

	// The old master key no longer opens the store; the new one starts the keyring.
	const newMaster = fs.readFileSync(file("master.key"), "utf8");
	expect(newMaster).not.toBe(oldMaster);
	const keyringAlone = async () => {
		const alone = new ServiceBroker({ transporter: null, logger: false });
		alone.createService(keyringService({ dataDir, sweepIntervalMs: 0 }));
		try {
			await alone.start();
		} finally {
			await alone.stop();
		}
	};
	fs.writeFileSync(file("master.key"), oldMaster);
	await expect(keyringAlone()).rejects.toThrow(
		/does not open the keyring's sealed authority key/,
	);
	fs.writeFileSync(file("master.key"), newMaster);
	await expect(keyringAlone()).resolves.toBeUndefined();
}, 120_000);

test("records takes close and submit proofs from any batcher credential the keyring enrolled and has not revoked, read from the keyring's store: the old one after a rotation until its revocation, never a stranger's", async () => {
	system = await startSystem({ records: 10, keys: 2, dataDir });
	const { broker } = system;
	const store = (broker.getLocalService("keyring") as unknown as { store: KeyringStore }).store;
	const old = credentialFile(file("batcher.key"), false);
	await rotateCredentialFile(store, "batcher", file("batcher.key"), "batcher-2");
	const fresh = credentialFile(file("batcher.key"), false);
	const close = (batcher: typeof old, batchId: string) =>
		broker
			.call("records.closeBatch", {
				batchId,
				recordIds: [],
				proof: makeCloseProof(batcher, batchId),
			})
			.then(() => "closed")
			.catch((err: { type?: string }) => err.type);
	const submit = (batcher: typeof old, id: string) => {
		const records = [{ id, data: `data of ${id}` }];
		return broker
			.call("records.submit", { records, ...makeSubmitProof(batcher, "test", records) })
			.then(() => "stored")
			.catch((err: { type?: string }) => err.type);
	};

	// Records' own file holds batcher-2, read again within a second; the old credential is still
	// enrolled in the keyring's store, so believed.
	await new Promise((r) => setTimeout(r, 1_100));
	expect(await close(fresh, "b-new-0")).toBe("closed");
	expect(await close(old, "b-old")).toBe("closed");
	expect(await submit(old, "r-old")).toBe("stored");
	expect(await close(fresh, "b-new")).toBe("closed");
	expect(await submit(fresh, "r-new")).toBe("stored");
	expect(await close(newCredential("stranger"), "b-x")).toBe("CLOSE_PROOF_INVALID");
	expect(await submit(newCredential("stranger"), "r-x")).toBe("SUBMIT_PROOF_INVALID");

	await store.revoke("batcher", old.name, new Date().toISOString());
	await new Promise((r) => setTimeout(r, 5_500));
	expect(await close(old, "b-old-2")).toBe("CLOSE_PROOF_INVALID");
	expect(await submit(old, "r-old-2")).toBe("SUBMIT_PROOF_INVALID");
	expect(await close(fresh, "b-new-2")).toBe("closed");
}, 30_000);
