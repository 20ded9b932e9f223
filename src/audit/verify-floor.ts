/**
 * The audit's floor for the benchmark: every stored signature verified with node:crypto on one
 * thread per core, on the audit's own ranges and threads, with no check but the verification.
 */
import { openStoreFiles } from "./audit-db";
import { checkPublicKeys } from "./check-keys";
import { FindingList } from "./checks";
import { runRanges, type RangeOptions } from "./range-pool";

export interface VerifyFloor {
	seconds: number;
	/** Signatures verified, and how many of them were valid. */
	signatures: number;
	valid: number;
}

export async function verifyFloor(dataDir: string, options: RangeOptions = {}): Promise<VerifyFloor> {
	const started = performance.now();
	const db = openStoreFiles(dataDir);
	try {
		const { usable } = checkPublicKeys(db, new FindingList(0));
		let signatures = 0;
		let valid = 0;
		await runRanges(db, { kind: "floor", keys: usable, clockToleranceMs: 0, maxListed: 0 }, options, range => {
			signatures += range.signatures;
			valid += range.valid;
		});
		return { seconds: (performance.now() - started) / 1000, signatures, valid };
	} finally {
		db.close();
	}
}
