/**
 * The keyring as its service starts it on a broker: it enrols the credentials shared through
 * `DATA_DIR` (local-trust.ts), opens the keyring from its lease log, which claims the keyring
 * role (docs/design.md §5.7), sets up the lease desk that admits signers (§6.2), and publishes
 * its authority key (§6.4). Lease events go out on the bus, fire and forget.
 */
import os from "node:os";
import { systemClock, type Clock } from "../clock";
import { Keyring, type KeyringLogger, type KeyringOptions } from "./keyring";
import { LeaseDesk, type Caller } from "./lease-desk";
import { announceAuthority, enrolLocalCredential } from "./local-trust";
import type { KeyringStore } from "./store";

export interface KeyringBus {
	nodeID: string;
	emit(event: string, payload: unknown): Promise<void>;
	broadcast(event: string, payload: unknown): Promise<void>;
}

export interface KeyringOnBus {
	keyring: Keyring;
	desk: LeaseDesk;
}

export async function openKeyringOnBus(
	options: KeyringOptions,
	deps: {
		bus: KeyringBus;
		store: KeyringStore;
		/** Where the store is, for messages (no credentials). */
		storeName: string;
		logger: KeyringLogger;
		/** The system clock unless a test moves time by hand. */
		clock?: Clock;
	},
): Promise<KeyringOnBus> {
	const { bus, store, logger } = deps;
	for (const role of ["signer", "batcher"] as const)
		await enrolLocalCredential(store, role, options.enrolLocal[role], logger);
	const keyring = await Keyring.open(options, {
		store,
		storeName: deps.storeName,
		identity: { holder: bus.nodeID, host: os.hostname(), pid: process.pid },
		logger,
		clock: deps.clock,
		emit: (event, payload) => {
			bus.emit(event, payload).catch((err) =>
				logger.warn(`Could not emit ${event}: ${(err as Error).message}`),
			);
		},
		broadcast: (event, payload) => {
			bus.broadcast(event, payload).catch((err) =>
				logger.warn(`Could not broadcast ${event}: ${(err as Error).message}`),
			);
		},
	});
	// Proofs are dated by the signers' wall clocks: checked against this machine's, whatever clock the leases run on.
	const desk = new LeaseDesk(keyring, store, systemClock, options.leaseGraceMs, logger);
	announceAuthority(keyring.authority, options, logger);
	return { keyring, desk };
}

/** Who sent a request, as the transport says: its node, and whether that is this process. */
export function callerOf(request: { nodeID?: string | null }, ownNode: string): Caller {
	const node = request.nodeID;
	return { nodeID: node ?? ownNode, local: !node || node === ownNode };
}
