/**
 * C2SP tlog checkpoints (https://c2sp.org/tlog-checkpoint): the note text `<origin>\n<tree
 * size>\n<base64 root hash>\n`, signed as a signed note (src/tlog/note.ts) by the log's key,
 * whose name is the origin.
 */
import { HASH_BYTES } from "./merkle";
import { NoteError, openNote, signNote, type NoteSigner, type NoteVerifier } from "./note";

export interface Checkpoint {
	origin: string;
	size: number;
	root: Buffer;
}

export function checkpointText({ origin, size, root }: Checkpoint): string {
	return `${origin}\n${size}\n${root.toString("base64")}\n`;
}

/** The checkpoint a note's text holds (extension lines are ignored). */
export function parseCheckpointText(text: string): Checkpoint {
	const [origin, size, root] = text.split("\n");
	const hash = Buffer.from(root ?? "", "base64");
	if (
		!origin ||
		!/^(0|[1-9][0-9]*)$/.test(size ?? "") ||
		hash.length !== HASH_BYTES ||
		hash.toString("base64") !== root
	)
		throw new NoteError(
			"malformed checkpoint: expected origin, tree size and base64 root lines",
		);
	return { origin, size: Number(size), root: hash };
}

/** The signed checkpoint note. */
export function signCheckpoint(checkpoint: Checkpoint, signer: NoteSigner): string {
	return signNote(checkpointText(checkpoint), signer);
}

/** Opens a signed checkpoint with the log's key; its origin must be the key's name. */
export function openCheckpoint(note: string, verifier: NoteVerifier): Checkpoint {
	const checkpoint = parseCheckpointText(openNote(note, [verifier]).text);
	if (checkpoint.origin !== verifier.name)
		throw new NoteError(
			`checkpoint of "${checkpoint.origin}", not of the log "${verifier.name}"`,
		);
	return checkpoint;
}
