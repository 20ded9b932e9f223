/**
 * One keyring process per embedded store. NeDB keeps a whole collection in memory and
 * rewrites its file when it loads it, so a second process opening the same `DATA_DIR`
 * would both lose the first one's writes and grant leases from its own copy of the LRU
 * queue. The lock is a file, `DATA_DIR/keyring.lock`, created exclusively (`wx`) and
 * naming its holder; a lock whose process is gone is stale and taken over.
 */
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { sleep } from "../clock";

export const LOCK_FILE = "keyring.lock";

export interface LockHolder {
	pid: number;
	nodeID: string;
	hostname: string;
	since: string;
	/** Tells two holders in one process apart, and a lock we hold from one we found. */
	token: string;
}

export class StoreLockedError extends Error {
	constructor(readonly file: string, readonly holder: LockHolder | null) {
		super(holder
			? `The keyring store ${path.dirname(file)} is in use by another keyring (pid ${holder.pid} on ${holder.hostname}, node ${holder.nodeID}, since ${holder.since}). ` +
				"Two keyrings must never grant leases from one store: stop that one first, or read the store through it over NATS (TRANSPORTER)."
			: `The keyring store ${path.dirname(file)} is locked by ${file}, which cannot be read; remove it only if no keyring runs on this store.`);
		this.name = "StoreLockedError";
	}
}

/** Locks held by keyrings of this process, by file: a second one in-process is refused too. */
const heldHere = new Map<string, string>();

function readHolder(file: string): LockHolder | null {
	try {
		const holder = JSON.parse(fs.readFileSync(file, "utf8")) as LockHolder;
		return typeof holder.pid === "number" && typeof holder.token === "string" ? holder : null;
	} catch {
		return null;
	}
}

function processAlive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch (err) {
		// EPERM: it exists but belongs to someone else.
		return (err as NodeJS.ErrnoException).code === "EPERM";
	}
}

/** A lock left by a process that no longer runs (kill -9, power loss), or by this process's stopped keyring. */
function isStale(holder: LockHolder, hostname: string): boolean {
	if (holder.hostname !== hostname) return false; // another machine's pid means nothing here
	if (holder.pid === process.pid) return !heldHere.has(holder.token);
	return !processAlive(holder.pid);
}

export interface StoreLock {
	readonly file: string;
	readonly holder: LockHolder;
	/** Removes the lock if it is still ours. Idempotent. */
	release(): void;
}

/**
 * Takes `DATA_DIR/keyring.lock` or throws a StoreLockedError naming the live holder.
 * A stale lock is replaced; two processes replacing the same stale lock at once both
 * re-read it after writing, and only the one whose token is in the file keeps going.
 */
export async function acquireStoreLock(dataDir: string, nodeID: string, hostname: string, settleMs = 100): Promise<StoreLock> {
	fs.mkdirSync(dataDir, { recursive: true });
	const file = path.join(dataDir, LOCK_FILE);
	const holder: LockHolder = { pid: process.pid, nodeID, hostname, since: new Date().toISOString(), token: randomUUID() };
	let replacedStale = false;
	for (let attempt = 0; ; attempt++) {
		try {
			fs.writeFileSync(file, JSON.stringify(holder), { flag: "wx", mode: 0o644 });
			break;
		} catch (err) {
			if ((err as NodeJS.ErrnoException).code !== "EEXIST" || attempt >= 3) throw err;
		}
		const found = readHolder(file);
		if (!found) {
			// Being written this very moment, or garbage: look once more before giving up.
			await sleep(settleMs);
			const again = readHolder(file);
			if (!again) throw new StoreLockedError(file, null);
			if (!isStale(again, hostname)) throw new StoreLockedError(file, again);
			continue;
		}
		if (!isStale(found, hostname)) throw new StoreLockedError(file, found);
		// Read and removed back to back: the window in which another taker can slip in is tiny,
		// and the check after writing catches it.
		if (readHolder(file)?.token === found.token) fs.rmSync(file, { force: true });
		replacedStale = true;
	}
	heldHere.set(holder.token, file);
	if (replacedStale) {
		await sleep(settleMs);
		const now = readHolder(file);
		if (now?.token !== holder.token) {
			heldHere.delete(holder.token);
			throw new StoreLockedError(file, now);
		}
	}
	return {
		file,
		holder,
		release() {
			if (!heldHere.delete(holder.token)) return;
			if (readHolder(file)?.token === holder.token) fs.rmSync(file, { force: true });
		}
	};
}
