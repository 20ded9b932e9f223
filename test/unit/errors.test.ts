/** The error catalogue (src/errors.ts): each domain error becomes, at the service edge, the Moleculer error its status says. */
import { Errors, ServiceBroker } from "moleculer";
import {
	DomainError,
	DomainErrorsMiddleware,
	ERRORS,
	loggedRefusal,
	toMoleculerError,
	type ErrorType,
} from "../../src/errors";

test.each(Object.entries(ERRORS) as Array<[ErrorType, number]>)(
	"%s is a %i with its type and data, retryable only when 503",
	(type, status) => {
		const mapped = toMoleculerError(
			new DomainError(type, `it is ${type}`, { field: "x" }),
		) as Errors.MoleculerError;
		expect(mapped).toBeInstanceOf(
			status >= 500 ? Errors.MoleculerRetryableError : Errors.MoleculerClientError,
		);
		expect(mapped).toMatchObject({
			code: status,
			type,
			message: `it is ${type}`,
			data: { field: "x" },
			retryable: status >= 500,
		});
	},
);

test("an action's domain error reaches its caller as a Moleculer error; other errors pass as they are", async () => {
	const broker = new ServiceBroker({ logger: false, middlewares: [DomainErrorsMiddleware()] });
	broker.createService({
		name: "probe",
		actions: {
			domain: () =>
				Promise.reject(new DomainError("RUN_NOT_FOUND", "no such run", { runId: "r1" })),
			other: () => Promise.reject(new TypeError("a bug")),
		},
	});
	await broker.start();
	try {
		await expect(broker.call("probe.domain")).rejects.toMatchObject({
			name: "MoleculerClientError",
			code: 404,
			type: "RUN_NOT_FOUND",
			data: { runId: "r1" },
		});
		await expect(broker.call("probe.other")).rejects.toBeInstanceOf(TypeError);
	} finally {
		await broker.stop();
	}
});

test("a refusal (403) is logged with the caller's node where it happened; other errors are not", () => {
	const lines: string[] = [];
	const logger = { warn: (line: string) => lines.push(line) };
	const refusal = new DomainError("LEASE_TOKEN_MISSING", "Refused: no token");
	expect(loggedRefusal(refusal, logger, "records.storeSignatures", "evil-node")).toBe(refusal);
	const notFound = new DomainError("RUN_NOT_FOUND", "no such run");
	const bug = new TypeError("a bug");
	expect(loggedRefusal(notFound, logger, "batcher.get", "n1")).toBe(notFound);
	expect(loggedRefusal(bug, logger, "batcher.get", "n1")).toBe(bug);
	expect(lines).toEqual([
		"Refused records.storeSignatures from node evil-node: Refused: no token",
	]);
});
