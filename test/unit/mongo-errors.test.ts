/**
 * How the MongoDB stores read the driver's errors, checked against the driver's own classes
 * (`mongodb` 7), built the way the driver builds them from a server's reply, without a server:
 * a duplicate key is a refusal, a write concern error never is (even beside duplicates), an
 * unordered insert counts its duplicates and sends again what the driver did not send, a
 * transaction retries what the labels say it may, and a partition is bounded by the socket
 * timeout since driver 7.9 ignores timeoutMS.
 */
import {
	MongoBulkWriteError,
	MongoClient,
	MongoNetworkError,
	MongoNetworkTimeoutError,
	MongoServerError,
	MongoServerSelectionError,
	MongoWriteConcernError,
	type BulkWriteResult,
	type ClientSession,
	type Collection,
	type Document,
	type TopologyDescription,
} from "mongodb";
import {
	bulkWriteFailures,
	clientOptions,
	duplicatesOfUnorderedInsert,
	insertUnordered,
	isDuplicateKey,
	isTransientTransactionError,
	isUnknownCommitResult,
	isUnknownOutcome,
	runTransaction,
	SOCKET_TIMEOUT_MS,
	WRITE_CONCERN_TIMEOUT_MS,
	writeConcernErrorOf,
} from "../../src/store/mongo";

// The driver's internals that turn a server's reply into its errors (lib/bulk/common.js,
// lib/write_concern.js): used as they are, so the shapes below are the driver's, not ours.
// BulkWriteResult and WriteConcernError are classes there; the package exports only their types.
const bulk = require("mongodb/lib/bulk/common") as {
	Batch: new (
		batchType: number,
		originalZeroIndex: number,
	) => { operations: Document[]; originalIndexes: number[] };
	BatchType: { INSERT: number };
	BulkWriteResult: new (bulkResult: object, isOrdered: boolean) => BulkWriteResult;
	WriteConcernError: new (error: { code: number; errmsg: string; errInfo?: Document }) => object;
	mergeBatchResults(batch: object, bulkResult: object, err?: unknown, result?: Document): void;
};
const { throwIfWriteConcernError } = require("mongodb/lib/write_concern") as {
	throwIfWriteConcernError(reply: Document): void;
};
const Result = bulk.BulkWriteResult;

const duplicate = (index: number) => ({
	index,
	code: 11000,
	errmsg: `E11000 duplicate key error collection: signing.signatures index: _id_ dup key: { _id: "r${index}" }`,
});
const wtimeout = {
	code: 64,
	codeName: "WriteConcernTimeout",
	errmsg: "waiting for replication timed out",
	errInfo: { wtimeout: true },
};

/** The error an unordered insertMany of `docs` throws for one command's `reply`, as executeCommands (lib/bulk/common.js) builds it. */
function insertManyError(docs: Document[], reply: Document): MongoBulkWriteError {
	const batch = new bulk.Batch(bulk.BatchType.INSERT, 0);
	batch.operations = docs;
	batch.originalIndexes = docs.map((_, index) => index);
	const bulkResult = {
		ok: 1,
		writeErrors: [],
		writeConcernErrors: [],
		insertedIds: docs.map((doc, index) => ({ index, _id: doc._id })),
		nInserted: 0,
		nUpserted: 0,
		nMatched: 0,
		nModified: 0,
		nRemoved: 0,
		upserted: [],
	};
	let thrown: unknown = null;
	try {
		throwIfWriteConcernError(reply); // what Server.command does with every reply
	} catch (err) {
		thrown = err;
	}
	if (thrown instanceof MongoWriteConcernError) {
		bulk.mergeBatchResults(batch, bulkResult, thrown, undefined);
		const wce = thrown.result.writeConcernError as { errmsg: string; code: number };
		return new MongoBulkWriteError(
			{ message: wce.errmsg, code: wce.code },
			new Result(bulkResult, false),
		);
	}
	bulk.mergeBatchResults(batch, bulkResult, undefined, reply);
	// handleWriteError: the first write error's message and code, every write error.
	const writeErrors = (bulkResult as { writeErrors: Array<{ errmsg?: string; code: number }> })
		.writeErrors;
	return new MongoBulkWriteError(
		{
			message: writeErrors[0].errmsg ?? "write operation failed",
			code: writeErrors[0].code,
			writeErrors: writeErrors as never,
		},
		new Result(bulkResult, false),
	);
}

