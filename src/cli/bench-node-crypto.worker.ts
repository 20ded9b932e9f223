/**
 * The benchmark's node:crypto floor: the same detached JWS as the signing threads make with
 * libsodium (src/signer/sign.worker.ts), made with node:crypto's Ed25519 (OpenSSL), as the
 * signer did before. Only `npm run bench` uses it, to show what libsodium gained; the system
 * never signs with it. Erasable TypeScript with `.ts` imports, like the signing thread.
 */
import type { KeyObject } from "node:crypto";
import { nodeCryptoSignDetached, protectedHeader } from "../signer/jws.ts";

export interface NodeCryptoTask {
	key: KeyObject;
	keyId: string;
	/** JSON of `[id, data]` pairs. */
	records: string;
}

export default function sign(task: NodeCryptoTask): number {
	const header = protectedHeader(task.keyId);
	const records = JSON.parse(task.records) as Array<[string, string]>;
	const jws = new Array<string>(records.length);
	for (let i = 0; i < records.length; i++)
		jws[i] = nodeCryptoSignDetached(task.key, header, {
			id: records[i][0],
			data: records[i][1],
		});
	return jws.join("\n").length;
}
