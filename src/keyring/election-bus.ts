/**
 * The keyring election (election.ts) over a broker's transporter: every keyring node offers
 * `keyring-election.claim` before it serves, asks the others, and only the winner opens its
 * store. Also how a keyring that finds a rival active afterwards leaves the stage.
 */
import type { Context, ServiceBroker } from "moleculer";
import { sleep } from "../clock";
import { DomainError } from "../errors";
import { Actions, call, claimParams, type ActionParams, type ClaimReply } from "../contract";
import {
	electKeyring,
	ELECTION_SERVICE,
	type ElectionBus,
	type ElectionOptions,
	type KeyringElection,
} from "./election";

/** How long a node's own election service may take to register locally. */
const OFFER_TIMEOUT_MS = 10_000;

/** Moleculer's own discovery, which the typings do not show: what its debounced announcement calls. */
interface Discovery {
	regenerateLocalRawInfo(incSeq: boolean): unknown;
	discoverer: { sendLocalNodeInfo(): Promise<unknown> | unknown };
}

/** Sends this node's INFO (its services) to the other nodes at once. */
function announceNow(broker: ServiceBroker): void {
	const registry = broker.registry as unknown as Discovery;
	registry.regenerateLocalRawInfo(true);
	void Promise.resolve()
		.then(() => registry.discoverer.sendLocalNodeInfo())
		.catch((err) =>
			broker.logger.warn(
				`Could not announce the keyring election at once (${(err as Error).message}); it is announced with the node's next INFO`,
			),
		);
}

/** The other nodes offering any of `services`, sorted. */
export function otherKeyringNodes(broker: ServiceBroker, services: string[]): string[] {
	const peers = new Set<string>();
	for (const service of broker.registry.getServiceList({ onlyAvailable: true }))
		if (services.includes(service.name) && service.nodeID && service.nodeID !== broker.nodeID)
			peers.add(service.nodeID);
	return [...peers].sort();
}

function electionBus(broker: ServiceBroker): ElectionBus {
	return {
		nodeID: broker.nodeID,
		namespace: broker.namespace,
		async offer(onClaim) {
			broker.createService({
				name: ELECTION_SERVICE,
				actions: {
					claim: {
						params: claimParams,
						handler: (
							ctx: Context<ActionParams<"keyring-election.claim">>,
						): ClaimReply => onClaim(ctx.params.nodeID),
					},
				},
			});
			const deadline = Date.now() + OFFER_TIMEOUT_MS;
			while (
				!broker.registry
					.getServiceList({ onlyLocal: true })
					.some((s) => s.name === ELECTION_SERVICE)
			) {
				if (Date.now() > deadline)
					throw new Error(
						`The keyring election service did not start within ${OFFER_TIMEOUT_MS / 1000} s on node ${broker.nodeID}`,
					);
				await sleep(20);
			}
			// Announced now: Moleculer debounces a new service's announcement by a second, which a
			// loaded machine stretches past the settle time, and two candidates then miss each other.
			// Best effort, never awaited: a transport that cannot publish must not hold the election.
			announceNow(broker);
		},
		peers: () => otherKeyringNodes(broker, [ELECTION_SERVICE, "keyring"]),
		ask: (peer, timeout) =>
			call(
				broker,
				Actions.keyring.claim,
				{ nodeID: broker.nodeID },
				{ nodeID: peer, timeout },
			),
		sleep,
	};
}

/**
 * Runs the election on the broker's bus; null on a broker without a transporter (nothing to
 * elect among). A keyring that loses says why, in its log and in what it throws.
 */
export async function electOnBus(
	broker: ServiceBroker,
	options: ElectionOptions,
	logger: { info(line: string): void; error(line: string): void },
): Promise<KeyringElection | null> {
	if (!broker.transit) return null;
	const { election, peers } = await electKeyring(electionBus(broker), options).catch((err) => {
		logger.error((err as Error).message);
		throw err;
	});
	logger.info(
		`Elected the active keyring on NATS namespace '${broker.namespace}'${peers.length ? ` (over ${peers.join(", ")})` : " (no other keyring node in sight)"}`,
	);
	return election;
}

/**
 * A second active keyring can only appear after a partition or a paused process healed: when
 * this one is active and sees another, both stop granting at once (acquires, waiting ones too,
 * and renewals are turned away; releases keep working) and, restarted, elect one again.
 * Answers the rival, or null when there is none to fence for.
 */
export function fenceOnRival(node: {
	broker: ServiceBroker;
	election: KeyringElection | null;
	keyring?: { fence(refusal: () => Error): Promise<void> };
	logger: { error(line: string): void };
}): string | null {
	const { broker, election, keyring, logger } = node;
	if (election?.state !== "active") return null;
	const [rival] = otherKeyringNodes(broker, ["keyring"]);
	if (!rival) return null;
	election.fence();
	void keyring?.fence(
		() =>
			new DomainError(
				"KEYRING_CONFLICT",
				`This keyring no longer grants or renews leases: keyring node '${rival}' is active too`,
				{ other: rival },
			),
	);
	logger.error(
		`Keyring node '${rival}' is active too: this keyring stops granting and renewing leases now. Two keyrings must never both grant; restart one of them alone.`,
	);
	leaveForRestart(broker);
	return rival;
}

/**
 * A keyring that found a rival active ends its process under moleculer-runner (after a
 * graceful stop), so a supervisor restarts it into a fresh election; an embedded keyring stays
 * fenced until its owner restarts it.
 */
function leaveForRestart(broker: ServiceBroker): void {
	if ((broker as { runner?: unknown }).runner) void broker.stop().finally(() => process.exit(1));
}
