/**
 * A signing thread of the signer's pool. Written in erasable TypeScript with an explicit
 * `.ts` import so Node 22 can load it straight from the sources under jest, and from dist/
 * as JavaScript otherwise. Nothing but signing happens here, with libsodium.
 *
 * The lease's key reaches this thread once per chunk, as a one-shot hand-off (a 64-byte
 * SharedArrayBuffer: guarded memory cannot cross threads; src/signer/lease-secret.ts says why
 * this and not another way). The thread copies it into its own `sodium_malloc` slot, wipes the
 * hand-off at once, signs the chunk with the slot read-only, and zeroes the slot before the
 * chunk returns; between chunks the slot is zero and `sodium_mprotect_noaccess`. From the copy
 * to the wipe nothing awaits, so no other chunk of this thread can run in between.
 */
import { chunkResult, type SignTaskResult } from "./chunk-result.ts";
import { protectedHeader, sodiumSigner } from "./jws.ts";
import { SECRET_KEY_BYTES, importSodium, type SecureBuffer, type Sodium } from "../sodium.ts";

export interface SignTask {
	/** The lease's 64-byte libsodium secret key, handed off for this chunk only (`LeaseSecret.handOff`); wiped here once copied. */
	secret: SharedArrayBuffer;
	keyId: string;
	/** JSON of the chunk's `[id, data]` pairs: one string clones far faster than many small objects. */
	records: string;
	/** Epoch ms; the chunk is not started at or after it. */
	deadline: number;
	/**
	 * Whether to return the chunk's signature group digests (src/identity/signature-groups.ts),
	 * which the store proofs sign; the chunk then starts at a group boundary of its batch.
	 */
	groups?: boolean;
	/**
	 * The batch and lease the chunk is stored under, to return its signatures' leaf hashes in
	 * the signature log (src/tlog/leaves.ts), which records in this process takes as they are.
	 */
	leaves?: { batchId: string; leaseId: string };
}

export type { SignTaskResult };

/** One header per key id: every signature of a key shares it. */
const headers = new Map<string, string>();

let sodium: Sodium | null = null;
/** This thread's guarded copy of the key: holds it only while a chunk signs. */
let slot: SecureBuffer | null = null;

function signChunk(sodium: Sodium, task: SignTask): SignTaskResult {
	const handOff = Buffer.from(task.secret);
	if (handOff.length !== SECRET_KEY_BYTES) {
		sodium.sodium_memzero(handOff);
		throw new Error(
			`a signing task's key is ${handOff.length} bytes, not a ${SECRET_KEY_BYTES}-byte libsodium Ed25519 secret key`,
		);
	}
	if (Date.now() >= task.deadline) {
		sodium.sodium_memzero(handOff);
		return { jws: null, finishedAt: Date.now() };
	}
	if (!slot) slot = sodium.sodium_malloc(SECRET_KEY_BYTES);
	else sodium.sodium_mprotect_readwrite(slot);
	try {
		handOff.copy(slot);
		sodium.sodium_memzero(handOff);
		sodium.sodium_mprotect_readonly(slot);
		let header = headers.get(task.keyId);
		if (!header) headers.set(task.keyId, (header = protectedHeader(task.keyId)));
		const sign = sodiumSigner(sodium, slot);
		const records = JSON.parse(task.records) as Array<[string, string]>;
		const jws = new Array<string>(records.length);
		for (let i = 0; i < records.length; i++)
			jws[i] = sign(header, { id: records[i][0], data: records[i][1] });
		return chunkResult(task, records, jws, Date.now());
	} finally {
		sodium.sodium_memzero(handOff);
		sodium.sodium_mprotect_readwrite(slot);
		sodium.sodium_memzero(slot);
		sodium.sodium_mprotect_noaccess(slot);
	}
}

export default async function sign(task: SignTask): Promise<SignTaskResult> {
	sodium ??= await importSodium();
	return signChunk(sodium, task);
}

/** For the tests: whether this thread's key slot is empty (zero) between chunks. Reads no key out. */
export async function keySlotIsZero(): Promise<boolean> {
	sodium ??= await importSodium();
	if (!slot) return true;
	sodium.sodium_mprotect_readonly(slot);
	try {
		return sodium.sodium_is_zero(slot, SECRET_KEY_BYTES);
	} finally {
		sodium.sodium_mprotect_noaccess(slot);
	}
}
