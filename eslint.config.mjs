// @ts-check
// The Moleculer TypeScript template's lint setup: ESLint's and typescript-eslint's recommended
// rules, with Prettier run as a rule so that `npm run lint` reports formatting too.
import eslint from "@eslint/js";
import tseslint from "typescript-eslint";
import eslintPluginPrettierRecommended from "eslint-plugin-prettier/recommended";
import globals from "globals";

export default tseslint.config(
	{ ignores: ["dist/", "node_modules/", "data/", "coverage/", "test-artifacts/"] },
	eslint.configs.recommended,
	tseslint.configs.recommended,
	eslintPluginPrettierRecommended,
	{
		languageOptions: {
			globals: {
				...globals.node,
			},
		},
		rules: {
			"no-var": ["error"],
			// A leading underscore marks a value left out on purpose (`const { secret: _secret, ...rest }`).
			"@typescript-eslint/no-unused-vars": [
				"error",
				{
					argsIgnorePattern: "^_",
					varsIgnorePattern: "^_",
					ignoreRestSiblings: true,
					caughtErrors: "none",
				},
			],
		},
	},
	{
		// moleculer-runner's CommonJS config (it loads the TypeScript one through tsx) and Jest's.
		files: ["moleculer.config.js", "jest.config.js"],
		languageOptions: { sourceType: "commonjs" },
		rules: { "@typescript-eslint/no-require-imports": "off" },
	},
	{
		files: ["public/**/*.js"],
		languageOptions: { globals: { ...globals.browser } },
	},
	{
		files: ["test/**/*.ts"],
		rules: {
			// Tests reach into Moleculer internals and malformed payloads on purpose, and read
			// packages' own files (package.json, a driver's constants) synchronously.
			"@typescript-eslint/no-explicit-any": "off",
			"@typescript-eslint/no-require-imports": "off",
		},
	},
);
