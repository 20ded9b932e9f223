/**
 * The keyring's enrolled credentials and revoked keys as another service reads them: records
 * takes close and submit proofs from any batcher credential enrolled and not revoked
 * (docs/design.md §6.5, §6.10), refuses what a key signed after its revocation (§5.8), and
 * learns both where the keyring keeps them, never from the bus: the embedded
 * `DATA_DIR/keyring.sqlite` through a read-only connection (it takes no lock and writes
 * nothing), or the `batchers` collection in MongoDB through a client of its own. A store kept in
 * memory has no reader: records then trusts its own batcher credential alone.
 */
import fs from "node:fs";
import { DatabaseSync } from "node:sqlite";
import type { CredentialRole } from "../identity/credential";
import { connectMongo, type MongoConnection } from "../store/mongo";
import { storeFile } from "../store/sqlite";
import { MongoKeyringStore } from "./mongo-store";
import { enrolledIn, revokedKeysIn } from "./sqlite-store";
import type { EnrolledSigner, RevokedKey } from "./store";

export interface EnrolmentReader {
	/** Every credential of `role` enrolled, revoked ones included; none while the keyring's store does not exist yet. */
	enrolled(role: CredentialRole): Promise<EnrolledSigner[]>;
	/** Every key the keyring revoked, and since when; none while its store does not exist yet. */
	revokedKeys(): Promise<RevokedKey[]>;
	close(): Promise<void>;
}

/** The reader of the keyring's store at `place`, or null when the keyring keeps it in memory. */
export function keyringEnrolments(place: {
	dataDir: string;
	mongoUri: string | null;
}): EnrolmentReader | null {
	if (place.mongoUri) return mongoEnrolments(place.mongoUri);
	if (place.dataDir) return fileEnrolments(storeFile(place.dataDir, "keyring"));
	return null;
}

function fileEnrolments(file: string): EnrolmentReader {
	let db: DatabaseSync | null = null;
	const open = (): DatabaseSync | null => {
		if (!db && fs.existsSync(file)) {
			db = new DatabaseSync(file, { readOnly: true });
			db.exec("PRAGMA busy_timeout = 1000");
		}
		return db;
	};
	return {
		async enrolled(role) {
			const opened = open();
			return opened ? enrolledIn(opened, role) : [];
		},
		async revokedKeys() {
			const opened = open();
			return opened ? revokedKeysIn(opened) : [];
		},
		async close() {
			db?.close();
			db = null;
		},
	};
}

function mongoEnrolments(uri: string): EnrolmentReader {
	let connection: Promise<MongoConnection> | null = null;
	const store = async (): Promise<MongoKeyringStore> => {
		connection ??= connectMongo(uri, {}, "records").catch((err) => {
			connection = null;
			throw err;
		});
		return MongoKeyringStore.over(await connection);
	};
	return {
		async enrolled(role) {
			return (await store()).enrolled(role);
		},
		async revokedKeys() {
			return (await store()).revokedKeys();
		},
		async close() {
			await (await connection?.catch(() => null))?.close();
			connection = null;
		},
	};
}
