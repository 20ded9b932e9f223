/**
 * libsodium through `sodium-native`: the library every Ed25519 signature and verification of
 * the system goes through (the signing threads, the audit's threads, the benchmark's floors).
 * Its npm package ships prebuilt binaries, so `npm ci` is all it needs.
 *
 * Erasable TypeScript with type-only imports, so a worker thread loads it straight from the
 * sources under jest (as an ES module: `importSodium`) and from dist/ as CommonJS (either).
 */
import type * as SodiumNative from "sodium-native";

/** The package, named in every error about it. */
export const SODIUM_PACKAGE = "sodium-native";

/** sodium-native 5's API; @types/sodium-native lacks `sodium_free` (detaches the buffer, and libsodium zeroes and unmaps it). */
export type Sodium = typeof SodiumNative & { sodium_free(buffer: SodiumNative.SecureBuffer): void };
export type SecureBuffer = SodiumNative.SecureBuffer;

/** Ed25519 sizes in libsodium: the secret key is the 32-byte seed followed by the 32-byte public key. */
export const SECRET_KEY_BYTES = 64;
export const SEED_BYTES = 32;
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;

export class SodiumUnavailableError extends Error {
	constructor(cause: unknown) {
		const reason = cause instanceof Error ? cause.message.split("\n")[0] : String(cause);
		super(
			`${SODIUM_PACKAGE} (libsodium, which signs and verifies every Ed25519 signature here) could not be loaded: ${reason}. ` +
				`Install the project's dependencies with \`npm ci\` (or \`npm install ${SODIUM_PACKAGE}\`) on this machine's platform and Node version; ` +
				`${SODIUM_PACKAGE} ships prebuilt binaries for linux, macOS and Windows on x64 and arm64, and builds from source elsewhere (cmake and a C compiler).`,
			{ cause },
		);
		this.name = "SodiumUnavailableError";
	}
}

function checked(loaded: unknown, specifier: string): Sodium {
	const sodium = ((loaded as { default?: unknown })?.default ?? loaded) as
		Partial<Sodium> | undefined;
	if (
		typeof sodium?.crypto_sign_detached !== "function" ||
		typeof sodium.sodium_malloc !== "function" ||
		typeof sodium.sodium_free !== "function"
	)
		throw new SodiumUnavailableError(
			new Error(
				`"${specifier}" loaded but is not the ${SODIUM_PACKAGE} 5 API (no crypto_sign_detached/sodium_malloc/sodium_free)`,
			),
		);
	return sodium as Sodium;
}

let required: Sodium | null = null;

/** Synchronous, for CommonJS code (the main thread: the signer service, the bench, the tests). */
export function requireSodium(specifier = SODIUM_PACKAGE): Sodium {
	if (specifier === SODIUM_PACKAGE && required) return required;
	let loaded: unknown;
	try {
		// eslint-disable-next-line @typescript-eslint/no-require-imports -- synchronous load of a package chosen at run time
		loaded = require(specifier);
	} catch (err) {
		throw new SodiumUnavailableError(err);
	}
	const sodium = checked(loaded, specifier);
	if (specifier === SODIUM_PACKAGE) required = sodium;
	return sodium;
}

/** For worker threads, which may be ES modules (the sources under jest): a dynamic import. */
export async function importSodium(specifier = SODIUM_PACKAGE): Promise<Sodium> {
	let loaded: unknown;
	try {
		loaded = await import(specifier);
	} catch (err) {
		throw new SodiumUnavailableError(err);
	}
	return checked(loaded, specifier);
}
