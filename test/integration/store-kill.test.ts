/**
 * The embedded store under kill -9: a writer in its own process (the build in dist/) is killed
 * hard while it stores signatures; every signature it was told was stored is there after.
 * (Split from test/unit/store.test.ts: it runs a child process.)
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { SqliteRecordsStore } from "../../src/records/sqlite-store";

describe("the embedded store under kill -9", () => {
	test("every signature the store acknowledged before the kill is there after it", async () => {
		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "signing-kill-"));
		try {
			const seeded = SqliteRecordsStore.open(dataDir);
			await seeded.insertRecords(
				Array.from({ length: 20_000 }, (_, i) => ({
					id: `r${String(i).padStart(5, "0")}`,
					data: "x",
				})),
			);
			await seeded.close();
			// A writer that prints each batch it stored, after the store acknowledged it, until it is killed.
			const writer = `
				const { SqliteRecordsStore } = require(${JSON.stringify(path.resolve(__dirname, "../../dist/src/records/sqlite-store.js"))});
				const store = SqliteRecordsStore.open(${JSON.stringify(dataDir)});
				(async () => {
					for (let b = 0; b < 200; b++) {
						const ids = Array.from({ length: 100 }, (_, i) => "r" + String(b * 100 + i).padStart(5, "0"));
						await store.storeSignatures({ batchId: "b" + b, keyId: "k", leaseId: "l", signatures: ids.map(recordId => ({ recordId, jws: "j", signedAt: "t" })) });
						process.stdout.write("acked b" + b + "\\n");
					}
				})();`;
			const child = spawn(
				process.execPath,
				["--disable-warning=ExperimentalWarning", "-e", writer],
				{ stdio: ["ignore", "pipe", "inherit"] },
			);
			const acked: string[] = [];
			await new Promise<void>((resolve) => {
				child.stdout!.on("data", (chunk) => {
					acked.push(
						...String(chunk)
							.split("\n")
							.filter(Boolean)
							.map((line) => line.split(" ")[1]),
					);
					if (acked.length >= 20 && !child.killed) child.kill("SIGKILL");
				});
				child.on("exit", () => resolve());
			});
			expect(acked.length).toBeGreaterThanOrEqual(20);
			const reopened = SqliteRecordsStore.open(dataDir);
			try {
				for (const batchId of acked) {
					const b = Number(batchId.slice(1));
					expect(
						await reopened.unsignedAmong([
							`r${String(b * 100).padStart(5, "0")}`,
							`r${String(b * 100 + 99).padStart(5, "0")}`,
						]),
					).toEqual([]);
				}
				expect(await reopened.signedCount()).toBeGreaterThanOrEqual(acked.length * 100);
			} finally {
				await reopened.close();
			}
		} finally {
			fs.rmSync(dataDir, { recursive: true, force: true });
		}
	});
});
