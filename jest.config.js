/**
 * Tests run the TypeScript sources through ts-jest (transpile only: `npm run typecheck`
 * and the build check types). jose 6 ships ESM only, so it is transpiled to CommonJS too.
 *
 * Two projects (`npm run test:unit`, `npm run test:integration`; `npm test` runs both):
 *   unit         test/unit/: one process, no nats-server, no Chromium, no child process
 *                (in-process brokers with real services are fine); needs nothing but `npm ci`.
 *   integration  test/integration/: a real nats-server, OS processes (the cluster, the
 *                commands as users run them, the build in dist/), headless Chromium.
 * A test file left directly under test/ runs with the integration project until it is
 * filed under one of the two folders.
 *
 * TEST_PROJECT=unit|integration keeps one project (the npm scripts set it): unlike
 * `--selectProjects`, it leaves the file paths given after it (`npm run test:unit -- test/unit/x.test.ts`)
 * as paths, not as more project names.
 */
const transpile = [
	"ts-jest",
	{
		tsconfig: {
			isolatedModules: true,
			allowJs: true,
			module: "commonjs",
			target: "es2022",
			rewriteRelativeImportExtensions: false,
		},
	},
];

const project = {
	testEnvironment: "node",
	transform: {
		"^.+\\.ts$": transpile,
		"^.+\\.js$": transpile,
	},
	transformIgnorePatterns: ["/node_modules/(?!jose/)"],
};

const projects = [
	{
		...project,
		displayName: "unit",
		roots: ["<rootDir>/test/unit"],
		testMatch: ["<rootDir>/test/unit/**/*.test.ts"],
	},
	{
		...project,
		displayName: "integration",
		roots: ["<rootDir>/test"],
		testMatch: ["<rootDir>/test/integration/**/*.test.ts", "<rootDir>/test/*.test.ts"],
	},
];

const only = process.env.TEST_PROJECT;
if (only && !projects.some((p) => p.displayName === only))
	throw new Error(
		`TEST_PROJECT must be ${projects.map((p) => p.displayName).join(" or ")}, got ${JSON.stringify(only)}`,
	);

module.exports = {
	projects: only ? projects.filter((p) => p.displayName === only) : projects,
	testTimeout: 120000,
	maxWorkers: 2,
};
