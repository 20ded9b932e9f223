/**
 * The one configuration table, docs/design.md §10, against the code: every environment variable
 * the code reads is a row of the table, and every row is read by the code or is one of the few
 * variables the image, compose or Kubernetes set for another program (READ_BY_OTHERS, each with
 * why). A `process.env.NEW_THING` added without its row fails here, naming it and the file.
 *
 * The code is its sources, read as text: src/**, services/, mixins/ and the moleculer-runner
 * config files. A read is `process.env.X`, `env.X` (any object named `env`, such as a function's
 * environment parameter), `env["X"]`, `const { X } = process.env`, a row of src/config.ts's
 * INTEGERS table, a `pick("X", ...)` call there, or a name of a list read by computed key (the
 * AUTH_* names of `authEnv`).
 */
import fs from "node:fs";
import path from "node:path";

const ROOT = path.join(__dirname, "../..");

/**
 * Rows of the table that this project's code need not read: each is set by the image, compose or
 * Kubernetes for another program, and documented because an operator meets it.
 */
const READ_BY_OTHERS: Record<string, string> = {
	// moleculer-runner reads both itself; src/cli/runner.ts and moleculer.config.js look at them too, but need not.
	SERVICES:
		"moleculer-runner starts the services it names: the role of a node (image, compose, Kubernetes)",
	SERVICEDIR:
		"moleculer-runner resolves the SERVICES names in it (the Dockerfile sets dist/services)",
	// The Dockerfile sets it; Node libraries read it, this code does not.
	NODE_ENV: "set to production by the Dockerfile for Node libraries",
	// nats-server reads these (k8s/nats-server.conf); the manifests expand each into its role's TRANSPORTER.
	NATS_KEYRING_PASSWORD:
		"read by nats-server; expanded into the keyring's TRANSPORTER by the manifests",
	NATS_SIGNER_PASSWORD:
		"read by nats-server; expanded into the signers' TRANSPORTER by the manifests",
	NATS_API_PASSWORD:
		"read by nats-server; expanded into the api node's TRANSPORTER by the manifests",
	NATS_OPS_PASSWORD: "read by nats-server, for the ops user (REPL, audit, export)",
	// The Kubernetes Secret holds them; the manifests expand them into MONGO_URI.
	MONGO_USERNAME: "expanded into MONGO_URI by the Kubernetes manifests",
	MONGO_PASSWORD: "expanded into MONGO_URI by the Kubernetes manifests",
};

/**
 * Files that read the environment by a computed key, and where their names come from: the
 * INTEGERS rows and pick() calls of src/config.ts, and the AUTH_* lists both files map over.
 * A computed read anywhere else would hide its names from this test.
 */
const COMPUTED_READS_IN = ["src/config.ts", "src/api/settings.ts"];

