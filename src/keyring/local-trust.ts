/**
 * What a keyring sets up for the nodes that share its DATA_DIR (or a volume) at start: it
 * enrols the signer and batcher credentials it finds there (made when absent), and makes its
 * authority public key known, so records can check lease tokens. KEYRING_PUBLIC_KEY, when set,
 * must be that key: a mismatch would have records refuse every lease token.
 */
import {
	parseAuthorityKey,
	publishAuthority,
	TrustAnchorError,
	type AuthorityKey,
} from "../identity/authority";
import {
	credentialFile,
	localCredential,
	newCredential,
	writeCredentialFile,
	CredentialError,
	type CredentialRole,
	type SignerCredential,
} from "../identity/credential";
import type { KeyringStore } from "./store";

interface Logger {
	info(line: string): void;
	warn(line: string): void;
}

/** The `role` credential at `where` ("" = this process's in-memory one; null = none), enrolled by itself the first time. */
export async function enrolLocalCredential(
	store: KeyringStore,
	role: CredentialRole,
	where: string | null,
	logger: Logger,
): Promise<void> {
	if (where === null) return;
	const credential = where === "" ? localCredential("", role) : credentialFile(where, true);
	const outcome = await store.enrol(role, {
		name: credential.name,
		publicJwk: credential.publicJwk,
		enrolledAt: new Date().toISOString(),
		revokedAt: null,
	});
	if (outcome === "enrolled")
		logger.info(`Enrolled the ${role} credential "${credential.name}" of ${credential.source}`);
	else if (outcome === "name-taken")
		logger.warn(
			`The ${role} credential "${credential.name}" of ${credential.source} is revoked (or its name taken by another key): ${role}s using it are refused. Delete the file to have a new one made and enrolled.`,
		);
}

/**
 * A credential rotation (docs/design.md §6.1): a new credential named `name` is enrolled beside
 * the one in `file`, then written over it in one rename. The nodes reading the file switch to it
 * within a second for what they begin from then on; the old one stays enrolled until the operator
 * revokes it, once the leases and batches begun under it have ended. Returns both.
 */
export async function rotateCredentialFile(
	store: Pick<KeyringStore, "enrol">,
	role: CredentialRole,
	file: string,
	name: string,
): Promise<{ previous: SignerCredential; next: SignerCredential }> {
	const previous = credentialFile(file, false);
	if (previous.name === name)
		throw new CredentialError(
			`${file} already holds the ${role} credential "${name}": a new credential takes a new name`,
		);
	const next = newCredential(name, file);
	const outcome = await store.enrol(role, {
		name,
		publicJwk: next.publicJwk,
		enrolledAt: new Date().toISOString(),
		revokedAt: null,
	});
	if (outcome !== "enrolled")
		throw new CredentialError(
			`The ${role} name "${name}" is taken (by another key, or revoked): choose another name`,
		);
	writeCredentialFile(file, next);
	return { previous, next };
}

/** Checks KEYRING_PUBLIC_KEY against the authority key, and publishes the key to this process and `publicKeyFile`. */
export function announceAuthority(
	authority: AuthorityKey,
	settings: { publicKey: string | null; publicKeyFile: string | null },
	logger: Logger,
): void {
	const { publicKey, publicKeyFile } = settings;
	if (publicKey && parseAuthorityKey(publicKey, "KEYRING_PUBLIC_KEY").kid !== authority.kid)
		throw new TrustAnchorError(
			`KEYRING_PUBLIC_KEY is not this keyring's public key, which is ${authority.publicJwk.x} (from its master key): records would refuse every lease token. Set it to what \`npm run signer -- authority\` prints`,
		);
	try {
		publishAuthority(authority, publicKey ? null : publicKeyFile);
		logger.info(
			`Lease tokens are signed with the keyring key ${authority.publicJwk.x}${publicKey ? " (KEYRING_PUBLIC_KEY)" : publicKeyFile ? `, published in ${publicKeyFile}` : ""}`,
		);
	} catch (err) {
		logger.warn(
			`Could not write the keyring's public key to ${publicKeyFile} (${(err as Error).message}): records nodes that do not run in this process need KEYRING_PUBLIC_KEY=${authority.publicJwk.x}`,
		);
	}
}