const docs = (n: number) => Array.from({ length: n }, (_, i) => ({ _id: `r${i}` }));

describe("the driver's write errors", () => {
	test("a unique index's refusal of one write is a duplicate key, and nothing else", () => {
		// InsertOneOperation: `throw new MongoServerError(res.writeErrors[0])`.
		const refused = new MongoServerError({ ...duplicate(0), message: duplicate(0).errmsg });
		expect(isDuplicateKey(refused)).toBe(true);
		expect(writeConcernErrorOf(refused)).toBeNull();
		expect(isUnknownOutcome(refused)).toBe(false);
	});

	test("a duplicate key beside a write concern error is not a refusal: applied or not, it is unconfirmed", () => {
		let thrown: unknown;
		try {
			throwIfWriteConcernError({
				ok: 1,
				n: 0,
				writeErrors: [duplicate(0)],
				writeConcernError: wtimeout,
			});
		} catch (err) {
			thrown = err;
		}
		expect(thrown).toBeInstanceOf(MongoWriteConcernError);
		// The reply's write errors are copied onto the error, with the write concern's code.
		expect(thrown).toMatchObject({
			code: 64,
			writeErrors: [expect.objectContaining({ code: 11000 })],
		});
		expect(isDuplicateKey(thrown)).toBe(false);
		expect(writeConcernErrorOf(thrown)).toEqual({
			code: 64,
			errmsg: "waiting for replication timed out",
		});
		expect(isUnknownOutcome(thrown)).toBe(true);
	});

	test("an unordered insert refused only by the unique index counts what it inserted and which it refused", () => {
		const err = insertManyError(docs(4), {
			ok: 1,
			n: 2,
			writeErrors: [duplicate(1), duplicate(3)],
		});
		expect(err).toBeInstanceOf(MongoBulkWriteError);
		expect(err.code).toBe(11000);
		expect(bulkWriteFailures(err)).toEqual([
			{ index: 1, code: 11000 },
			{ index: 3, code: 11000 },
		]);
		expect(duplicatesOfUnorderedInsert(err)).toEqual({ inserted: 2, duplicateIndexes: [1, 3] });
		expect(isDuplicateKey(err)).toBe(true);
		expect(isUnknownOutcome(err)).toBe(false);
	});

	test("duplicates with a majority timeout in the same reply: the write concern error is not hidden, it is no success", () => {
		const err = insertManyError(docs(4), {
			ok: 1,
			n: 2,
			writeErrors: [duplicate(1), duplicate(3)],
			writeConcernError: wtimeout,
		});
		// The driver's shape: the write concern's code, no top-level write errors; both only in `result`.
		expect(err).toMatchObject({ code: 64, writeErrors: [] });
		expect(err.result.getWriteErrors()).toHaveLength(2);
		expect(err.result.getWriteConcernError()?.code).toBe(64);
		expect(bulkWriteFailures(err)).toHaveLength(2);
		expect(writeConcernErrorOf(err)).toEqual({
			code: 64,
			errmsg: "waiting for replication timed out",
		});
		expect(duplicatesOfUnorderedInsert(err)).toBeNull();
		expect(isDuplicateKey(err)).toBe(false);
		expect(isUnknownOutcome(err)).toBe(true);
	});

	test("a bulk error built from a WriteConcernError keeps it", () => {
		const err = new MongoBulkWriteError(
			new bulk.WriteConcernError(wtimeout) as never,
			new Result(
				{
					ok: 1,
					writeErrors: [],
					writeConcernErrors: [],
					insertedIds: [],
					nInserted: 1,
					nUpserted: 0,
					nMatched: 0,
					nModified: 0,
					nRemoved: 0,
					upserted: [],
				},
				false,
			),
		);
		expect(writeConcernErrorOf(err)).toEqual({
			code: 64,
			errmsg: "waiting for replication timed out",
		});
		expect(duplicatesOfUnorderedInsert(err)).toBeNull();
	});

	test("a duplicate beside another write error is not counted", () => {
		const err = insertManyError(docs(3), {
			ok: 1,
			n: 1,
			writeErrors: [
				duplicate(0),
				{ index: 2, code: 121, errmsg: "Document failed validation" },
			],
		});
		expect(duplicatesOfUnorderedInsert(err)).toBeNull();
		expect(isDuplicateKey(err)).toBe(false);
	});

	test("no reply (a network error or timeout, wrapped by the bulk or not) is an unknown outcome", () => {
		const reset = new MongoNetworkError("connection 3 to 10.0.0.7:27017 closed");
		// Server.decorateCommandError labels a network error outside a transaction retryable.
		reset.addErrorLabel("RetryableWriteError");
		expect(reset.hasErrorLabel("RetryableWriteError")).toBe(true);
		expect(isUnknownOutcome(reset)).toBe(true);
		expect(
			isUnknownOutcome(
				new MongoNetworkTimeoutError("connection 3 to 10.0.0.7:27017 timed out"),
			),
		).toBe(true);
		const wrapped = new MongoBulkWriteError(
			reset,
			new Result(
				{
					ok: 1,
					writeErrors: [],
					writeConcernErrors: [],
					insertedIds: [],
					nInserted: 0,
					nUpserted: 0,
					nMatched: 0,
					nModified: 0,
					nRemoved: 0,
					upserted: [],
				},
				false,
			),
		);
		expect(wrapped.hasErrorLabel("RetryableWriteError")).toBe(true);
		expect(isUnknownOutcome(wrapped)).toBe(true);
		expect(duplicatesOfUnorderedInsert(wrapped)).toBeNull();
	});

	test("a retryable server error counts as unknown unless the driver says no attempt wrote", () => {
		const steppedDown = new MongoServerError({
			message: "Primary stepped down",
			code: 189,
			codeName: "PrimarySteppedDown",
			errorLabels: ["RetryableWriteError"],
		});
		expect(isUnknownOutcome(steppedDown)).toBe(true);
		const noWrites = new MongoServerError({
			message: "not primary",
			code: 10107,
			errorLabels: ["RetryableWriteError", "NoWritesPerformed"],
		});
		expect(isUnknownOutcome(noWrites)).toBe(false);
		// No server was selected: nothing was sent.
		const unreachable = new MongoServerSelectionError(
			"Server selection timed out after 30000 ms",
			{ error: undefined } as unknown as TopologyDescription,
		);
		expect(isUnknownOutcome(unreachable)).toBe(false);
		expect(isUnknownOutcome(new Error("disk full"))).toBe(false);
	});

	test("transaction labels: a transient error runs the transaction again, an unknown commit result commits again", () => {
		const conflict = new MongoServerError({
			message: "Write conflict during plan execution",
			code: 112,
			codeName: "WriteConflict",
			errorLabels: ["TransientTransactionError"],
		});
		expect(conflict.hasErrorLabel("TransientTransactionError")).toBe(true);
		expect(isTransientTransactionError(conflict)).toBe(true);
		expect(isUnknownCommitResult(conflict)).toBe(false);
		expect(isUnknownOutcome(conflict)).toBe(false);

		// commitTransaction labels a write concern error of the commit UnknownTransactionCommitResult.
		const commit = new MongoWriteConcernError({ ok: 1, writeConcernError: wtimeout });
		commit.addErrorLabel("UnknownTransactionCommitResult");
		expect(commit.hasErrorLabel("UnknownTransactionCommitResult")).toBe(true);
		expect(isUnknownCommitResult(commit)).toBe(true);
		expect(isUnknownOutcome(commit)).toBe(true);
		expect(isTransientTransactionError(commit)).toBe(false);

		// MaxTimeMSExpired: the spec forbids committing again.
		const expired = new MongoServerError({
			message: "operation exceeded time limit",
			code: 50,
			codeName: "MaxTimeMSExpired",
			errorLabels: ["UnknownTransactionCommitResult"],
		});
		expect(isUnknownCommitResult(expired)).toBe(false);
		expect(isUnknownOutcome(expired)).toBe(true);
	});
});

