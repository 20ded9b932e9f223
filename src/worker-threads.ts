/**
 * What the worker threads that load this project's modules (the signing threads, the audit's
 * range threads) are started with. From dist/ their modules are CommonJS and need nothing.
 * From the TypeScript sources (under jest) they are ES modules, and piscina loads a thread's
 * file with `require()` before `import()`: Node 22's require() of an ES module can race an
 * `import()` of the same graph in that thread, and lose with a fatal V8 error that ends the
 * whole process. Seen once in CI: "v8::Module::IsGraphAsync must be used on an instantiated
 * module", from piscina's require() down Node's require(esm) path to a module not yet
 * instantiated, the race of nodejs/node#62130. With require() of ES modules off in those
 * threads only, piscina's require() fails at once and it imports the file, by one path.
 * That refusal is a generic warning, once per thread and expected, so those threads do not
 * show generic warnings.
 */
export function workerExecArgv(filename: string): string[] | undefined {
	return filename.endsWith(".ts")
		? [
				...sourceWorkerExecArgv(filename)!,
				"--no-experimental-require-module",
				"--disable-warning=Warning",
			]
		: undefined;
}

/**
 * What any worker thread started from a TypeScript source is started with: the warnings the npm
 * scripts turn off (package.json's NODE_OPTIONS) turned off in the thread too, since a thread
 * takes its flags from its parent's command line, not from what the parent did at run time.
 * `npx moleculer-runner services` has no such flags: in its main thread moleculer.config.js
 * turns the same warnings off, and here its threads do. They are expected: node:sqlite is
 * experimental on Node 22, and a source file is an ES module in a package with no "type".
 */
export function sourceWorkerExecArgv(filename: string): string[] | undefined {
	return filename.endsWith(".ts")
		? [
				...process.execArgv,
				"--disable-warning=ExperimentalWarning",
				"--disable-warning=MODULE_TYPELESS_PACKAGE_JSON",
			]
		: undefined;
}
