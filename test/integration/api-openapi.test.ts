/** GET /api/openapi.json: a valid OpenAPI 3.1 document that names every route the gateway serves. */
import { execFile } from "node:child_process";
import { request, startApiSystem, type ApiSystem } from "../support/http";

/** The validator is ESM-only, which jest's CommonJS runtime cannot load: run it in a child Node. */
function validateOpenApi(document: unknown): Promise<{ valid: boolean; errors?: unknown }> {
	const script = `
		import { Validator } from "@seriousme/openapi-schema-validator";
		let input = "";
		for await (const chunk of process.stdin) input += chunk;
		const result = await new Validator().validate(JSON.parse(input));
		process.stdout.write(JSON.stringify({ valid: result.valid, errors: result.errors }));`;
	return new Promise((resolve, reject) => {
		const child = execFile(
			process.execPath,
			["--input-type=module", "-e", script],
			{ cwd: `${__dirname}/../..` },
			(err, stdout, stderr) => {
				if (err) reject(new Error(`${err.message}\n${stderr}`));
				else resolve(JSON.parse(stdout));
			},
		);
		child.stdin!.end(JSON.stringify(document));
	});
}

describe("OpenAPI document", () => {
	let system: ApiSystem;
	let document: any;

	beforeAll(async () => {
		system = await startApiSystem({ records: 10, keys: 1 });
		const response = await request(system.baseUrl, "GET", "/api/openapi.json");
		expect(response.status).toBe(200);
		document = response.body;
	});
	afterAll(() => system?.stop());

	test("is valid OpenAPI 3.1", async () => {
		expect(document.openapi).toBe("3.1.0");
		const result = await validateOpenApi(document);
		expect(result.errors).toBeUndefined();
		expect(result.valid).toBe(true);
	});

	test("the validator does reject a broken document", async () => {
		const result = await validateOpenApi({
			...document,
			paths: { "/x": { get: { responses: "none" } } },
		});
		expect(result.valid).toBe(false);
	});

	test("documents every route the gateway serves, and only those", async () => {
		const aliases =
			await system.broker.call<Array<{ methods: string; fullPath: string }>>(
				"api.listAliases",
			);
		const served = aliases.map(
			(a) => `${a.methods.toLowerCase()} ${a.fullPath.replace(/:(\w+)/g, "{$1}")}`,
		);
		// Static pages come from public/, not from aliases.
		served.push("get /", "get /docs/");
		const documented = Object.entries(
			document.paths as Record<string, Record<string, unknown>>,
		).flatMap(([path, operations]) =>
			Object.keys(operations).map((method) => `${method} ${path}`),
		);
		expect(served.length).toBeGreaterThanOrEqual(14);
		expect([...documented].sort()).toEqual([...served].sort());
		for (const [path, operations] of Object.entries(
			document.paths as Record<
				string,
				Record<string, { operationId: string; responses: Record<string, unknown> }>
			>,
		))
			for (const [method, operation] of Object.entries(operations)) {
				expect({ path, method, operationId: typeof operation.operationId }).toEqual({
					path,
					method,
					operationId: "string",
				});
				if (method === "get") expect(Object.keys(operation.responses)).toContain("200");
			}
	});

	test("each documented GET page answers (the docs page renders from this document)", async () => {
		for (const path of ["/", "/docs/", "/health/live", "/.well-known/jwks.json", "/api/keys"]) {
			const response = await fetch(system.baseUrl + path);
			expect({ path, status: response.status }).toEqual({ path, status: 200 });
			await response.arrayBuffer();
		}
	});
});