describe("insertUnordered", () => {
	/** A collection whose insertMany answers with the driver's errors for the given replies, in turn. */
	function collectionAnswering(replies: Array<(sent: Document[]) => Document>) {
		const calls: Document[][] = [];
		const collection = {
			async insertMany(sent: Document[], options: { ordered?: boolean }) {
				expect(options).toEqual({ ordered: false });
				calls.push(sent);
				const reply = replies[calls.length - 1](sent);
				if (!reply.writeErrors && !reply.writeConcernError)
					return { acknowledged: true, insertedCount: reply.n, insertedIds: {} };
				throw insertManyError(sent, reply);
			},
		};
		return { collection: collection as unknown as Collection<{ _id: string }>, calls };
	}

	test("counts the duplicates, and sends again what the driver did not send after a command with write errors", async () => {
		// The driver sent the first 3 of 5 in one command (1 duplicate), then stopped: 2 were never tried.
		const { collection, calls } = collectionAnswering([
			() => ({ ok: 1, n: 2, writeErrors: [duplicate(1)] }),
			// The second round: the two inserted before come back as duplicates, the last two are inserted.
			() => ({ ok: 1, n: 2, writeErrors: [duplicate(0), duplicate(1)] }),
		]);
		expect(await insertUnordered(collection, docs(5))).toEqual({ inserted: 4, duplicates: 1 });
		expect(calls.map((sent) => sent.map((d) => d._id))).toEqual([
			["r0", "r1", "r2", "r3", "r4"],
			["r0", "r2", "r3", "r4"],
		]);
	});

	test("a write concern error throws, whatever else the reply holds", async () => {
		const { collection } = collectionAnswering([
			() => ({ ok: 1, n: 2, writeErrors: [duplicate(1)], writeConcernError: wtimeout }),
		]);
		await expect(insertUnordered(collection, docs(3))).rejects.toMatchObject({ code: 64 });
	});

	test("all inserted, or all refused", async () => {
		expect(
			await insertUnordered(
				collectionAnswering([() => ({ ok: 1, n: 3 })]).collection,
				docs(3),
			),
		).toEqual({ inserted: 3, duplicates: 0 });
		expect(
			await insertUnordered(
				collectionAnswering([
					() => ({ ok: 1, n: 0, writeErrors: [duplicate(0), duplicate(1)] }),
				]).collection,
				docs(2),
			),
		).toEqual({ inserted: 0, duplicates: 2 });
	});
});

