/**
 * A process that opens a shared PKCS#11 token over and over, as nodes starting together do, run
 * by test/integration/pkcs11.test.ts (`node dist/test/support/token-opener.js TIMES [generate]`,
 * with SOFTHSM2_CONF and the PKCS11_* variables of the token): each time it opens the token
 * (module, label, login) and closes it, with `generate` making a key in it as a keyring does.
 * It prints what happened as one JSON line: how many opens worked and the errors of the others.
 */
import { loadConfig } from "../../src/config";
import { generateTokenKeys } from "../../src/keyring/token-keys";
import { Token } from "../../src/pkcs11/token";

export interface OpenerAnswer {
	opened: number;
	errors: string[];
}

async function main(times: number, generate: boolean): Promise<void> {
	const settings = loadConfig().token!;
	const answer: OpenerAnswer = { opened: 0, errors: [] };
	for (let index = 0; index < times; index++) {
		try {
			const token = await Token.open(settings);
			try {
				if (generate) generateTokenKeys(token, 1, new Date(), index);
			} finally {
				token.close();
			}
			answer.opened++;
		} catch (err) {
			answer.errors.push((err as Error).message);
		}
	}
	console.log(JSON.stringify(answer));
}

void main(Number(process.argv[2]), process.argv[3] === "generate");
