/**
 * Digests that bind a batch's contents to the statements about it (docs/deploy.md, "Who may
 * act on the bus"): the dispatch ticket names its records by `recordsDigest`, and the lease
 * token names the record ids of each piece the signer stores by `idChunkDigests`, so records
 * can check, offline, that signatures stored under a lease are for that batch's records.
 *
 * SHA-256 over each string's length and UTF-16 code units (`<length>:<text>`, hashed as
 * UTF-16LE): no separator a record's data could forge, and no two strings with one encoding
 * (UTF-8 would fold lone surrogates together). A piece's signatures are hashed as UTF-8, half
 * the bytes: their JWS and times are ASCII, and their record ids are bound exactly by the
 * ids digest records checks beside the proof.
 *
 * A batch's records and a piece's signatures cross the services of one process by reference.
 * `sealRecords` and `piecesOf` remember the digest of the array they were given, by its
 * identity, so a service of the same process checking it does not hash it again. Only this
 * process's own code holds such an array: whatever arrives over the bus is a new array, never
 * found here, and is hashed. The arrays are not frozen: Moleculer's validator writes each field
 * it checks back in place, and on a frozen object that write takes V8's slow path, 13 times
 * slower over 300 records (300 µs against 22 µs per call, two calls per batch): that alone was
 * most of what the bus checks cost. The services keep to a rule instead: an array handed to a
 * call is not changed afterwards (the planner makes a new array for a batch's retry).
 */
import { createHash } from "node:crypto";
import type { RecordPayload } from "../contract";
import {
	GROUP_DIGEST_BYTES,
	pieceDigestOfGroups,
	SIGNATURE_GROUP,
	signatureGroupDigests,
} from "./signature-groups";

/** Signatures per `records.storeSignatures` call: the pieces a batch is stored in (src/signer/signer.ts). */
export const TRANSFER_CHUNK = 2_000;

/** Version 1's piece digest (signaturesDigest): the other digests are FieldWriter's. */
const utf8Digest = (encoded: string) =>
	createHash("sha256").update(encoded, "utf8").digest("base64url");
const field = (text: string) => `${text.length}:${text}`;

/** Digests of sealed records, by the array's identity. */
const sealed = new WeakMap<object, string>();

/**
 * Fields written as UTF-16LE `<length>:<text>` into one buffer kept for the next digest, and
 * hashed from it: the same bytes as hashing the concatenated string, with no string built. A
 * batch's concatenation was most of what the checks allocate (about 0.4 KB a record over the
 * ticket, its id digests and records' check of them); this costs a little more time (55 against
 * 45 µs for 300 records, the SHA-256 included) and allocates nothing, which spares the event
 * loop about nine young-generation collections in a 300,000-record run. One thread, never
 * re-entered.
 */
class FieldWriter {
	private buffer = Buffer.allocUnsafe(64 * 1024);
	private length = 0;

	field(text: string): void {
		const n = text.length;
		const digits = n < 10 ? 1 : n < 100 ? 2 : String(n).length;
		const end = this.length + (digits + 1 + n) * 2;
		if (end > this.buffer.length) {
			const grown = Buffer.allocUnsafe(Math.max(end, this.buffer.length * 2));
			this.buffer.copy(grown, 0, 0, this.length);
			this.buffer = grown;
		}
		const buffer = this.buffer;
		let at = this.length;
		if (digits === 1) buffer[at++] = 48 + n;
		else if (digits === 2) {
			buffer[at++] = 48 + ((n / 10) | 0);
			buffer[at++] = 0;
			buffer[at++] = 48 + (n % 10);
		} else {
			const decimal = String(n);
			for (let i = 0; i < digits; i++) {
				if (i) buffer[at++] = 0;
				buffer[at++] = decimal.charCodeAt(i);
			}
		}
		buffer[at++] = 0;
		buffer[at++] = 58; // ":"
		buffer[at++] = 0;
		// Code unit by code unit, little-endian: faster than Buffer#write for a record's short fields.
		for (let i = 0; i < n; i++) {
			const unit = text.charCodeAt(i);
			buffer[at++] = unit & 0xff;
			buffer[at++] = unit >> 8;
		}
		this.length = at;
	}

