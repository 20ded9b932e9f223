/**
 * A PKCS#11 client of its own, run as a separate process by test/integration/pkcs11.test.ts
 * (`node dist/test/support/token-probe.js ID...`, with SOFTHSM2_CONF and the PKCS11_* variables
 * of the token): for each CKA_ID it asks the token for the private key's flags, for its value,
 * and to wrap it under an AES key made for the purpose, and prints what the token answered as
 * one JSON line. A separate process because SoftHSM reads SOFTHSM2_CONF from the real
 * environment, which a Jest test cannot set.
 */
import { loadConfig } from "../../src/config";
import { Token, errorCode } from "../../src/pkcs11/token";

export interface ProbeAnswer {
	id: string;
	found: boolean;
	/** CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE. */
	flags: number[];
	/** The Cryptoki error names of reading CKA_VALUE and of C_WrapKey, or "returned" when the token answered. */
	read: string;
	wrap: string;
}

function outcome(pkcs11: { [name: string]: unknown }, attempt: () => unknown): string {
	try {
		attempt();
		return "returned";
	} catch (err) {
		const code = errorCode(err);
		return (
			Object.keys(pkcs11).find((name) => name.startsWith("CKR_") && pkcs11[name] === code) ??
			String(err)
		);
	}
}

async function main(ids: string[]): Promise<void> {
	const token = await Token.open(loadConfig().token!);
	const session = token.openSession();
	const { api, pkcs11 } = token;
	try {
		const wrappingKey = api.C_GenerateKey(session, { mechanism: pkcs11.CKM_AES_KEY_GEN }, [
			{ type: pkcs11.CKA_VALUE_LEN, value: 32 },
			{ type: pkcs11.CKA_WRAP, value: true },
			{ type: pkcs11.CKA_TOKEN, value: false },
		]);
		const answers: ProbeAnswer[] = ids.map((id) => {
			const key = token.findPrivateKey(session, { label: "", id });
			if (!key) return { id, found: false, flags: [], read: "", wrap: "" };
			const flags = api
				.C_GetAttributeValue(session, key, [
					{ type: pkcs11.CKA_SENSITIVE },
					{ type: pkcs11.CKA_EXTRACTABLE },
					{ type: pkcs11.CKA_ALWAYS_SENSITIVE },
					{ type: pkcs11.CKA_NEVER_EXTRACTABLE },
				])
				.map((attribute) => (attribute.value as Buffer)[0]);
			const constants = pkcs11 as unknown as { [name: string]: unknown };
			return {
				id,
				found: true,
				flags,
				read: outcome(constants, () =>
					api.C_GetAttributeValue(session, key, [{ type: pkcs11.CKA_VALUE }]),
				),
				wrap: outcome(constants, () =>
					api.C_WrapKey(
						session,
						{ mechanism: pkcs11.CKM_AES_KEY_WRAP_PAD },
						wrappingKey,
						key,
						Buffer.alloc(1024),
					),
				),
			};
		});
		console.log(JSON.stringify(answers));
	} finally {
		token.closeSession(session);
		token.close();
	}
}

if (require.main === module)
	main(process.argv.slice(2)).catch((err) => {
		console.error((err as Error).message);
		process.exit(1);
	});