const NAME = "[A-Z][A-Z0-9_]*";
const DIRECT = new RegExp(`\\benv\\??\\.(${NAME})`, "g");
const BRACKETED = new RegExp(`\\benv\\??\\.?\\[\\s*(["'\`])(${NAME})\\1\\s*\\]`, "g");
const DESTRUCTURED = /\{([^{}]*)\}\s*=\s*process\.env\b/g;
const INTEGER_ROW = new RegExp(`\\benv:\\s*"(${NAME})"`, "g");
const PICKED = new RegExp(`\\bpick\\(\\s*"(${NAME})"`, "g");
const COMPUTED = /\benv\??\.?\[\s*(?!["'`])[^\]]+\]/;
const NAME_LIST = new RegExp(`\\[\\s*((?:"${NAME}"\\s*,\\s*)*"${NAME}")\\s*,?\\s*\\]`, "g");

interface SourceFile {
	/** Relative to the project root, with forward slashes. */
	file: string;
	text: string;
}

function tsFilesUnder(dir: string): string[] {
	return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
		const full = path.join(dir, entry.name);
		if (entry.isDirectory()) return tsFilesUnder(full);
		return entry.name.endsWith(".ts") ? [full] : [];
	});
}

/** The sources of every process the project starts. */
function sources(): SourceFile[] {
	const files = [
		...tsFilesUnder(path.join(ROOT, "src")),
		...tsFilesUnder(path.join(ROOT, "services")),
		...tsFilesUnder(path.join(ROOT, "mixins")),
		path.join(ROOT, "moleculer.config.ts"),
		path.join(ROOT, "moleculer.config.js"),
	];
	return files.map((file) => ({
		file: path.relative(ROOT, file).split(path.sep).join("/"),
		text: fs.readFileSync(file, "utf8"),
	}));
}

/** Every variable each source reads, with the files that read it. */
function readsOf(files: SourceFile[]): Map<string, Set<string>> {
	const reads = new Map<string, Set<string>>();
	const add = (name: string, file: string) => {
		if (!reads.has(name)) reads.set(name, new Set());
		reads.get(name)!.add(file);
	};
	for (const { file, text } of files) {
		for (const match of text.matchAll(DIRECT)) add(match[1], file);
		for (const match of text.matchAll(BRACKETED)) add(match[2], file);
		for (const match of text.matchAll(DESTRUCTURED))
			for (const part of match[1].split(",")) {
				const name = part.split(/[:=]/)[0].trim();
				if (new RegExp(`^${NAME}$`).test(name)) add(name, file);
			}
		for (const match of text.matchAll(INTEGER_ROW)) add(match[1], file);
		for (const match of text.matchAll(PICKED)) add(match[1], file);
		if (COMPUTED.test(text))
			for (const list of text.matchAll(NAME_LIST))
				for (const name of list[1].matchAll(new RegExp(`"(${NAME})"`, "g")))
					add(name[1], file);
	}
	return reads;
}

/** The files that read the environment by a computed key. */
function computedReaders(files: SourceFile[]): string[] {
	return files.filter(({ text }) => COMPUTED.test(text)).map(({ file }) => file);
}

interface Row {
	name: string;
	/** The "read in" cell. */
	readIn: string;
}

/** The rows of the configuration section's table, one per variable its first cell names. */
function tableRows(markdown: string): Row[] {
	const start = markdown.search(/^## \d+\. Configuration\b/m);
	if (start < 0) throw new Error('docs/design.md has no "## N. Configuration" section');
	const rest = markdown.slice(start + 3);
	const end = rest.search(/^## /m);
	const section = end < 0 ? rest : rest.slice(0, end);
	const rows: Row[] = [];
	for (const line of section.split("\n")) {
		if (!line.startsWith("| `")) continue;
		const cells = line.split("|").map((cell) => cell.trim());
		for (const match of cells[1].matchAll(new RegExp(`\`(${NAME})\``, "g")))
			rows.push({ name: match[1], readIn: cells[4] ?? "" });
	}
	return rows;
}

/** What a table lacks, as `NAME (read in file, ...)` lines. */
function undocumented(reads: Map<string, Set<string>>, documented: Set<string>): string[] {
	return [...reads]
		.filter(([name]) => !documented.has(name))
		.map(([name, files]) => `${name} (read in ${[...files].sort().join(", ")})`)
		.sort();
}

describe("the configuration table, docs/design.md §10", () => {
	const design = fs.readFileSync(path.join(ROOT, "docs", "design.md"), "utf8");
	const rows = tableRows(design);
	const documented = new Set(rows.map((row) => row.name));
	const files = sources();
	const reads = readsOf(files);

	it("finds the reads of every kind: process.env, INTEGERS rows, pick() calls, the authEnv list, outside src/config.ts", () => {
		expect([...(reads.get("SIGNER_FAULT") ?? [])]).toEqual(["services/signer.service.ts"]);
		expect(reads.get("RECORDS")).toContain("src/config.ts");
		expect(reads.get("DATA_DIR")).toContain("src/config.ts");
		expect(reads.get("AUTH_AUDIENCE")).toContain("src/config.ts");
		expect(reads.get("SERVE_NATS")).toContain("src/config.ts");
		expect(reads.get("NATS_SERVER_BIN")).toContain("src/cluster/nats-server.ts");
		expect(reads.get("SERVICES")).toContain("moleculer.config.js");
	});

	it("lists each variable once", () => {
		const names = rows.map((row) => row.name);
		expect(names.filter((name, at) => names.indexOf(name) !== at)).toEqual([]);
	});

	it("has a row for every variable the code reads", () => {
		expect(undocumented(reads, documented)).toEqual([]);
	});

	it("has no row the code does not read, but for the variables set for other programs listed here", () => {
		const unread = [...documented]
			.filter((name) => !reads.has(name) && !(name in READ_BY_OTHERS))
			.sort();
		expect(unread).toEqual([]);
	});

	it('lists here only rows of the table, and marks "not read by this code" exactly the rows the code does not read', () => {
		expect(Object.keys(READ_BY_OTHERS).filter((name) => !documented.has(name))).toEqual([]);
		const markedUnread = rows
			.filter((row) => /not read by this code/.test(row.readIn))
			.map((row) => row.name)
			.sort();
		expect(markedUnread).toEqual([...documented].filter((name) => !reads.has(name)).sort());
	});

	it("fails for a variable read without its row, in each form a read takes", () => {
		const added: SourceFile[] = [
			{
				file: "src/new.ts",
				text: "const a = process.env.NEW_THING; const b = env?.NEW_OPTIONAL;",
			},
			{
				file: "src/other.ts",
				text: 'const { NEW_DESTRUCTURED, RECORDS: records } = process.env; const c = process.env["NEW_BRACKETED"];',
			},
		];
		expect(undocumented(readsOf(added), documented)).toEqual([
			"NEW_BRACKETED (read in src/other.ts)",
			"NEW_DESTRUCTURED (read in src/other.ts)",
			"NEW_OPTIONAL (read in src/new.ts)",
			"NEW_THING (read in src/new.ts)",
		]);
	});

	it("reads the environment by a computed key only where the names are listed", () => {
		expect(computedReaders(files).filter((file) => !COMPUTED_READS_IN.includes(file))).toEqual(
			[],
		);
	});

	it("is the only table: README and docs/deploy.md link to it and keep no table of their own", () => {
		for (const doc of ["README.md", "docs/deploy.md"]) {
			const text = fs.readFileSync(path.join(ROOT, doc), "utf8");
			expect({ doc, links: /design\.md#10-configuration/.test(text) }).toEqual({
				doc,
				links: true,
			});
			expect({ doc, tables: text.match(/^\|\s*variable\s*\|/gim) ?? [] }).toEqual({
				doc,
				tables: [],
			});
		}
	});
});
