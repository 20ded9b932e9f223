/**
 * What the signature log costs on records' hot path (docs/design.md §8.4): the time to store
 * RECORDS signatures with `storeSignatures`, in pieces of 300 and 2,000, on a fresh embedded
 * store in a temporary DATA_DIR, with the log (this tree's SqliteRecordsStore) and without it
 * (a store module given as the first argument, such as the version before the log), in
 * alternating repetitions; prints the median of each and the difference.
 *
 *   nice -n -15 npx tsx test/support/tlog-cost.ts /path/to/store-without-log.ts [records] [reps]
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { SqliteRecordsStore } from "../../src/records/sqlite-store";

interface Store {
	insertRecords(records: Array<{ id: string; data: string }>): Promise<unknown>;
	storeSignatures(piece: {
		batchId: string;
		keyId: string;
		leaseId: string;
		signatures: Array<{ recordId: string; jws: string; signedAt: string }>;
	}): Promise<unknown>;
	close(): Promise<void>;
	signatureLog?: { settle?(): Promise<void> };
}
type Open = (dir: string) => Store;

const JWS_SIGNATURE = "A".repeat(86);

/**
 * Wall seconds, CPU seconds of every thread of the process (what a run on busy cores pays) and
 * of the main thread alone (the event loop that records shares with the rest of a node).
 */
interface Cost {
	wall: number;
	cpu: number;
	mainCpu: number;
}

async function timeRun(open: Open, records: number, pieceSize: number): Promise<Cost> {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tlog-cost-"));
	try {
		const store = open(dir);
		const ids = Array.from({ length: records }, (_, i) => `r-${String(i).padStart(8, "0")}`);
		for (let i = 0; i < records; i += 10_000)
			await store.insertRecords(
				ids.slice(i, i + 10_000).map((id) => ({ id, data: `{"n":"${id}"}` })),
			);
		const pieces = [];
		for (let i = 0, b = 0; i < records; i += pieceSize, b++) {
			const keyId = `key-${String(b % 100).padStart(3, "0")}`;
			pieces.push({
				batchId: `run-1-b${String(b).padStart(6, "0")}`,
				keyId,
				leaseId: `lease-${b}`,
				signatures: ids.slice(i, i + pieceSize).map((recordId) => ({
					recordId,
					jws: `eyJhbGciOiJFZERTQSIsImtpZCI6IiR7a2V5SWR9In0..${JWS_SIGNATURE}`,
					signedAt: new Date(1_735_689_600_000 + i).toISOString(),
				})),
			});
		}
		const started = process.hrtime.bigint();
		const cpuBefore = process.cpuUsage();
		const mainBefore = process.threadCpuUsage();
		for (const piece of pieces) {
			await store.storeSignatures(piece);
			// Lets the log's hashing thread's answers in, as a run's other messages do.
			await new Promise<void>((resolve) => setImmediate(resolve));
		}
		await store.signatureLog?.settle?.();
		const wall = Number(process.hrtime.bigint() - started) / 1e9;
		const cpu = process.cpuUsage(cpuBefore);
		const main = process.threadCpuUsage(mainBefore);
		await store.close();
		return {
			wall,
			cpu: (cpu.user + cpu.system) / 1e6,
			mainCpu: (main.user + main.system) / 1e6,
		};
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1];

async function main(): Promise<void> {
	const [baseModule, recordsArg, repsArg] = process.argv.slice(2);
	const records = Number(recordsArg ?? 100_000);
	const reps = Number(repsArg ?? 7);
	const base = (await import(path.resolve(baseModule))) as {
		SqliteRecordsStore: { open: Open };
	};
	const variants: Record<string, Open> = {
		"without the log": (dir) => base.SqliteRecordsStore.open(dir),
		"with the log": (dir) => SqliteRecordsStore.open(dir),
	};
	for (const pieceSize of [300, 2_000]) {
		const costs: Record<string, Cost[]> = {};
		for (let rep = 0; rep < reps; rep++)
			for (const [name, open] of Object.entries(variants))
				(costs[name] ??= []).push(await timeRun(open, records, pieceSize));
		for (const figure of ["wall", "cpu", "mainCpu"] as const) {
			const [without, withLog] = Object.values(costs).map((runs) =>
				median(runs.map((run) => run[figure])),
			);
			const all = Object.values(costs).map((runs) =>
				runs.map((run) => run[figure].toFixed(3)).join(" "),
			);
			console.log(
				`${records} signatures in pieces of ${pieceSize}, ${figure} seconds, median of ${reps}: without the log ${without.toFixed(3)}, with it ${withLog.toFixed(3)}, +${(withLog - without).toFixed(3)} (${(((withLog - without) / without) * 100).toFixed(1)}%) [${all.join(" | ")}]`,
			);
		}
	}
}

void main();
