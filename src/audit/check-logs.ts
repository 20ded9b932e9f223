/**
 * The rules `signature-log` and `lease-log` (docs/design.md §9.2): each log's tree is recomputed
 * from its stored leaf hashes (the store's tiles, or an export's log file), every checkpoint is
 * opened with the log's verifier key and its root compared with the recomputed one, and each
 * stored row is rebuilt into its leaf (§8.4) and compared with the leaf the log holds at its
 * index, up to the last checkpoint. So a row deleted, altered, moved or added after a checkpoint
 * is named, and a log whose hashes were rewritten to match no longer matches its checkpoints.
 * A checkpoint kept elsewhere (`--checkpoint FILE`) is checked the same way: whoever can edit
 * the store can edit the checkpoints beside it, but not one a client saved.
 */
import type { DatabaseSync } from "node:sqlite";
import type { LogName } from "../contract";
import { parseCheckpointText, openCheckpoint, type Checkpoint } from "../tlog/checkpoint";
import { leaseEndLeaf, leaseGrantLeaf, signatureLeaf } from "../tlog/leaves";
import { foldSubtrees, hashChildren, leafHash, type HashBytes } from "../tlog/merkle";
import { parseVerifierKey, type NoteVerifier } from "../tlog/note";
import type { LeaseDoc, SignatureDoc } from "../contract";
import { yieldToEventLoop, type AuditDb } from "./audit-db";
import type { FindingList, RuleName } from "./checks";
import { LeafSum } from "./leaf-sums";
import { holdsLog, leafHashes, leafHashTexts, storedCheckpoints } from "./log-tables";

export interface LogAuditOptions {
	/** Each log's note verifier key (`<origin>+<key id>+<base64>`), where known. */
	logKeys?: Partial<Record<LogName, string | null>>;
	/** Signed checkpoints kept outside the store (a client's); each goes to the log of its origin. */
	checkpoints?: string[];
}

/**
 * The signature rows below `size` summed by the audit's threads under `key`
 * (src/audit/leaf-sums.ts), to hold against the same sum of the log's first `size` leaves.
 */
export interface SummedRows {
	key: Buffer;
	size: number;
	/** The threads' sum, once they are done; null if they could not finish. */
	sum: Promise<LeafSum | null>;
}

/** What the audit found of one log. */
export interface LogSummary {
	log: LogName;
	/** Leaves the log holds. */
	size: number;
	/** Checkpoints read (stored and given), and the size of the last one that verified. */
	checkpoints: number;
	checkpointSize: number;
	/** Entries after the last checkpoint (or numbered and not yet hashed): not yet signed for, not judged. */
	pending: number;
}

/** A stored row as its leaf: the entry's name and its leaf hash (null: no row, or one that cannot be a leaf). */
interface EntryRow {
	index: number;
	entry: string;
	hash: Buffer | null;
	/** Why `hash` is null. */
	missing?: string;
	/** The leaf that logs this entry already: it is logged twice. */
	twice?: number;
}

interface LogSpec {
	log: LogName;
	rule: RuleName;
	/** The rows that claim a leaf at `from` or past it, in index order. */
	entries(sql: DatabaseSync, from: number): Iterable<EntryRow>;
	/** Rows that should be in the log and claim no leaf: added after the fact. */
	unlogged(sql: DatabaseSync): Iterable<string>;
}

const SIGNATURE_COLUMNS = "recordId, keyId, batchId, leaseId, jws, signedAt";
const LEASE_COLUMNS = `l.leaseId, l.keyId, l.holder, l.grantSeq, l.grantedAt, l.expiresAt, l.endSeq, l.endedAt, l."end"`;

