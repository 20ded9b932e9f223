/**
 * Signed notes and checkpoints (src/tlog/note.ts, src/tlog/checkpoint.ts) against the published
 * examples: the C2SP signed-note spec's example key and note, and golang.org/x/mod/sumdb/note's
 * note_test.go (its PeterNeumann signer key, whose note this code must reproduce byte for byte,
 * since Ed25519 signatures are deterministic, and its two-signature note). What these accept,
 * Go's note.Open accepts; what they make, it verifies.
 */
import {
	checkpointText,
	openCheckpoint,
	parseCheckpointText,
	signCheckpoint,
} from "../../src/tlog/checkpoint";
import {
	generateNoteSigner,
	noteKeyId,
	openNote,
	parseSignerKey,
	parseVerifierKey,
	signerKeyString,
	signNote,
	verifierKeyString,
} from "../../src/tlog/note";

/** c2sp.org/signed-note, "Example". */
const SPEC_KEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const SPEC_NOTE =
	"This is an example message.\n\n" +
	"\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

/** golang.org/x/mod/sumdb/note/note_test.go: TestNewVerifier, TestNewSigner, TestSign, TestOpen. */
const PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const GO_TEXT =
	"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG =
	"\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG =
	"\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

describe("signed notes (src/tlog/note.ts)", () => {
	test("the C2SP spec's example note verifies with its example key, and fails once altered", () => {
		const key = parseVerifierKey(SPEC_KEY);
		expect(key.keyId).toBe(0x530d903a);
		expect(verifierKeyString(key)).toBe(SPEC_KEY);
		expect(openNote(SPEC_NOTE, [key])).toEqual({
			text: "This is an example message.\n",
			verifiedBy: ["example.com/foo"],
		});
		expect(() =>
			openNote(SPEC_NOTE.replace("example message", "exemplary message"), [key]),
		).toThrow(/does not verify/);
	});

	test("Go's signer key signs Go's note byte for byte, and its verifier key is the one derived from it", () => {
		const signer = parseSignerKey(PETER_SKEY);
		expect(signerKeyString(signer)).toBe(PETER_SKEY);
		expect(verifierKeyString(signer)).toBe(PETER_VKEY);
		expect(noteKeyId("PeterNeumann", signer.publicKey)).toBe(0xc74f20a3);
		expect(signNote(GO_TEXT, signer)).toBe(`${GO_TEXT}\n${PETER_SIG}`);
	});

	test("Go's two-signature note opens with either key, ignores the unknown one, and is refused with none", () => {
		const note = `${GO_TEXT}\n${PETER_SIG}${ENOCH_SIG}`;
		expect(openNote(note, [parseVerifierKey(PETER_VKEY)]).verifiedBy).toEqual(["PeterNeumann"]);
		expect(
			openNote(note, [parseVerifierKey(PETER_VKEY), parseVerifierKey(ENOCH_VKEY)]).verifiedBy,
		).toEqual(["PeterNeumann", "EnochRoot"]);
		expect(() => openNote(note, [parseVerifierKey(SPEC_KEY)])).toThrow(
			/no signature by a known key/,
		);
	});

	test("mangled keys are refused, as Go's TestNewVerifier mangles them", () => {
		const bytes = [...PETER_VKEY];
		for (let i = 0; i < bytes.length; i++) {
			const bent = [...bytes];
			bent[i] = String.fromCharCode(bent[i].charCodeAt(0) + 1);
			expect(() => parseVerifierKey(bent.join(""))).toThrow();
		}
		expect(() => parseVerifierKey(PETER_VKEY.slice(0, -1))).toThrow();
		expect(() =>
			parseVerifierKey("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
		).toThrow();
	});
});

describe("checkpoints (src/tlog/checkpoint.ts)", () => {
	const root = Buffer.from("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=", "base64");

	test("the C2SP tlog-checkpoint example's text is what checkpointText writes, and parses back", () => {
		const text =
			"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
		expect(
			checkpointText({ origin: "example.com/behind-the-sofa", size: 20852163, root }),
		).toBe(text);
		expect(parseCheckpointText(text)).toEqual({
			origin: "example.com/behind-the-sofa",
			size: 20852163,
			root,
		});
	});

	test("a signed checkpoint opens with its log's verifier key only, and a rewritten size is refused", () => {
		const signer = generateNoteSigner("record-signer/test-log");
		const note = signCheckpoint({ origin: signer.name, size: 42, root }, signer);
		const verifier = parseVerifierKey(verifierKeyString(signer));
		expect(openCheckpoint(note, verifier)).toEqual({ origin: signer.name, size: 42, root });
		expect(() => openCheckpoint(note.replace("\n42\n", "\n43\n"), verifier)).toThrow(
			/does not verify/,
		);
		const other = generateNoteSigner("record-signer/test-log");
		expect(() => openCheckpoint(note, other)).toThrow(/no signature by a known key/);
		expect(() => parseCheckpointText("origin\n042\nCsUY\n")).toThrow(/malformed checkpoint/);
	});
});
