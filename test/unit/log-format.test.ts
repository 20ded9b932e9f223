/**
 * The log formatter's rules (src/log-format.ts): secrets masked, run, batch and lease ids found,
 * LOG_FORMAT and LOG_LEVEL checked. The lines of a running system, in both formats, are checked in
 * test/integration/log-format-process.test.ts.
 */
import { loadConfig } from "../../src/config";
import { idsOf, redact } from "../../src/log-format";

const SECRETS = [
	"hunter2-nats-password",
	"s3cret-mongo",
	"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJlLWJ5dGVz",
	"rsk_abcdefghijkl_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
	"PRIVATE-D-MEMBER",
	"bWFzdGVyLWtleS1ieXRlcw==",
];

test("masks passwords in URLs, tokens, API keys, private JWK members and NAME_KEY= values; finds run, batch and lease ids", () => {
	expect(redact("nats://api:pw@nats:4222 mongodb+srv://u:p@x/db")).toBe(
		"nats://api:***@nats:4222 mongodb+srv://u:***@x/db",
	);
	expect(redact(`token ${SECRETS[2]}`)).toBe("token ***jwt***");
	expect(redact(SECRETS[3])).toBe("rsk_abcdefghijkl_***");
	expect(redact('{"kty":"OKP","x":"pub","d":"secret"}')).toBe(
		'{"kty":"OKP","x":"pub","d":"***"}',
	);
	expect(redact("SIGNER_KEY=abc AUTH_SECRET=def LOG_LEVEL=info")).toBe(
		"SIGNER_KEY=*** AUTH_SECRET=*** LOG_LEVEL=info",
	);
	expect(
		idsOf(
			"Batch run-20261201203746046-qpg2-b000001 failed under lease 0e8414ae-1b2c-4d5e-8f90-a1b2c3d4e5f6",
		),
	).toEqual({
		runId: "run-20261201203746046-qpg2",
		batchId: "run-20261201203746046-qpg2-b000001",
		leaseId: "0e8414ae-1b2c-4d5e-8f90-a1b2c3d4e5f6",
	});
	expect(idsOf("Starting run run-20261201203746046-qpg2: batch size 50")).toEqual({
		runId: "run-20261201203746046-qpg2",
	});
});

test("an unknown LOG_FORMAT is refused with the name and the allowed values", () => {
	expect(() => loadConfig({ LOG_FORMAT: "yaml", DATA_DIR: "" })).toThrow(
		'LOG_FORMAT must be "text" or "json", got "yaml"',
	);
	expect(loadConfig({ LOG_FORMAT: "JSON", DATA_DIR: "" }).logFormat).toBe("json");
});

test("an unknown LOG_LEVEL is refused with the name and the allowed values", () => {
	expect(() => loadConfig({ LOG_LEVEL: "verbose", DATA_DIR: "" })).toThrow(
		'LOG_LEVEL must be one of "fatal", "error", "warn", "info", "debug", "trace", got "verbose"',
	);
	expect(loadConfig({ LOG_LEVEL: "WARN", DATA_DIR: "" }).logLevel).toBe("warn");
	expect(loadConfig({ DATA_DIR: "" }).logLevel).toBe("info");
});
