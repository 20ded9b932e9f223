/**
 * moleculer-runner's default configuration file (it looks for moleculer.config.js in the
 * folder it runs in), for the command as the card writes it (docs/design.md §1.2), from the project root:
 *
 *   npx moleculer-runner services           every service, from the TypeScript sources
 *   npm run dev                             the same with --hot and --repl
 *
 * The services are TypeScript: tsx (a dev dependency) compiles them as they load, so no build
 * is needed, and a hot reload re-reads the edited file. The broker options are those of
 * moleculer.config.ts, the file the build uses too. The built image runs
 * dist/moleculer.config.js instead and never reads this file.
 */
"use strict";

const fs = require("node:fs");
const path = require("node:path");

const FROM_BUILD =
	"npm run build && SERVICEDIR=dist/services npx moleculer-runner --config dist/moleculer.config.js";

/**
 * The warnings the npm scripts turn off with NODE_OPTIONS (package.json), turned off for this
 * command too, which has no such flags: node:sqlite is experimental on Node 22, Moleculer
 * promisifies a function that returns a promise (DEP0174), and a source file is an ES module
 * in a package with no "type". Any other warning still shows. The worker threads started from
 * the sources turn off the same (src/worker-threads.ts).
 */
const QUIET = new Set(["ExperimentalWarning", "DEP0174", "MODULE_TYPELESS_PACKAGE_JSON"]);
const emitWarning = process.emitWarning;
process.emitWarning = function (warning, ...rest) {
	const options = rest[0] !== null && typeof rest[0] === "object" ? rest[0] : {};
	const type = typeof rest[0] === "string" ? rest[0] : (options.type ?? warning?.name);
	const code = typeof rest[1] === "string" ? rest[1] : (options.code ?? warning?.code);
	if (QUIET.has(type) || QUIET.has(code)) return;
	return emitWarning.call(this, warning, ...rest);
};

function fail(message) {
	process.stderr.write(`${message}\n`);
	process.exit(2);
}

try {
	require("tsx/cjs/api").register();
} catch (err) {
	if (err && err.code !== "MODULE_NOT_FOUND") throw err;
	fail(
		`moleculer-runner runs the TypeScript services of this project through tsx, a dev dependency that is not installed: run npm ci. Or run the build: ${FROM_BUILD}`,
	);
}

/** The service files (*.service.ts or *.service.js) under `folder`, recursively. */
function serviceFiles(folder) {
	if (!fs.existsSync(folder) || !fs.statSync(folder).isDirectory()) return [];
	return fs
		.readdirSync(folder, { recursive: true })
		.filter((file) => /\.service\.[jt]s$/.test(String(file)));
}

module.exports = async function () {
	const named = this.servicePaths || [];
	if (!process.env.SERVICES && !process.env.SERVICEDIR) {
		// No services named: the runner would start an empty broker and exit 0. Say what works.
		if (named.length === 0)
			fail(
				`Name the services to run: npx moleculer-runner services (every service), or npm run dev (with hot reload and the REPL). From the build: ${FROM_BUILD}`,
			);
		for (const folder of named) {
			const resolved = path.resolve(folder);
			if (
				fs.existsSync(resolved) &&
				fs.statSync(resolved).isDirectory() &&
				serviceFiles(resolved).length === 0
			)
				fail(
					`No service files in ${resolved}: the services are in ${path.resolve(__dirname, "services")} (npx moleculer-runner services).`,
				);
		}
	}
	// The services are *.service.ts; the runner's default mask finds only *.service.js.
	if (!this.flags.mask) this.flags.mask = "**/*.service.ts";
	const options = require("./moleculer.config.ts");
	return typeof options === "function" ? options.call(this) : options;
};
