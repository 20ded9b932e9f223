/**
 * A PKCS#11 token (KEY_STORE=pkcs11, docs/design.md §5.9) through the `pkcs11js` binding: the
 * module loaded, the token found by its label, a session logged in with the user PIN. The
 * keyring generates and checks its keys through it; the signer's main thread checks the token
 * at start and each signing thread opens a session of its own (src/signer/token-sign.worker.ts).
 *
 * Cryptoki is initialised once per process, not per thread: a second `C_Initialize` answers
 * CKR_CRYPTOKI_ALREADY_INITIALIZED, which is taken as done, and only the last `close()` of the
 * thread that initialised it finalises it. Login is per process too (every session of a process
 * shares it), so a session opened after the first login is already logged in.
 *
 * Several processes may share one token (nodes on a network HSM's partition, or a SoftHSM token
 * directory). SoftHSM's file store rewrites the token's file at each login, and a process that
 * reads it meanwhile sees no token, or a token with no user PIN (SoftHSMv2 issue #757). Opening
 * the token and logging in therefore retry what such a race answers (`raceCodes`, a token that
 * is not listed) a few times before the error stands; a wrong PIN is never retried, as every
 * wrong try counts towards locking the token.
 *
 * Erasable TypeScript with type-only imports and `.ts` imports, so a signing thread loads it
 * straight from the sources under jest and from dist/ as CommonJS.
 */
import type * as Pkcs11Js from "pkcs11js";
import { sleepSync } from "../sleep-sync.ts";
import { UserError } from "../user-error.ts";

export type Pkcs11 = typeof Pkcs11Js;
export type Handle = Buffer;

/** PKCS#11 3.0 values that pkcs11js 2.1 has no names for. */
export const CKK_EC_EDWARDS = 0x40;
export const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
export const CKM_EDDSA = 0x1057;
/** CKA_EC_PARAMS of Ed25519: the DER of the OID 1.3.101.112 (RFC 8410). */
export const ED25519_PARAMS = Buffer.from("06032b6570", "hex");

/** Where the token is, and how to log in: what KEY_STORE=pkcs11 reads (src/config.ts). */
export interface TokenSettings {
	/** PKCS11_MODULE: the vendor's PKCS#11 library. */
	module: string;
	/** PKCS11_TOKEN_LABEL. */
	tokenLabel: string;
	/** The user PIN, from PKCS11_PIN or PKCS11_PIN_FILE. */
	pin: string;
	/** Which of the two it came from, for messages (never the PIN). */
	pinSource: string;
}

/** A token key as a lease names it: its CKA_LABEL (the key id) and CKA_ID (hex). Nothing secret. */
export interface TokenKeyRef {
	label: string;
	id: string;
}

/** A token that cannot be used as configured: the message names the variable to fix. */
export class TokenError extends UserError {
	/** Whether another process using the token at the same moment can cause it (retried). */
	readonly raced: boolean;
	constructor(message: string, raced = false) {
		super(message);
		this.raced = raced;
	}
}

/** How many times opening the token, or logging in, is tried before its error stands. */
export const OPEN_ATTEMPTS = 8;

/** The pause before the attempt after `attempt` (1-based): 25 ms doubling to 400 ms, jittered. */
function retryPauseMs(attempt: number): number {
	return Math.min(400, 25 * 2 ** (attempt - 1)) * (0.5 + Math.random());
}

let loaded: Pkcs11 | null = null;

/** The pkcs11js binding: a dynamic import, so that a signing thread loaded as an ES module finds it too. */
export async function loadPkcs11(): Promise<Pkcs11> {
	if (loaded) return loaded;
	try {
		const module = (await import("pkcs11js")) as Pkcs11 & { default?: Pkcs11 };
		loaded = module.default ?? module;
	} catch (err) {
		throw new TokenError(
			`KEY_STORE=pkcs11 needs the pkcs11js package, which could not be loaded: ${(err as Error).message.split("\n")[0]}. Run \`npm ci\` on this machine (it builds pkcs11js with g++ and make)`,
		);
	}
	return loaded;
}

/** The Cryptoki error code of a pkcs11js error, or 0. */
export function errorCode(err: unknown): number {
	return typeof (err as { code?: unknown })?.code === "number"
		? (err as { code: number }).code
		: 0;
}

function reason(err: unknown): string {
	return (err as Error).message?.split("\n")[0] ?? String(err);
}

