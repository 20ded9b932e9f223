/**
 * `npm run signer -- logkey` (src/cli/signer.ts): the key a Secret gives a transparency log
 * (SIGNATURE_LOG_KEY, LEASE_LOG_KEY; docs/deploy.md). The line it prints is what the log reads
 * (src/tlog/log-key.ts), named after the log's origin, and a checkpoint signed with it opens with
 * the verifier key it prints; a bad --log is a usage error naming the flag.
 */
import { signCheckpoint, openCheckpoint } from "../../src/tlog/checkpoint";
import { loadLogKey, LOG_ORIGINS } from "../../src/tlog/log-key";
import { parseVerifierKey } from "../../src/tlog/note";
import { runCli } from "../support/cli";

describe("npm run signer -- logkey", () => {
	test.each([
		["signatures", "SIGNATURE_LOG_KEY"],
		["leases", "LEASE_LOG_KEY"],
	] as const)(
		"--log %s prints a %s line the log reads and the verifier key its checkpoints open with",
		async (log, variable) => {
			const made = await runCli("signer.js", ["logkey", "--log", log], {});
			expect(made.code).toBe(0);
			const lines = made.stdout.trim().split("\n");
			const keyLine = lines.find((line) => line.startsWith(`${variable}=`))!;
			expect(keyLine).toMatch(
				new RegExp(`^${variable}=PRIVATE\\+KEY\\+${LOG_ORIGINS[log]}\\+`),
			);
			const signer = loadLogKey({
				key: keyLine.slice(variable.length + 1),
				keyFile: null,
				name: "unused: the key is given",
			});
			expect(signer.name).toBe(LOG_ORIGINS[log]);
			const verifier = parseVerifierKey(lines[lines.length - 1]);
			const note = signCheckpoint(
				{ origin: signer.name, size: 3, root: Buffer.alloc(32, 7) },
				signer,
			);
			expect(openCheckpoint(note, verifier).size).toBe(3);
		},
	);

	test("a --log other than signatures or leases is a usage error (exit 2) naming the flag", async () => {
		const refused = await runCli("signer.js", ["logkey", "--log", "records"], {});
		expect(refused.code).toBe(2);
		expect(refused.stderr).toContain('--log must be signatures or leases, got "records"');
	});
});
