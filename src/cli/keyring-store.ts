/**
 * The keyring's store as the operator's commands open it (`npm run signer`, `npm run keys`):
 * MongoDB when MONGO_URI names it, otherwise the embedded file in DATA_DIR, which must exist.
 */
import fs from "node:fs";
import type { AppConfig } from "../config";
import { MongoKeyringStore } from "../keyring/mongo-store";
import { SqliteKeyringStore } from "../keyring/sqlite-store";
import type { KeyringStore } from "../keyring/store";
import { storeFile } from "../store/sqlite";
import { UsageError } from "./cli";

/** A logger that says nothing: the commands print their own lines. */
export const quiet = { info() {}, warn() {}, error() {}, debug() {} };

/** The keyring's store and where it is (no credentials); `purpose` ends the message when DATA_DIR is empty. */
export async function openKeyringStore(
	config: AppConfig,
	purpose: string,
): Promise<{ store: KeyringStore; where: string }> {
	if (config.mongoUri)
		return {
			store: await MongoKeyringStore.open(config.mongoUri, { broker: null, logger: quiet }),
			where: `MongoDB ${config.mongoUri.replace(/\/\/[^@/]*@/, "//***@")}`,
		};
	if (!config.dataDir)
		throw new UsageError(`DATA_DIR is empty: there is no keyring store ${purpose}`);
	const file = storeFile(config.dataDir, "keyring");
	if (!fs.existsSync(file))
		throw new UsageError(
			`No keyring store at ${file}: start the keyring once (npm start, npm run serve) or pass --data-dir`,
		);
	return { store: SqliteKeyringStore.open(config.dataDir), where: file };
}
