/**
 * Incoming packets that must not stop a node (issue 18).
 *
 * Moleculer treats an INFO packet that names this node as its sender, under another
 * instanceID, as a second process running with this node id, and stops this one
 * (`broker.fatal`, process exit). Anyone who may publish `<prefix>.INFO` (every NATS user of
 * the system, the ops user included: every node announces itself there) can send one, and node
 * ids are predictable (`keyring`, `keyring-0`): one packet stopped the keyring. Such a packet is
 * dropped here and logged as a warning (once a minute per claimed instance, a few lines a minute
 * at most); this node keeps running. Every other packet passes through unchanged.
 *
 * The other nodes took the same broadcast as this node's INFO: they now hold its forged
 * instance and services (none, say) and would not call it again until it sends a new INFO
 * (heartbeats carry no instance or sequence to correct them). So this node then broadcasts
 * its real INFO, as it does whenever its services change: a little after the forged one
 * (at most once a second however many come), which puts its services back everywhere.
 *
 * What that costs: a real second process started with this node's NODE_ID is no longer
 * stopped by Moleculer; both keep running, each logging the warning and re-announcing itself
 * (once a second at most). INFO packets of this node's own instance are skipped by Moleculer
 * as before. This does not authenticate packets: an INFO naming another node sent only to a
 * third one (`<prefix>.INFO.<node>`), or one copying this node's instanceID, is not seen here.
 */
import type { Logger, Middleware, ServiceBroker } from "moleculer";

/** What of Moleculer's Transit this middleware uses (`this` of the transit hooks). */
interface Transit {
	nodeID: string;
	instanceID: string;
	broker: ServiceBroker;
	/** Broadcasts this node's INFO when `nodeID` is not given (a no-op while not connected). */
	sendNodeInfo(info: unknown, nodeID?: string): Promise<unknown>;
}

interface Packet {
	payload?: { sender?: unknown; instanceID?: unknown } | null;
}

type MessageHandler = (cmd: string, packet: Packet) => Promise<boolean>;

/** One warning per claimed instance per this long. */
const WARN_EVERY_MS = 60_000;
/** At most this many warnings per WARN_EVERY_MS, whatever the number of claimed instances. */
const MAX_WARNINGS = 10;
/** This node's real INFO goes out this long after a forged one (after it, on every server of a NATS cluster)... */
const ANNOUNCE_DELAY_MS = 200;
/** ...and at most once per this long. */
const ANNOUNCE_EVERY_MS = 1_000;

/** An attacker's string, fit for one log line. */
function shown(value: unknown): string {
	const text = typeof value === "string" ? value : (JSON.stringify(value) ?? String(value));
	return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
}

/** Says so when an INFO packet claiming this node is dropped; bounded however many come. */
class DropLog {
	private readonly lastWarned = new Map<string, number>();
	private windowStart = 0;
	private warnings = 0;
	private unlogged = 0;

	dropped(logger: Logger, nodeID: string, instanceID: string, claimed: Packet["payload"]): void {
		const now = Date.now();
		if (now - this.windowStart >= WARN_EVERY_MS) {
			this.windowStart = now;
			this.warnings = 0;
			for (const [key, at] of this.lastWarned)
				if (now - at >= WARN_EVERY_MS) this.lastWarned.delete(key);
		}
		const key = shown(claimed?.instanceID);
		const last = this.lastWarned.get(key);
		if ((last !== undefined && now - last < WARN_EVERY_MS) || this.warnings >= MAX_WARNINGS) {
			this.unlogged++;
			return;
		}
		this.lastWarned.set(key, now);
		this.warnings++;
		const more = this.unlogged
			? ` (${this.unlogged} more such packet(s) dropped since the last warning)`
			: "";
		this.unlogged = 0;
		logger.warn(
			`Dropped an INFO packet claiming to be this node: sender ${shown(claimed?.sender)}, instanceID ${key}, while this node is ${JSON.stringify(nodeID)} ` +
				`instance ${JSON.stringify(instanceID)}. Either a forged packet or a second process started with this node id; this node keeps running${more}`,
		);
	}
}

/** Broadcasts this node's INFO again after forged ones: once per burst, at most once per ANNOUNCE_EVERY_MS. */
class Announcer {
	private timer: NodeJS.Timeout | null = null;
	private last = 0;
	private stopped = false;

	request(transit: Transit, logger: Logger): void {
		if (this.timer || this.stopped) return;
		const delay = Math.max(ANNOUNCE_DELAY_MS, this.last + ANNOUNCE_EVERY_MS - Date.now());
		this.timer = setTimeout(() => {
			this.timer = null;
			this.last = Date.now();
			transit
				.sendNodeInfo(transit.broker.getLocalNodeInfo())
				.catch((err: Error) =>
					logger.warn(`Could not announce this node again: ${err.message}`),
				);
		}, delay);
		this.timer.unref();
	}

	stop(): void {
		this.stopped = true;
		if (this.timer) clearTimeout(this.timer);
		this.timer = null;
	}
}

/** `next`, except that an INFO packet claiming `transit`'s node id from another instance goes to `drop`. */
function guardedHandler(
	transit: Transit,
	next: MessageHandler,
	drop: (transit: Transit, payload: Packet["payload"]) => void,
): MessageHandler {
	return function guarded(this: unknown, cmd: string, packet: Packet) {
		const payload = packet?.payload;
		if (
			cmd === "INFO" &&
			payload &&
			payload.sender === transit.nodeID &&
			payload.instanceID !== transit.instanceID
		) {
			drop(transit, payload);
			return Promise.resolve(false);
		}
		return next.call(this, cmd, packet);
	};
}

export function PacketGuardMiddleware(): Middleware {
	const drops = new DropLog();
	const announcer = new Announcer();
	let logger: Logger | null = null;
	return {
		name: "PacketGuard",
		created(broker: ServiceBroker) {
			logger = broker.getLogger("packet-guard");
		},
		transitMessageHandler(this: Transit, next: MessageHandler): MessageHandler {
			return guardedHandler(this, next, (transit, payload) => {
				const log = logger ?? transit.broker.logger;
				drops.dropped(log, transit.nodeID, transit.instanceID, payload);
				announcer.request(transit, log);
			});
		},
		stopping() {
			announcer.stop();
		},
	} as unknown as Middleware;
}