const SPECS: LogSpec[] = [
	{
		log: "signatures",
		rule: "signature-log",
		*entries(sql, from) {
			const rows = sql
				.prepare(
					`SELECT ${SIGNATURE_COLUMNS}, logIndex FROM rec.signatures WHERE logIndex IS NOT NULL${from ? " AND logIndex >= ?" : ""} ORDER BY logIndex`,
				)
				.iterate(...(from ? [from] : [])) as Iterable<SignatureDoc & { logIndex: number }>;
			for (const row of rows)
				yield {
					index: Number(row.logIndex),
					entry: `signature of ${row.recordId}`,
					hash: leafHash(signatureLeaf(row)),
				};
		},
		*unlogged(sql) {
			for (const row of sql
				.prepare("SELECT recordId FROM rec.signatures WHERE logIndex IS NULL")
				.iterate())
				yield `signature of ${String(row.recordId)}`;
		},
	},
	{
		log: "leases",
		rule: "lease-log",
		*entries(sql) {
			const rows = sql
				.prepare(
					`SELECT e.idx, e.entry, ${LEASE_COLUMNS} FROM kr.lease_log_entries e LEFT JOIN kr.leases l ON l.leaseId = substr(e.entry, instr(e.entry, ':') + 1) ORDER BY e.idx, l.rowid`,
				)
				.iterate() as Iterable<LeaseDoc & { idx: number; entry: string }>;
			let last = -1;
			// Each name's leaf: the names are not unique in the table (src/tlog/sqlite-log.ts), the log holds each once.
			const logged = new Map<string, number>();
			for (const row of rows) {
				const index = Number(row.idx);
				// An import may hold a lease twice: its first row is the one judged (the lease rules name the twin).
				if (index === last) continue;
				last = index;
				const entry = String(row.entry);
				const first = logged.get(entry);
				if (first !== undefined) {
					yield { index, entry, hash: null, twice: first };
					continue;
				}
				logged.set(entry, index);
				const isEnd = entry.startsWith("end:");
				let hash: Buffer | null = null;
				let missing: string | undefined;
				if (row.leaseId == null) missing = "its lease row is gone";
				else if (isEnd && row.end == null) missing = "its lease has no end any more";
				else hash = leafHash(isEnd ? leaseEndLeaf(row) : leaseGrantLeaf(row));
				yield { index, entry, hash, missing };
			}
		},
		*unlogged(sql) {
			// Joined, not NOT EXISTS: SQLite indexes the names for a join by itself, and they have no index.
			for (const row of sql
				.prepare(
					`SELECT DISTINCT l.leaseId, g.idx IS NULL AS grantMissing, (l."end" IS NOT NULL AND e.idx IS NULL) AS endMissing FROM kr.leases l ` +
						`LEFT JOIN kr.lease_log_entries g ON g.entry = 'grant:' || l.leaseId LEFT JOIN kr.lease_log_entries e ON e.entry = 'end:' || l.leaseId`,
				)
				.iterate()) {
				if (row.grantMissing) yield `grant:${String(row.leaseId)}`;
				if (row.endMissing) yield `end:${String(row.leaseId)}`;
			}
		},
	},
];

/**
 * The right edge of an RFC 6962 tree grown a leaf at a time: its root at any size, in constant
 * memory. Hashes as latin1 strings, as the append path keeps them (src/tlog/merkle.ts).
 */
class Edge {
	private readonly nodes: Array<{ level: number; hash: HashBytes }> = [];
	size = 0;

	push(hash: HashBytes): void {
		let level = 0;
		while (this.nodes.length && this.nodes[this.nodes.length - 1].level === level) {
			hash = hashChildren(this.nodes.pop()!.hash, hash);
			level++;
		}
		this.nodes.push({ level, hash });
		this.size++;
	}

	root(): Buffer {
		return foldSubtrees(this.nodes.map((node) => Buffer.from(node.hash, "latin1")));
	}
}

interface ReadCheckpoint {
	checkpoint: Checkpoint;
	publishedAt: string;
}

/** The checkpoints of a log, stored and given, opened with its key: the ones that verify, by size. */
function readCheckpoints(
	sql: DatabaseSync,
	spec: LogSpec,
	verifier: NoteVerifier | null,
	given: string[],
	findings: FindingList,
): { valid: ReadCheckpoint[]; read: number } {
	const notes = storedCheckpoints(sql, spec.log);
	for (const note of given) notes.push({ size: -1, note, publishedAt: "given" });
	if (!verifier) {
		if (notes.length)
			findings.add(
				spec.rule,
				`No verifier key for the ${spec.log} log: its ${notes.length} checkpoints cannot be checked`,
				{ log: spec.log },
			);
		return { valid: [], read: notes.length };
	}
	const valid: ReadCheckpoint[] = [];
	for (const { note, publishedAt } of notes) {
		try {
			valid.push({ checkpoint: openCheckpoint(note, verifier), publishedAt });
		} catch (err) {
			findings.add(
				spec.rule,
				`The ${spec.log} log's checkpoint (${publishedAt}) does not verify with its key ${verifier.name}: ${(err as Error).message}`,
				{ log: spec.log },
			);
		}
	}
	valid.sort((a, b) => a.checkpoint.size - b.checkpoint.size);
	return { valid, read: notes.length };
}

