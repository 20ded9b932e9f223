/**
 * Which keyring node may grant leases on a NATS namespace: exactly one (docs/design.md §5.7).
 *
 * Every keyring node, before it opens its store or offers the `keyring` service, makes its
 * `keyring-election` service reachable, lets discovery settle, then claims: it asks every
 * other candidate or active keyring it can see. A claim is refused by an active keyring, and
 * by a candidate whose node id sorts lower; a candidate asked by a lower id gives way at
 * once (remembered, so it cannot turn active after answering "go ahead"). The claimer turns
 * active only if nobody refused, it gave way to nobody, and every peer answered: an
 * unreachable peer might be an active keyring, so that is a refusal too.
 *
 * Two nodes that can both see each other's election service therefore never both turn
 * active: whichever claims second asks the first, and the first's answer and its own
 * decision are made on one thread, in one order. The later of two candidates always sees
 * the earlier one because each registers its election service before it waits to settle.
 */

import type { ClaimReply, ElectionState } from "../contract";

export type { ClaimReply, ElectionState };

export type ElectionVerdict =
	{ active: true } | { active: false; reason: string; winner: string | null };

export class KeyringElection {
	private current: ElectionState = "waiting";
	/** The lower node id this node told to go ahead, if any. */
	private gaveWayTo: string | null = null;
	private activeSince: number | null = null;

	constructor(readonly nodeID: string) {}

	get state(): ElectionState {
		return this.current;
	}

	get since(): number | null {
		return this.activeSince;
	}

	/** Another keyring node asks whether it may become active. */
	onClaim(from: string): ClaimReply {
		const reply = (refuses: boolean): ClaimReply => ({
			nodeID: this.nodeID,
			state: this.current,
			refuses,
		});
		switch (this.current) {
			case "active":
				return reply(true);
			case "refused":
				return reply(false);
			default:
				if (from < this.nodeID) {
					this.gaveWayTo ??= from;
					return reply(false);
				}
				return reply(true);
		}
	}

	/**
	 * Claims the keyring role against `peers` (every other keyring node in sight). The verdict
	 * is final: a refused node must not claim again without restarting.
	 */
	async claim(
		peers: string[],
		ask: (peer: string) => Promise<ClaimReply>,
	): Promise<ElectionVerdict> {
		if (this.current !== "waiting") throw new Error(`claim in state ${this.current}`);
		this.current = "claiming";
		const answers = await Promise.allSettled(peers.map((peer) => ask(peer)));
		let verdict: ElectionVerdict = { active: true };
		answers.forEach((answer, i) => {
			if (!verdict.active) return;
			if (answer.status === "rejected") {
				verdict = {
					active: false,
					winner: peers[i],
					reason: `keyring node '${peers[i]}' did not answer the claim (${(answer.reason as Error)?.message ?? answer.reason}); it may be active`,
				};
			} else if (answer.value.refuses) {
				verdict =
					answer.value.state === "active"
						? {
								active: false,
								winner: peers[i],
								reason: `keyring node '${peers[i]}' is already active`,
							}
						: {
								active: false,
								winner: peers[i],
								reason: `keyring node '${peers[i]}' is claiming too and its node id sorts first`,
							};
			}
		});
		// Decided and switched in one synchronous step: no claim can be answered in between.
		if (verdict.active && this.gaveWayTo !== null)
			verdict = {
				active: false,
				winner: this.gaveWayTo,
				reason: `keyring node '${this.gaveWayTo}' claimed at the same time and its node id sorts first`,
			};
		this.current = verdict.active ? "active" : "refused";
		if (verdict.active) this.activeSince = Date.now();
		return verdict;
	}

	/** Gives up an active role (a second active keyring appeared after a partition healed). */
	fence(): void {
		this.current = "refused";
	}
}

export interface ElectionOptions {
	/** Over NATS: how long discovery settles before this node claims the keyring role. */
	electionSettleMs: number;
	/** Over NATS: how long a peer has to answer the claim; no answer is a refusal. */
	electionClaimTimeoutMs: number;
}

/** Reachable on every keyring node before its `keyring` service is: the election's channel. */
export const ELECTION_SERVICE = "keyring-election";

export class KeyringRefusedError extends Error {
	constructor(
		readonly reason: string,
		readonly winner: string | null,
		namespace: string,
	) {
		super(
			`This keyring refuses to start: ${reason} on NATS namespace '${namespace}'. ` +
				"Two keyrings must never both grant leases, so this node grants none; stop the other keyring first if this one should serve.",
		);
		this.name = "KeyringRefusedError";
	}
}

/** The part of a broker an election needs. */
export interface ElectionBus {
	nodeID: string;
	namespace: string;
	/** Makes `claim` reachable for the other candidates, and resolves once it is announced. */
	offer(onClaim: (from: string) => ClaimReply): Promise<void>;
	/** Other nodes offering the keyring or its election, sorted. */
	peers(): string[];
	ask(peer: string, timeoutMs: number): Promise<ClaimReply>;
	sleep(ms: number): Promise<void>;
}

/**
 * Claims the keyring role among the keyring nodes on this NATS namespace. Resolves with the
 * election (active) and the peers it won over; throws a KeyringRefusedError otherwise.
 */
export async function electKeyring(
	bus: ElectionBus,
	options: ElectionOptions,
): Promise<{ election: KeyringElection; peers: string[] }> {
	const election = new KeyringElection(bus.nodeID);
	// Offered (and announced) before settling: a rival claiming later always sees it.
	await bus.offer((from) => election.onClaim(from));
	await bus.sleep(options.electionSettleMs);
	const peers = bus.peers();
	const verdict = await election.claim(peers, (peer) =>
		bus.ask(peer, options.electionClaimTimeoutMs),
	);
	if (!verdict.active)
		throw new KeyringRefusedError(verdict.reason, verdict.winner, bus.namespace || "(none)");
	return { election, peers };
}
