/**
 * Child processes this process started (nats-server, cluster roles): killed if it exits
 * without stopping them, so a failed or interrupted test or cluster leaves no orphan behind.
 */
import type { ChildProcess } from "node:child_process";

const children = new Set<ChildProcess>();
let hooked = false;

/** Kills `child` with SIGKILL should this process exit while it still runs. */
export function killOnExit(child: ChildProcess): void {
	if (!hooked) {
		hooked = true;
		process.once("exit", () => {
			for (const running of children) {
				try {
					running.kill("SIGKILL");
				} catch {
					// already gone
				}
			}
		});
	}
	children.add(child);
	child.once("exit", () => children.delete(child));
}