/** One module loaded in this thread, Cryptoki initialised for the process. */
interface LoadedModule {
	api: InstanceType<Pkcs11["PKCS11"]>;
	/** Whether this thread's C_Initialize did it (and so its last close finalises it). */
	initialisedHere: boolean;
	users: number;
}

const modules = new Map<string, LoadedModule>();

export class Token {
	readonly settings: TokenSettings;
	readonly pkcs11: Pkcs11;
	readonly api: InstanceType<Pkcs11["PKCS11"]>;
	readonly slot: Handle;
	#closed = false;

	private constructor(
		settings: TokenSettings,
		pkcs11: Pkcs11,
		api: InstanceType<Pkcs11["PKCS11"]>,
		slot: Handle,
	) {
		this.settings = settings;
		this.pkcs11 = pkcs11;
		this.api = api;
		this.slot = slot;
	}

	/**
	 * Loads the module (once per thread), finds the token by its label and checks the PIN by
	 * logging in. Each failure is a TokenError naming the variable: PKCS11_MODULE,
	 * PKCS11_TOKEN_LABEL, or PKCS11_PIN / PKCS11_PIN_FILE.
	 */
	static async open(settings: TokenSettings): Promise<Token> {
		const pkcs11 = await loadPkcs11();
		for (let attempt = 1; ; attempt++) {
			const loadedModule = loadModule(pkcs11, settings.module);
			try {
				const token = new Token(
					settings,
					pkcs11,
					loadedModule.api,
					findSlot(pkcs11, loadedModule.api, settings),
				);
				token.closeSession(token.openSession());
				return token;
			} catch (err) {
				// A token that cannot be used lets the module go (finalised when nothing else holds
				// it), so that the next attempt's C_Initialize reads the token list again.
				release(settings.module);
				if (!(err instanceof TokenError && err.raced) || attempt >= OPEN_ATTEMPTS)
					throw err;
			}
			await new Promise((resolve) => setTimeout(resolve, retryPauseMs(attempt)));
		}
	}

	/** A new read-write session on the token, logged in as its user. */
	openSession(): Handle {
		for (let attempt = 1; ; attempt++) {
			try {
				return this.tryOpenSession();
			} catch (err) {
				if (!(err instanceof TokenError && err.raced) || attempt >= OPEN_ATTEMPTS)
					throw err;
			}
			sleepSync(retryPauseMs(attempt));
		}
	}

	private tryOpenSession(): Handle {
		const { api, pkcs11 } = this;
		let session: Handle;
		try {
			session = api.C_OpenSession(
				this.slot,
				pkcs11.CKF_SERIAL_SESSION | pkcs11.CKF_RW_SESSION,
			);
		} catch (err) {
			if (!raceCodes(pkcs11).has(errorCode(err))) throw err;
			throw new TokenError(
				`Opening a session on token "${this.settings.tokenLabel}" failed: ${reason(err)}`,
				true,
			);
		}
		try {
			api.C_Login(session, pkcs11.CKU_USER, this.settings.pin);
		} catch (err) {
			if (errorCode(err) !== pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
				this.closeSession(session);
				throw pinError(pkcs11, this.settings, err);
			}
		}
		return session;
	}

	closeSession(session: Handle): void {
		try {
			this.api.C_CloseSession(session);
		} catch {
			// A session the module already closed (its token went away) needs nothing more.
		}
	}

	/** The private key object whose CKA_ID is `ref.id`, or null. */
	findPrivateKey(session: Handle, ref: TokenKeyRef): Handle | null {
		return this.findOne(session, this.pkcs11.CKO_PRIVATE_KEY, ref);
	}

	/**
	 * Every Ed25519 key object of `objectClass` in the token, by CKA_ID (hex): one search. A
	 * module may read every object of the token for each search (SoftHSM does, from its files):
	 * a hundred searches for a hundred keys cost a hundred times that.
	 */
	keysById(session: Handle, objectClass: number): Map<string, Handle> {
		const { api, pkcs11 } = this;
		api.C_FindObjectsInit(session, [
			{ type: pkcs11.CKA_CLASS, value: objectClass },
			{ type: pkcs11.CKA_KEY_TYPE, value: CKK_EC_EDWARDS },
		]);
		const handles: Handle[] = [];
		try {
			let found = api.C_FindObjects(session, 256);
			while (found.length) {
				handles.push(...found);
				found = api.C_FindObjects(session, 256);
			}
		} finally {
			api.C_FindObjectsFinal(session);
		}
		const byId = new Map<string, Handle>();
		for (const handle of handles) {
			const [id] = api.C_GetAttributeValue(session, handle, [{ type: pkcs11.CKA_ID }]);
			byId.set((id.value as Buffer).toString("hex"), handle);
		}
		return byId;
	}