/** The checkpoints given that belong to `origin`. */
function givenFor(origin: string | null, checkpoints: string[]): string[] {
	return checkpoints.filter((note) => {
		try {
			return (
				parseCheckpointText(note.slice(0, note.lastIndexOf("\n\n") + 1)).origin === origin
			);
		} catch {
			return false;
		}
	});
}

async function checkLog(
	db: AuditDb,
	spec: LogSpec,
	options: LogAuditOptions,
	findings: FindingList,
	summed?: SummedRows,
): Promise<LogSummary | null> {
	const sql = db.sql;
	const key = options.logKeys?.[spec.log] ?? null;
	let verifier: NoteVerifier | null = null;
	try {
		verifier = key ? parseVerifierKey(key) : null;
	} catch (err) {
		findings.add(
			spec.rule,
			`The ${spec.log} log's verifier key is unusable: ${(err as Error).message}`,
		);
	}
	const given = givenFor(verifier?.name ?? null, options.checkpoints ?? []);
	if (!holdsLog(sql, spec.log)) {
		if (given.length)
			findings.add(
				spec.rule,
				`A checkpoint of the ${spec.log} log was given, but this source holds no ${spec.log} log`,
				{ log: spec.log },
			);
		return null;
	}
	const { valid, read } = readCheckpoints(sql, spec, verifier, given, findings);

	// The tree from the stored leaf hashes, its root compared at every checkpoint's size.
	const edge = new Edge();
	let next = 0;
	const checkRoot = () => {
		while (next < valid.length && valid[next].checkpoint.size === edge.size) {
			const { checkpoint, publishedAt } = valid[next++];
			if (!edge.root().equals(checkpoint.root))
				findings.add(
					spec.rule,
					`The ${spec.log} log's first ${checkpoint.size} leaves do not hash to the root of its checkpoint of ${checkpoint.size} (${publishedAt}): the log itself was rewritten`,
					{ log: spec.log, checkpoint: String(checkpoint.size) },
				);
		}
	};
	const badTile = (tile: number) =>
		findings.add(
			spec.rule,
			`The ${spec.log} log's tile ${tile} is malformed: the log ends before it`,
			{
				log: spec.log,
			},
		);
	checkRoot();
	// The same sum of the leaves as the threads made of the rows, when they made one.
	const leafSum = summed ? new LeafSum(summed.key) : null;
	for (const hash of leafHashTexts(sql, spec.log, badTile)) {
		if (leafSum && edge.size < summed!.size) leafSum.add(edge.size, hash);
		edge.push(hash);
		checkRoot();
		if (edge.size % 65_536 === 0) await yieldToEventLoop();
	}
	const size = edge.size;
	for (const { checkpoint, publishedAt } of valid.slice(next))
		findings.add(
			spec.rule,
			// The log alone cannot tell a cut from an export older than the checkpoint: both are said.
			`The ${spec.log} log holds ${size} leaves, fewer than its checkpoint of ${checkpoint.size} (${publishedAt}): leaves ${size} to ${checkpoint.size - 1} are missing, cut from its end, or this is an export taken before that checkpoint`,
			{ log: spec.log, checkpoint: String(checkpoint.size) },
		);
	const checkpointSize = valid.length ? valid[valid.length - 1].checkpoint.size : 0;
	const judged = Math.min(checkpointSize, size);

	// Every row below the log's size is its leaf, if the sums agree: only the rows past it are
	// read, in order. Otherwise the rows against the leaves one by one, which names each difference.
	const rowSum = leafSum && summed!.size === size ? await summed!.sum : null;
	const matched = rowSum?.equals(leafSum!) ? size : 0;
	const mismatched = new Map<string, EntryRow>();
	let unhashed = size;
	const hashes = leafHashes(sql, spec.log);
	let at = matched;
	let hashAt: IteratorResult<Buffer, void> = matched
		? { done: true, value: undefined }
		: hashes.next();
	const missing = (index: number) =>
		findings.add(
			spec.rule,
			`Leaf ${index} of the ${spec.log} log (in its checkpoint of ${checkpointSize}) has no row: its entry was deleted or moved`,
			{ log: spec.log, index: String(index) },
		);
	for (const row of spec.entries(sql, matched)) {
		// Rows are numbered as they are stored and hashed just after (src/tlog/signature-hasher.ts):
		// on a live store the next few indexes past the log are rows on their way in, each once.
		if (row.index >= size) {
			if (row.index === unhashed) unhashed++;
			else
				findings.add(
					spec.rule,
					`The ${row.entry} claims leaf ${row.index}, past the ${spec.log} log's ${size} leaves and not the next one: it was added`,
					{ log: spec.log, entry: row.entry, index: String(row.index) },
				);
			continue;
		}
		// Logged after the last checkpoint: nothing signed vouches for it yet.
		if (row.index >= judged) continue;
		if (row.index < at) {
			findings.add(
				spec.rule,
				`The ${row.entry} claims leaf ${row.index}, which another row holds: it was added`,
				{ log: spec.log, entry: row.entry, index: String(row.index) },
			);
			continue;
		}
		for (; at < row.index; at++, hashAt = hashes.next()) missing(at);
		const stored = hashAt.value as Buffer;
		if (row.twice !== undefined)
			findings.add(
				spec.rule,
				`The ${row.entry} is logged twice, at leaves ${row.twice} and ${row.index} of the ${spec.log} log`,
				{ log: spec.log, entry: row.entry, index: String(row.index) },
			);
		else if (!row.hash || !row.hash.equals(stored)) {
			if (row.hash && mismatched.size < 1_000_000)
				mismatched.set(row.hash.toString("base64"), row);
			else
				findings.add(
					spec.rule,
					`The ${row.entry} is not leaf ${row.index} of the ${spec.log} log any more: ${row.missing ?? "its row was altered"}`,
					{ log: spec.log, entry: row.entry, index: String(row.index) },
				);
		}
		at++;
		hashAt = hashes.next();
	}
	for (; at < judged; at++) missing(at);
	for (const entry of spec.unlogged(sql))
		findings.add(spec.rule, `The ${entry} is in no leaf of the ${spec.log} log: it was added`, {
			log: spec.log,
			entry,
		});

	// A mismatched row whose leaf is elsewhere in the log was moved; otherwise it was altered.
	if (mismatched.size) {
		let index = 0;
		for (const hash of leafHashes(sql, spec.log)) {
			if (index >= judged) break;
			const row = mismatched.get(hash.toString("base64"));
			if (row && row.index !== index) {
				findings.add(
					spec.rule,
					`The ${row.entry} is leaf ${index} of the ${spec.log} log but claims leaf ${row.index}: it was moved`,
					{ log: spec.log, entry: row.entry, index: String(row.index) },
				);
				mismatched.delete(hash.toString("base64"));
			}
			index++;
		}
		for (const row of mismatched.values())
			findings.add(
				spec.rule,
				`The ${row.entry} is not leaf ${row.index} of the ${spec.log} log any more: its row was altered`,
				{ log: spec.log, entry: row.entry, index: String(row.index) },
			);
	}
	return {
		log: spec.log,
		size,
		checkpoints: read,
		checkpointSize,
		pending: unhashed - judged,
	};
}

/** Audits every log the source holds; a log it does not hold (an older store, MongoDB) is not in the answer. */
export async function checkLogs(
	db: AuditDb,
	options: LogAuditOptions,
	findings: FindingList,
	signatureRows?: SummedRows,
): Promise<LogSummary[]> {
	const summaries: LogSummary[] = [];
	for (const spec of SPECS) {
		const summed = spec.log === "signatures" ? signatureRows : undefined;
		const summary = await checkLog(db, spec, options, findings, summed);
		if (summary) summaries.push(summary);
	}
	return summaries;
}
