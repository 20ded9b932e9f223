/**
 * `npm run bench` end to end, small: every embedded figure it prints (floors, the run and its
 * audit, the keyring's lease cycles, what the bus checks and the transparency logs cost, and the
 * PKCS#11 run on a SoftHSM token, whose audit once failed for want of the logs' keys) comes out
 * as numbers in its last line, and bad input is named. No timing is asserted: the figures are
 * the bench's to report, on a machine as noisy as it is.
 */
import { findSoftHsm } from "../../src/pkcs11/softhsm";
import { runCli } from "../support/cli";

const QUIET = {
	NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --disable-warning=ExperimentalWarning`,
};

test("a small bench runs every embedded part and ends with one JSON line of positive figures", async () => {
	const result = await runCli(
		"bench.js",
		["--records", "3000", "--keys", "10", "--batch-size", "100", "--skip-nats"],
		QUIET,
	);
	expect(result.stderr).toBe("");
	expect(result.code).toBe(0);
	const lines = result.stdout.trim().split("\n");
	const figures = JSON.parse(lines[lines.length - 1]) as Record<string, number>;
	expect(figures.records).toBe(3000);
	for (const field of [
		"floorSeconds",
		"runSeconds",
		"ratio",
		"auditSeconds",
		"verifyFloorSeconds",
		"keyringCyclesPerSecond",
		"checkedRunSeconds",
		"uncheckedRunSeconds",
		"loggedRunSeconds",
		"unloggedRunSeconds",
	])
		expect(figures[field]).toBeGreaterThan(0);
	for (const field of ["checksCost", "checksCpuCost", "logsCost", "logsCpuCost"])
		expect(typeof figures[field]).toBe("number");
	// CI installs SoftHSM (.ci/run); a machine without it is told so and skips that part.
	if (findSoftHsm()) expect(figures.pkcs11Ratio).toBeGreaterThan(0);
	else expect(result.stdout).toMatch(/SoftHSM/);
	expect(result.stdout).toMatch(/^logs +cost [-\d.]+% of the run/m);
}, 300_000);

test("a record count out of range is named, with the range, and nothing runs", async () => {
	const result = await runCli("bench.js", ["--records", "0"], QUIET);
	expect(result.code).toBe(2);
	expect(result.stderr).toMatch(/--records must be an integer from 1 to 10000000, got "0"/);
	expect(result.stdout).toBe("");
});