	private findOne(session: Handle, objectClass: number, ref: TokenKeyRef): Handle | null {
		const { api, pkcs11 } = this;
		api.C_FindObjectsInit(session, [
			{ type: pkcs11.CKA_CLASS, value: objectClass },
			{ type: pkcs11.CKA_ID, value: Buffer.from(ref.id, "hex") },
		]);
		try {
			return api.C_FindObjects(session) ?? null;
		} finally {
			api.C_FindObjectsFinal(session);
		}
	}

	/** Lets the module go; the last user in the thread that initialised Cryptoki finalises it. Idempotent. */
	close(): void {
		if (this.#closed) return;
		this.#closed = true;
		release(this.settings.module);
	}
}

function loadModule(pkcs11: Pkcs11, file: string): LoadedModule {
	const known = modules.get(file);
	if (known) {
		known.users++;
		return known;
	}
	const api = new pkcs11.PKCS11();
	try {
		api.load(file);
	} catch (err) {
		throw new TokenError(
			`PKCS11_MODULE ${file} cannot be loaded as a PKCS#11 module: ${reason(err)}`,
		);
	}
	let initialisedHere = true;
	try {
		api.C_Initialize({ flags: pkcs11.CKF_OS_LOCKING_OK });
	} catch (err) {
		if (errorCode(err) !== pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			api.close();
			throw new TokenError(`PKCS11_MODULE ${file} did not initialise: ${reason(err)}`);
		}
		initialisedHere = false;
	}
	const entry = { api, initialisedHere, users: 1 };
	modules.set(file, entry);
	return entry;
}

function release(file: string): void {
	const entry = modules.get(file);
	if (!entry || --entry.users > 0) return;
	modules.delete(file);
	if (entry.initialisedHere) {
		try {
			entry.api.C_Finalize();
		} catch {
			// Finalising a module that is already finalised changes nothing.
		}
	}
}

function findSlot(
	pkcs11: Pkcs11,
	api: InstanceType<Pkcs11["PKCS11"]>,
	settings: TokenSettings,
): Handle {
	const labels: string[] = [];
	try {
		for (const slot of api.C_GetSlotList(true)) {
			const label = api.C_GetTokenInfo(slot).label.trim();
			if (label === settings.tokenLabel) return slot;
			labels.push(`"${label}"`);
		}
	} catch (err) {
		if (!raceCodes(pkcs11).has(errorCode(err))) throw err;
		throw new TokenError(
			`Listing the tokens of ${settings.module} failed: ${reason(err)}`,
			true,
		);
	}
	throw new TokenError(
		`PKCS11_TOKEN_LABEL "${settings.tokenLabel}" names no token of ${settings.module} (its tokens: ${labels.join(", ") || "none"})`,
		true,
	);
}

/**
 * What a login or a session answers while another process rewrites a SoftHSM token's file: a
 * general error, or a token whose user PIN seems not set.
 */
function raceCodes(pkcs11: Pkcs11): Set<number> {
	return new Set([pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_USER_PIN_NOT_INITIALIZED]);
}

function pinError(pkcs11: Pkcs11, settings: TokenSettings, err: unknown): Error {
	const code = errorCode(err);
	if (code === pkcs11.CKR_PIN_LOCKED)
		return new TokenError(
			`${settings.pinSource}: the user PIN of token "${settings.tokenLabel}" is locked`,
		);
	if (
		code === pkcs11.CKR_PIN_INCORRECT ||
		code === pkcs11.CKR_PIN_INVALID ||
		code === pkcs11.CKR_PIN_LEN_RANGE
	)
		return new TokenError(
			`${settings.pinSource} is not the user PIN of token "${settings.tokenLabel}" (${reason(err)})`,
		);
	return new TokenError(
		`Logging in to token "${settings.tokenLabel}" failed: ${reason(err)} (PKCS11_PIN, PKCS11_PIN_FILE)`,
		raceCodes(pkcs11).has(code),
	);
}
