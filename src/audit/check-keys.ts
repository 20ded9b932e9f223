/**
 * The key half of rule "signature-verifies": the keyring's keys against the public JWKS.
 * Only keys that pass here verify signatures in the threads.
 */
import type { AuditDb } from "./audit-db";
import { FindingList, importEd25519, type RuleName } from "./checks";

export interface PublicKeys {
	/** Every key id of the keyring, once each, in id order: the replay's initial free queue. */
	keyIds: string[];
	/** [kid, x] of every JWKS key that imports as an Ed25519 public key. */
	usable: Array<[string, string]>;
	/** Key documents read. */
	count: number;
}

export function checkPublicKeys(db: AuditDb, findings: FindingList): PublicKeys {
	const rule: RuleName = "signature-verifies";
	const keyIds: string[] = [];
	let count = 0;
	for (const row of db.sql
		.prepare(`SELECT keyId FROM kr.keys ORDER BY keyId${db.kind === "import" ? ", rowid" : ""}`)
		.iterate()) {
		count++;
		const keyId = row.keyId as string;
		if (keyIds[keyIds.length - 1] === keyId)
			findings.add(rule, `key ${keyId} is listed twice`, { keyId });
		else keyIds.push(keyId);
	}
	const known = new Set(keyIds);
	const usable = new Map<string, string>();
	const seen = new Set<string>();
	for (const jwk of db.jwks.keys) {
		const kid = typeof jwk.kid === "string" ? jwk.kid : null;
		if (!kid) {
			findings.add(rule, "a JWKS key has no kid");
			continue;
		}
		if (seen.has(kid)) {
			findings.add(rule, `JWKS has two keys with kid ${kid}`, { keyId: kid });
			usable.delete(kid);
			continue;
		}
		seen.add(kid);
		if (jwk.d !== undefined)
			findings.add(rule, `JWKS key ${kid} carries private key material ("d")`, {
				keyId: kid,
			});
		if (!known.has(kid))
			findings.add(rule, `JWKS key ${kid} is not in the keyring's keys`, { keyId: kid });
		if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
			findings.add(
				rule,
				`JWKS key ${kid} is not an Ed25519 public key (kty ${jwk.kty}, crv ${jwk.crv})`,
				{ keyId: kid },
			);
			continue;
		}
		try {
			importEd25519(jwk.x);
			usable.set(kid, jwk.x);
		} catch (err) {
			findings.add(rule, `JWKS key ${kid} cannot be imported: ${(err as Error).message}`, {
				keyId: kid,
			});
		}
	}
	for (const keyId of keyIds)
		if (!seen.has(keyId))
			findings.add(rule, `key ${keyId} has no public key in the JWKS`, { keyId });
	return { keyIds, usable: [...usable], count };
}
