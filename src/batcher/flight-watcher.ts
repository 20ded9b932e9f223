/**
 * Watches the batches in flight: a batch whose reply has not come after `probeAfterMs` is
 * checked on with its signer (`signer.inFlight`), and one the signer does not have lost its
 * request or its reply in transit: it is given up at once (its abort fires with
 * BatchLostError) instead of waiting out the sign timeout. A signer that does not answer is
 * left to its heartbeats (the broker fails its requests when it is declared gone) and to the
 * next check. After a NATS reconnect the batches of the reconnected node (or of every signer,
 * when this node reconnected) are checked at once.
 */
import type { ActiveRun, Flight, RunContext } from "./active-run";
import type { SignersPort } from "./ports";

/** The signer asked does not have the batch: its request or its reply was lost in transit. */
export class BatchLostError extends Error {
	constructor(batchId: string, signer: string, ageMs: number) {
		super(
			`signer ${signer} does not have batch ${batchId}, sent ${(ageMs / 1000).toFixed(1)} s ago: its request or its reply was lost`,
		);
		this.name = "BatchLostError";
	}
}

export class FlightWatcher {
	/** Signers with a check on the way (one sent before a reconnect may be lost: a forced check goes anyway). */
	private readonly probing = new Set<string>();

	constructor(
		private readonly signers: Pick<SignersPort, "inFlight">,
		private readonly context: RunContext,
		private readonly probeAfterMs: number,
	) {}

	/** Checks the run's batches every third of `probeAfterMs`; returns the stop. */
	watch(active: ActiveRun): () => void {
		return this.context.clock.every(Math.max(100, Math.floor(this.probeAfterMs / 3)), () =>
			this.probe(active),
		);
	}

	/** A batch goes out to `signer`: it is in flight until `land` is called. */
	takeOff(active: ActiveRun, batchId: string, signer: string | undefined): Flight {
		const flight: Flight = {
			batchId,
			signer,
			sentAt: this.context.clock.now(),
			probedAt: 0,
			abort: new AbortController(),
		};
		active.flights.set(batchId, flight);
		if (signer) active.perSigner.set(signer, (active.perSigner.get(signer) ?? 0) + 1);
		return flight;
	}

	land(active: ActiveRun, flight: Flight): void {
		active.flights.delete(flight.batchId);
		if (flight.signer)
			active.perSigner.set(flight.signer, active.perSigner.get(flight.signer)! - 1);
	}

	/**
	 * Asks each signer that has had a batch for `probeAfterMs` (or, when `now` says so, every
	 * signer or that one, whatever their batches' age) which batches it is working on.
	 */
	probe(active: ActiveRun, now: boolean | string = false): void {
		const at = this.context.clock.now();
		const due = new Map<string, Flight[]>();
		for (const flight of active.flights.values()) {
			if (!flight.signer) continue;
			const forced = now === true || now === flight.signer;
			if (
				!forced &&
				(this.probing.has(flight.signer) ||
					at - flight.sentAt < this.probeAfterMs ||
					at - flight.probedAt < this.probeAfterMs)
			)
				continue;
			flight.probedAt = at;
			due.set(flight.signer, [...(due.get(flight.signer) ?? []), flight]);
		}
		for (const [signer, flights] of due) {
			this.probing.add(signer);
			this.signers
				.inFlight(signer, Math.min(2_000, this.probeAfterMs))
				.then(
					(batchIds) => {
						const known = new Set(batchIds);
						for (const flight of flights)
							if (
								active.flights.get(flight.batchId) === flight &&
								!known.has(flight.batchId)
							)
								flight.abort.abort(
									new BatchLostError(flight.batchId, signer, at - flight.sentAt),
								);
					},
					() => undefined,
				)
				.finally(() => this.probing.delete(signer));
		}
	}
}
