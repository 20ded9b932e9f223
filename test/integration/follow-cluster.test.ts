/**
 * A follow run across processes over NATS (docs/design.md §7.7): records submitted on the bus
 * with the batcher credential's proof are signed as they arrive; the main node killed with
 * SIGKILL and started again resumes the run, which goes on following; cancelled, the stores
 * audit clean, with nothing pending.
 */
import path from "node:path";
import type { Cluster } from "../../src/cluster/launcher";
import type { BatcherStatus, RunView } from "../../src/contract";
import { credentialFile } from "../../src/identity/credential";
import { makeSubmitProof } from "../../src/identity/submit-proof";
import { runCli } from "../support/cli";
import {
	auditCluster,
	batches,
	scenario,
	startTestCluster,
	stopTestCluster,
	waitForSigned,
} from "../support/cluster";

describe("a follow run over NATS", () => {
	let cluster: Cluster | undefined;

	beforeAll(async () => {
		cluster = await startTestCluster({ records: 500, keys: 5, batchSize: 50, signers: 2 });
	}, 120_000);
	afterAll(() => stopTestCluster(cluster));

	/** Submits `count` records named `<prefix>-<n>` on the bus, as the gateway would. */
	async function submit(
		prefix: string,
		count: number,
		data = (n: number) => `data of ${prefix} ${n}`,
	): Promise<void> {
		const broker = await cluster!.connect();
		const batcher = credentialFile(path.join(cluster!.dataDir, "batcher.key"), false);
		const records = Array.from({ length: count }, (_, n) => ({
			id: `${prefix}-${n}`,
			data: data(n),
		}));
		await broker.call("records.submit", {
			records,
			...makeSubmitProof(batcher, "cluster-test", records),
		});
	}

	test(
		"signs records submitted on the bus as they arrive, resumes after the main node is killed, and audits clean once cancelled",
		() =>
			scenario(
				() => cluster,
				async () => {
					const broker = await cluster!.connect();
					const run = await broker.call<RunView, object>("batcher.start", {
						batchSize: 50,
						follow: true,
					});
					expect(run).toMatchObject({ follow: true, status: "running" });
					await waitForSigned(cluster!, 500);
					await submit("before", 30);
					await waitForSigned(cluster!, 530, 10_000);

					await cluster!.kill("main");
					await cluster!.restart("main");
					await cluster!.ready(120_000);
					// Ready is the process's own word; this client's requests reach the new batcher once
					// it has subscribed on NATS, which may be a moment later: ask until it answers.
					const status = await (async () => {
						const deadline = Date.now() + 30_000;
						for (;;) {
							try {
								return await broker.call<BatcherStatus, object>(
									"batcher.status",
									{},
									{ timeout: 2_000 },
								);
							} catch (err) {
								if (Date.now() > deadline) throw err;
								await new Promise((resolve) => setTimeout(resolve, 250));
							}
						}
					})();
					expect(status).toMatchObject({
						active: true,
						run: { runId: run.runId, follow: true },
					});
					await submit("after", 20);
					await waitForSigned(cluster!, 550, 30_000);

					await broker.call("batcher.cancel", { runId: run.runId });
					const ended = await cluster!.runEnded(run.runId);
					expect(ended.status).toBe("cancelled");
					const ofRun = (await batches(broker)).filter((b) => b.runId === run.runId);
					expect(ofRun.every((b) => b.recordIds.length <= 50)).toBe(true);
					expect(ofRun.filter((b) => b.recordIds.length < 50).every((b) => b.short)).toBe(
						true,
					);
					const verdict = await auditCluster(cluster!);
					expect(verdict.violations).toEqual([]);
					expect(verdict.pending).toBe(0);
				},
			),
		180_000,
	);

	test(
		"npm run audit over NATS reads records of the largest size a submission allows in pages that fit a message",
		() =>
			scenario(
				() => cluster,
				async () => {
					const broker = await cluster!.connect();
					const run = await broker.call<RunView, object>("batcher.start", {
						batchSize: 50,
						follow: true,
					});
					// 3,072 bytes of data each (€ takes 3): 2,800 of them are about 9 MB, where 2,621
					// records a page (sized for seeded records) overflowed even this cluster's 8 MB messages.
					const prefix = `big-${"x".repeat(100)}`;
					for (let i = 0; i < 4; i++)
						await submit(`${prefix}-${i}`, 700, () => "€".repeat(1024));
					const { records } = await broker.call<{ records: number }, object>(
						"records.progress",
						{},
					);
					await waitForSigned(cluster!, records, 60_000);
					await broker.call("batcher.cancel", { runId: run.runId });
					await cluster!.runEnded(run.runId);
					const audit = await runCli("audit.js", [], {
						DATA_DIR: cluster!.dataDir,
						TRANSPORTER: cluster!.natsUrl("ops"),
						NAMESPACE: cluster!.namespace,
						...cluster!.natsEnv,
					});
					expect(audit.stderr).not.toMatch(/error/i);
					// Over NATS the rows are read, not the logs.
					expect(audit.stdout).toContain(
						"Audit PASSED: every rule holds but signature-log and lease-log, not checked here",
					);
					expect(audit.code).toBe(0);
				},
			),
		180_000,
	);
});