describe("runTransaction", () => {
	/** A session following the driver's transaction states, whose commits fail as told. */
	function client(commitFailures: unknown[] = []) {
		const log: string[] = [];
		let state: "none" | "in progress" | "committed" | "aborted" = "none";
		const session = {
			startTransaction(options: object) {
				expect(options).toEqual({
					readConcern: { level: "snapshot" },
					readPreference: "primary",
				});
				log.push("start");
				state = "in progress";
			},
			inTransaction: () => state === "in progress",
			async abortTransaction() {
				log.push("abort");
				state = "aborted";
			},
			async commitTransaction() {
				log.push("commit");
				state = "committed";
				const failure = commitFailures.shift();
				if (failure) throw failure;
			},
			async endSession() {
				log.push("end");
			},
		};
		return {
			client: { startSession: () => session } as unknown as MongoClient,
			log,
			session: session as unknown as ClientSession,
		};
	}
	const transient = () =>
		new MongoServerError({
			message: "WriteConflict",
			code: 112,
			errorLabels: ["TransientTransactionError"],
		});

	test("a transient error runs the whole transaction again; its result is the last run's", async () => {
		const { client: c, log } = client();
		let runs = 0;
		expect(
			await runTransaction(c, async () =>
				++runs < 3 ? Promise.reject(transient()) : `run ${runs}`,
			),
		).toBe("run 3");
		expect(log).toEqual(["start", "abort", "start", "abort", "start", "commit", "end"]);
	});

	test("a commit whose result is unknown is committed again; a transient commit error runs the transaction again", async () => {
		const unknown = new MongoNetworkError("connection closed");
		unknown.addErrorLabel("UnknownTransactionCommitResult");
		const transientCommit = new MongoNetworkError("connection closed");
		transientCommit.addErrorLabel("TransientTransactionError");
		const { client: c, log } = client([unknown, transientCommit]);
		expect(await runTransaction(c, async () => "done")).toBe("done");
		expect(log).toEqual(["start", "commit", "commit", "start", "commit", "end"]);
	});

	test("any other error is thrown at once, after aborting: the store's own refusals (a fence, a duplicate) are not retried", async () => {
		const { client: c, log } = client();
		const fenced = new Error("fenced");
		await expect(runTransaction(c, async () => Promise.reject(fenced))).rejects.toBe(fenced);
		const dup = new MongoServerError({ message: "E11000", code: 11000 });
		await expect(runTransaction(c, async () => Promise.reject(dup))).rejects.toBe(dup);
		expect(log).toEqual(["start", "abort", "end", "start", "abort", "end"]);
	});

	test("it gives up after its budget with the last error, where withTransaction would keep trying for 120 s", async () => {
		const { client: c, log } = client();
		const started = Date.now();
		await expect(
			runTransaction(c, async () => Promise.reject(transient()), 50),
		).rejects.toMatchObject({ code: 112 });
		expect(Date.now() - started).toBeLessThan(2_000);
		expect(log.at(-1)).toBe("end");
	});
});

