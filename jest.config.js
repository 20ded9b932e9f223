/** Tests run the TypeScript sources through SWC; jose 6 ships ESM only, so it is transformed too. */
module.exports = {
	testEnvironment: "node",
	roots: ["<rootDir>/test"],
	testMatch: ["**/*.test.ts"],
	transform: {
		"^.+\\.(t|j)s$": ["@swc/jest", {
			jsc: { target: "es2022", parser: { syntax: "typescript" } },
			module: { type: "commonjs" }
		}]
	},
	transformIgnorePatterns: ["/node_modules/(?!jose/)"],
	testTimeout: 120000,
	maxWorkers: 2
};
