/**
 * The audit's floor for the benchmark: every stored signature verified on one thread per core,
 * on the audit's own ranges and threads, with no check but the verification. With libsodium
 * (`crypto_sign_verify_detached`, what the audit verifies with) unless `library` says
 * node:crypto, which the benchmark measures beside it.
 */
import { openStoreFiles } from "./audit-db";
import type { VerifyLibrary } from "./audit.worker";
import { checkPublicKeys } from "./check-keys";
import { FindingList } from "./checks";
import { runRanges, type RangeOptions } from "./range-pool";

export type { VerifyLibrary };

export interface VerifyFloor {
	seconds: number;
	/** Signatures verified, and how many of them were valid. */
	signatures: number;
	valid: number;
	library: VerifyLibrary;
}

export async function verifyFloor(
	dataDir: string,
	options: RangeOptions & { library?: VerifyLibrary } = {},
): Promise<VerifyFloor> {
	const { library = "libsodium", ...rangeOptions } = options;
	const started = performance.now();
	const db = openStoreFiles(dataDir);
	try {
		const { usable } = checkPublicKeys(db, new FindingList(0));
		let signatures = 0;
		let valid = 0;
		await runRanges(
			db,
			{ kind: "floor", keys: usable, clockToleranceMs: 0, maxListed: 0, library },
			rangeOptions,
			(range) => {
				signatures += range.signatures;
				valid += range.valid;
			},
		);
		return { seconds: (performance.now() - started) / 1000, signatures, valid, library };
	} finally {
		db.close();
	}
}