	/** SHA-256 of what was written since the last digest, base64url; the writer starts over. */
	digest(): string {
		const value = createHash("sha256")
			.update(this.buffer.subarray(0, this.length))
			.digest("base64url");
		this.length = 0;
		return value;
	}
}

const writer = new FieldWriter();

function recordsDigestOf(records: readonly RecordPayload[]): string {
	for (const record of records) {
		writer.field(record.id);
		writer.field(record.data);
	}
	return writer.digest();
}

function encodeSignatures(signatures: ReadonlyArray<Signature>): string {
	let encoded = "";
	for (const s of signatures) encoded += field(s.recordId) + field(s.jws) + field(s.signedAt);
	return encoded;
}

/** The batch's records, ids and data, in order. */
export function recordsDigest(records: readonly RecordPayload[]): string {
	return sealed.get(records) ?? recordsDigestOf(records);
}

/** Remembers the digest of a batch's records, for checks in this process. */
export function sealRecords(records: readonly RecordPayload[]): string {
	const value = recordsDigestOf(records);
	sealed.set(records, value);
	return value;
}

/** The ids of one stored piece, in order. */
export function idsDigest(ids: readonly string[]): string {
	for (const id of ids) writer.field(id);
	return writer.digest();
}

/** One digest per TRANSFER_CHUNK ids of the batch, in order: one per piece its signer stores. */
export function idChunkDigests(ids: readonly string[]): string[] {
	const digests: string[] = [];
	for (let i = 0; i < ids.length; i += TRANSFER_CHUNK)
		digests.push(idsDigest(ids.slice(i, i + TRANSFER_CHUNK)));
	return digests;
}

type Signature = { recordId: string; jws: string; signedAt: string };

/** One stored piece's signatures in one digest: what an older signer's store proof (version 1) signs. */
export function signaturesDigest(signatures: ReadonlyArray<Signature>): string {
	return utf8Digest(encodeSignatures(signatures));
}

/** Version 2 digests (signature-groups.ts) of sealed pieces, by identity. */
const sealedGroups = new WeakMap<object, string>();

/** A piece's version 2 digest: what the holder's store proof signs (signature-groups.ts). */
export function signaturesDigestV2(signatures: ReadonlyArray<Signature>): string {
	return (
		sealedGroups.get(signatures) ??
		pieceDigestOfGroups(
			signatureGroupDigests(signatures.length, (i) => {
				const s = signatures[i];
				return [s.recordId, s.jws, s.signedAt];
			}),
		)
	);
}

/**
 * A batch's signatures cut into the pieces its signer stores (TRANSFER_CHUNK each), each piece's
 * version 2 digest remembered from `groups`, the group digests the signing threads made of the
 * whole batch (in order), when given.
 */
export function piecesOf(
	signatures: readonly Signature[],
	groups: Uint8Array | null,
): Signature[][] {
	const pieces: Signature[][] = [];
	const groupsPerPiece = TRANSFER_CHUNK / SIGNATURE_GROUP;
	for (let p = 0; p * TRANSFER_CHUNK < signatures.length; p++) {
		const piece = signatures.slice(p * TRANSFER_CHUNK, (p + 1) * TRANSFER_CHUNK);
		if (groups) {
			const from = p * groupsPerPiece * GROUP_DIGEST_BYTES;
			const to = from + Math.ceil(piece.length / SIGNATURE_GROUP) * GROUP_DIGEST_BYTES;
			if (to > groups.length) throw new Error("fewer group digests than signatures");
			sealedGroups.set(piece, pieceDigestOfGroups(groups.subarray(from, to)));
		}
		pieces.push(piece);
	}
	return pieces;
}
