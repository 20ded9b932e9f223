/** Bad input to `npm start` (the build, as its own process): exit 2 with the message, no store touched. */
import fs from "node:fs";
import { runCli } from "../support/cli";

describe("npm start with bad input", () => {
	test("npm start with an invalid BATCH_SIZE exits 2 with the message and touches no store", async () => {
		const result = await runCli("start.js", [], {
			BATCH_SIZE: "0",
			DATA_DIR: "/nonexistent/should-not-be-created",
		});
		expect(result.code).toBe(2);
		expect(result.stderr).toContain('BATCH_SIZE must be an integer from 1 to 100000, got "0"');
		expect(fs.existsSync("/nonexistent/should-not-be-created")).toBe(false);
	});

	test("npm start with an unknown flag exits 2 with the usage", async () => {
		const result = await runCli("start.js", ["--batchsize", "3"], {});
		expect(result.code).toBe(2);
		expect(result.stderr).toContain("Usage: npm start");
	});
});
