/**
 * Hosts on one machine, for the tests of faults between hosts: each host is a network namespace
 * (`ip netns add`) with one interface, `eth0`, the end of a veth pair whose other end is a port
 * of a bridge, all hosts on one /24. The test process itself joins that subnet through one more
 * veth pair from the root namespace, so its client node, the audit and the nats-servers'
 * monitoring reach every host, while a host whose link is down reaches nothing and nobody
 * reaches it.
 *
 *   const network = await HostNetwork.create(["keyring", "main", "signer-1"]);
 *   spawn(...network.host("keyring").prefix, "node", ...)   // ip netns exec <ns> node ...
 *   await network.cut("keyring");       // ip link set eth0 down, in its namespace
 *   await network.restore("keyring");   // ip link set eth0 up
 *   await network.destroy();            // every namespace, veth pair and bridge
 *
 * The bridge sits in a namespace of its own, not in the root one: where br_netfilter is loaded
 * (net.bridge.bridge-nf-call-iptables=1, as on Docker hosts) frames crossing a bridge in the root
 * namespace pass the root's iptables FORWARD chain, which Docker sets to DROP; a fresh namespace
 * has no rules. A link is cut on the host's side (its own interface down): the host is the one
 * that lost its network, its TCP connections stay open and hang, as in a real partition.
 *
 * Every name starts with `rsnet<pid>`: what a run leaves behind after a crash (a killed Jest)
 * is found by that prefix, and removed only when that pid is no longer running, so two runs
 * on one machine leave each other alone. `ip` needs root; `netnsSkipReason()` says when it
 * is not.
 */
import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Every namespace and root-side link this module makes starts with this, then the owner's pid. */
export const NETNS_PREFIX = "rsnet";

/** How long one `ip` command may take. */
const IP_TIMEOUT_MS = 10_000;

/** Host names: short enough for the interface names built from them (15 characters at most). */
const HOST_NAME = /^[a-z][a-z0-9-]{0,11}$/;

export interface Host {
	readonly name: string;
	/** Its network namespace. */
	readonly namespace: string;
	/** Its address on the hosts' subnet. */
	readonly address: string;
	/** What to put before a command to run it on this host: `ip netns exec <namespace>`. */
	readonly prefix: string[];
}

/** Why the network-namespace tests cannot run here, or null when they can (they need root). */
export function netnsSkipReason(): string | null {
	const uid = process.getuid?.();
	if (uid === undefined) return "network namespaces need Linux";
	if (uid !== 0) return `ip netns needs root, and this runs as uid ${uid}`;
	return null;
}

async function ip(args: string[]): Promise<string> {
	try {
		const { stdout } = await run("ip", args, { timeout: IP_TIMEOUT_MS });
		return stdout;
	} catch (err) {
		const failed = err as Error & { stderr?: string };
		throw new Error(`ip ${args.join(" ")} failed: ${failed.stderr?.trim() || failed.message}`);
	}
}

function alive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch (err) {
		return (err as NodeJS.ErrnoException).code === "EPERM";
	}
}

/** The namespaces `ip netns list` shows (its lines read `name` or `name (id: N)`). */
async function namespaces(): Promise<string[]> {
	return (await ip(["netns", "list"]))
		.split("\n")
		.map((line) => line.split(" ")[0])
		.filter(Boolean);
}

/** Kills what still runs in `namespace` (processes a test started there), then deletes it. */
async function deleteNamespace(namespace: string): Promise<void> {
	const pids = (await ip(["netns", "pids", namespace]).catch(() => ""))
		.split("\n")
		.map(Number)
		.filter((pid) => pid > 0);
	for (const pid of pids) {
		try {
			process.kill(pid, "SIGKILL");
		} catch {
			// gone already
		}
	}
	await ip(["netns", "delete", namespace]).catch(() => undefined);
}

/**
 * Removes the namespaces and root-side links a previous run of these tests left behind (its
 * process died before its cleanup ran), by the name prefix and a pid no longer running.
 * Returns the names removed.
 */
export async function removeLeftovers(): Promise<string[]> {
	const owner = new RegExp(`^${NETNS_PREFIX}(\\d+)(-|$)`);
	const orphaned = (name: string) => {
		const pid = Number(owner.exec(name)?.[1] ?? 0);
		return pid > 0 && pid !== process.pid && !alive(pid);
	};
	const removed: string[] = [];
	for (const namespace of (await namespaces()).filter(orphaned)) {
		await deleteNamespace(namespace);
		removed.push(namespace);
	}
	// A root-side link goes with its peer's namespace; one left without it is removed by name.
	const links = (await ip(["-o", "link", "show"]))
		.split("\n")
		.map((line) => /^\d+:\s+([^:@\s]+)/.exec(line)?.[1])
		.filter((name): name is string => Boolean(name));
	for (const link of links.filter(orphaned)) {
		await ip(["link", "delete", link]).catch(() => undefined);
		removed.push(link);
	}
	return removed;
}

/** A /24 of 10.214.0.0/16 that no address of the root namespace is on, picked by the pid. */
async function freeSubnet(): Promise<string> {
	const used = await ip(["-4", "-o", "addr", "show"]);
	for (let i = 0; i < 250; i++) {
		const subnet = `10.214.${((process.pid + i) % 250) + 1}`;
		if (!used.includes(` ${subnet}.`)) return subnet;
	}
	throw new Error("no free /24 in 10.214.0.0/16 for the test hosts");
}

