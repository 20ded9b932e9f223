/**
 * Tests run the TypeScript sources through ts-jest (transpile only: `npm run typecheck`
 * and the build check types). jose 6 ships ESM only, so it is transpiled to CommonJS too.
 */
const transpile = ["ts-jest", { tsconfig: { isolatedModules: true, allowJs: true, module: "commonjs", target: "es2022", rewriteRelativeImportExtensions: false } }];

module.exports = {
	testEnvironment: "node",
	roots: ["<rootDir>/test"],
	testMatch: ["**/*.test.ts"],
	transform: {
		"^.+\\.ts$": transpile,
		"^.+\\.js$": transpile
	},
	transformIgnorePatterns: ["/node_modules/(?!jose/)"],
	testTimeout: 120000,
	maxWorkers: 2
};