describe("client options", () => {
	test("majority, journaled writes and a socket timeout above the write concern's, unless the URI sets them", () => {
		expect(SOCKET_TIMEOUT_MS).toBeGreaterThan(WRITE_CONCERN_TIMEOUT_MS);
		const uri = "mongodb://127.0.0.1:27017/signing?replicaSet=rs0";
		const defaults = new MongoClient(uri, clientOptions(uri, "records")).options;
		expect(defaults.writeConcern).toMatchObject({
			w: "majority",
			journal: true,
			wtimeoutMS: WRITE_CONCERN_TIMEOUT_MS,
		});
		expect(defaults.socketTimeoutMS).toBe(SOCKET_TIMEOUT_MS);
		expect(defaults.appName).toBe("record-signer/records");
		// An option given to the client wins over the URI's, so none is given where the URI has one.
		const own =
			"mongodb://127.0.0.1:27017/signing?replicaSet=rs0&w=1&socketTimeoutMS=5000&appName=mine";
		const overridden = new MongoClient(own, clientOptions(own, "records")).options;
		expect(overridden.writeConcern).toEqual(expect.objectContaining({ w: 1 }));
		expect(overridden.writeConcern?.w).toBe(1);
		expect(overridden.socketTimeoutMS).toBe(5000);
		expect(overridden.appName).toBe("mine");
	});

	test("driver 7.9 ignores timeoutMS: the stores do not rely on it", () => {
		const warn = jest.spyOn(process, "emitWarning").mockImplementation(() => undefined);
		try {
			const client = new MongoClient("mongodb://127.0.0.1:27017/signing?timeoutMS=1000");
			expect(client.timeoutMS).toBeUndefined();
			expect(client.options.timeoutMS).toBeUndefined();
		} finally {
			warn.mockRestore();
		}
	});
});
