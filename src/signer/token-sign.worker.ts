/**
 * A signing thread of a KEY_STORE=pkcs11 signer (docs/design.md §5.9): it signs in the token,
 * on a session of its own, with the key its chunk's lease names. No key crosses into this
 * thread or this process: a chunk carries the key's reference (label and CKA_ID), the thread
 * finds the token's private key object by its CKA_ID once and keeps the object handle, and each
 * record is one `C_SignInit` and one `C_Sign` (`CKM_EDDSA`) through the module.
 *
 * The session is opened on the thread's first chunk, with the module, token and PIN the pool was
 * made with (`workerData`), and lives as long as the thread. A PKCS#11 session must not be used
 * by two calls at once: a chunk signs without awaiting anything, so piscina's several queued
 * chunks per thread run one after the other. Erasable TypeScript, as src/signer/sign.worker.ts.
 */
import { workerData } from "node:worker_threads";
import {
	CKM_EDDSA,
	Token,
	errorCode,
	type Handle,
	type TokenKeyRef,
	type TokenSettings,
} from "../pkcs11/token.ts";
import { protectedHeader, signingInput } from "./jws.ts";
import { chunkResult, type SignTaskResult } from "./chunk-result.ts";

export interface TokenSignTask {
	/** The token key the chunk's lease grants: its label and CKA_ID. */
	tokenKey: TokenKeyRef;
	keyId: string;
	/** JSON of the chunk's `[id, data]` pairs. */
	records: string;
	/** Epoch ms; the chunk is not started at or after it. */
	deadline: number;
	/** Whether to return the chunk's signature group digests (src/identity/signature-groups.ts). */
	groups?: boolean;
	/** As sign.worker.ts's: the batch and lease the signatures are stored under, for their log leaves. */
	leaves?: { batchId: string; leaseId: string };
}

/** What the pool gives each thread (`workerData`). */
export interface TokenThreadData {
	token: TokenSettings;
}

interface ThreadSession {
	token: Token;
	session: Handle;
	/** Private key object handles by CKA_ID: the token's names for its objects, nothing secret. */
	keys: Map<string, Handle>;
	/** Whether `keys` was filled with every key of the token (once, at the first chunk). */
	listed: boolean;
}

let opening: Promise<ThreadSession> | null = null;
const headers = new Map<string, string>();

async function threadSession(): Promise<ThreadSession> {
	const token = await Token.open((workerData as TokenThreadData).token);
	return { token, session: token.openSession(), keys: new Map(), listed: false };
}

function keyHandle(thread: ThreadSession, ref: TokenKeyRef): Handle {
	const known = thread.keys.get(ref.id);
	if (known) return known;
	// The first key asked for: every key of the token in one search (a search may read every
	// object of the token); a key made since then is searched for alone.
	if (!thread.listed) {
		thread.keys = thread.token.keysById(thread.session, thread.token.pkcs11.CKO_PRIVATE_KEY);
		thread.listed = true;
	}
	const found = thread.keys.get(ref.id) ?? thread.token.findPrivateKey(thread.session, ref);
	if (!found)
		throw new Error(
			`token "${thread.token.settings.tokenLabel}" holds no private key ${ref.label} (CKA_ID ${ref.id})`,
		);
	thread.keys.set(ref.id, found);
	return found;
}

function signChunk(thread: ThreadSession, task: TokenSignTask): SignTaskResult {
	if (Date.now() >= task.deadline) return { jws: null, finishedAt: Date.now() };
	const { api } = thread.token;
	const key = keyHandle(thread, task.tokenKey);
	let header = headers.get(task.keyId);
	if (!header) headers.set(task.keyId, (header = protectedHeader(task.keyId)));
	const mechanism = { mechanism: CKM_EDDSA };
	const signature = Buffer.alloc(64);
	const records = JSON.parse(task.records) as Array<[string, string]>;
	const jws = new Array<string>(records.length);
	for (let i = 0; i < records.length; i++) {
		api.C_SignInit(thread.session, mechanism, key);
		const signed = api.C_Sign(
			thread.session,
			signingInput(header, { id: records[i][0], data: records[i][1] }),
			signature,
		);
		jws[i] = `${header}..${signed.toString("base64url")}`;
	}
	return chunkResult(task, records, jws, Date.now());
}

export default async function sign(task: TokenSignTask): Promise<SignTaskResult> {
	// A thread that could not open its session tries again with its next chunk.
	opening ??= threadSession().catch((err) => {
		opening = null;
		throw err;
	});
	const thread = await opening;
	try {
		return signChunk(thread, task);
	} catch (err) {
		// A handle the token no longer knows (its objects changed under another process): find the key again, once.
		const { pkcs11 } = thread.token;
		const code = errorCode(err);
		if (code !== pkcs11.CKR_KEY_HANDLE_INVALID && code !== pkcs11.CKR_OBJECT_HANDLE_INVALID)
			throw err;
		thread.keys.delete(task.tokenKey.id);
		return signChunk(thread, task);
	}
}