export class HostNetwork {
	private readonly hosts = new Map<string, Host>();
	private destroyed = false;
	private readonly onExit = () => this.destroySync();

	private constructor(
		/** The first three octets of the hosts' /24. */
		readonly subnet: string,
		/** The namespace holding the bridge. */
		private readonly bridge: string,
		/** The root namespace's end of its veth pair onto the bridge. */
		private readonly rootLink: string,
	) {
		process.once("exit", this.onExit);
	}

	/** The root namespace's address on the subnet: where the test process is seen from. */
	get rootAddress(): string {
		return `${this.subnet}.1`;
	}

	/**
	 * Makes the bridge, joins the root namespace to it, and makes one host per name, each with
	 * its link up. Anything made before a failure is removed again.
	 */
	static async create(names: string[]): Promise<HostNetwork> {
		const reason = netnsSkipReason();
		if (reason) throw new Error(reason);
		for (const name of names)
			if (!HOST_NAME.test(name) || name === "bridge")
				throw new Error(
					`host name ${JSON.stringify(name)}: lower-case, at most 12 characters`,
				);
		const base = `${NETNS_PREFIX}${process.pid}`;
		const subnet = await freeSubnet();
		const network = new HostNetwork(subnet, `${base}-bridge`, base);
		try {
			await network.makeBridge();
			for (const [i, name] of names.entries())
				await network.addHost(name, `${subnet}.${10 + i}`);
		} catch (err) {
			await network.destroy();
			throw err;
		}
		return network;
	}

	private async makeBridge(): Promise<void> {
		const { bridge, rootLink } = this;
		await ip(["netns", "add", bridge]);
		await ip(["-n", bridge, "link", "add", "br0", "type", "bridge"]);
		await ip(["-n", bridge, "link", "set", "br0", "up"]);
		await ip([
			"link",
			"add",
			rootLink,
			"type",
			"veth",
			"peer",
			"name",
			"p-root",
			"netns",
			bridge,
		]);
		await ip(["-n", bridge, "link", "set", "p-root", "master", "br0", "up"]);
		await ip(["addr", "add", `${this.rootAddress}/24`, "dev", rootLink]);
		await ip(["link", "set", rootLink, "up"]);
	}

	private async addHost(name: string, address: string): Promise<void> {
		const namespace = `${NETNS_PREFIX}${process.pid}-${name}`;
		const port = `p-${name}`;
		await ip(["netns", "add", namespace]);
		this.hosts.set(name, {
			name,
			namespace,
			address,
			prefix: ["ip", "netns", "exec", namespace],
		});
		await ip(["-n", namespace, "link", "set", "lo", "up"]);
		await ip([
			"-n",
			this.bridge,
			"link",
			"add",
			port,
			"type",
			"veth",
			"peer",
			"name",
			"eth0",
			"netns",
			namespace,
		]);
		await ip(["-n", this.bridge, "link", "set", port, "master", "br0", "up"]);
		await ip(["-n", namespace, "addr", "add", `${address}/24`, "dev", "eth0"]);
		await ip(["-n", namespace, "link", "set", "eth0", "up"]);
	}

	host(name: string): Host {
		const host = this.hosts.get(name);
		if (!host) throw new Error(`no host ${name} (have ${[...this.hosts.keys()].join(", ")})`);
		return host;
	}

	list(): Host[] {
		return [...this.hosts.values()];
	}

	/** Takes the host's link down: it reaches no other host, and none reaches it. */
	async cut(name: string): Promise<void> {
		await ip(["-n", this.host(name).namespace, "link", "set", "eth0", "down"]);
	}

	/** Brings the host's link up again (its address and route come back with it). */
	async restore(name: string): Promise<void> {
		await ip(["-n", this.host(name).namespace, "link", "set", "eth0", "up"]);
	}

	/** Whether the host's link is up. */
	async linkUp(name: string): Promise<boolean> {
		const shown = await ip(["-n", this.host(name).namespace, "-o", "link", "show", "eth0"]);
		return /[<,]UP[,>]/.test(shown);
	}

	/** Runs a command on the host; resolves with its output, rejects naming the host when it fails. */
	async exec(name: string, file: string, args: string[], timeoutMs = 30_000): Promise<string> {
		const [command, ...words] = [...this.host(name).prefix, file, ...args];
		try {
			const { stdout } = await run(command, words, { timeout: timeoutMs });
			return stdout;
		} catch (err) {
			const failed = err as Error & { stderr?: string };
			throw new Error(
				`${file} ${args.join(" ")} on host ${name} failed: ${failed.stderr?.trim() || failed.message}`,
			);
		}
	}

	/** Kills what still runs on the hosts, deletes every namespace (their links go with them). */
	async destroy(): Promise<void> {
		if (this.destroyed) return;
		this.destroyed = true;
		process.removeListener("exit", this.onExit);
		for (const host of this.hosts.values()) await deleteNamespace(host.namespace);
		await deleteNamespace(this.bridge);
		await ip(["link", "delete", this.rootLink]).catch(() => undefined);
	}

	/** The same, synchronously, for a process exiting without having called destroy(). */
	private destroySync(): void {
		if (this.destroyed) return;
		this.destroyed = true;
		for (const namespace of [
			...[...this.hosts.values()].map((h) => h.namespace),
			this.bridge,
		]) {
			try {
				execFileSync("ip", ["netns", "delete", namespace], {
					stdio: "ignore",
					timeout: IP_TIMEOUT_MS,
				});
			} catch {
				// gone already
			}
		}
	}
}
