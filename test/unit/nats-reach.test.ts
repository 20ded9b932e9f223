/**
 * assertNatsReachable (src/broker/nats-reach.ts): a TCP connection to any server of the list is
 * enough; none is a NatsUnreachableError naming every server tried and why, with the URL's
 * password masked. The commands that use it are test/integration/nats-unreachable.test.ts.
 */
import net from "node:net";
import { assertNatsReachable, NatsUnreachableError } from "../../src/broker/nats-reach";
import { UserError } from "../../src/user-error";

let listening: net.Server;
let openPort: number;
let closedPort: number;

async function listen(): Promise<net.Server> {
	const server = net.createServer((socket) => socket.destroy());
	await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
	return server;
}

beforeAll(async () => {
	listening = await listen();
	openPort = (listening.address() as net.AddressInfo).port;
	const closed = await listen();
	closedPort = (closed.address() as net.AddressInfo).port;
	await new Promise((resolve) => closed.close(resolve));
});
afterAll(() => new Promise((resolve) => listening.close(resolve)));

test("a server that takes the connection is enough", async () => {
	await expect(
		assertNatsReachable(`nats://127.0.0.1:${openPort}`, "or not"),
	).resolves.toBeUndefined();
});

test("one server of a list taking it is enough", async () => {
	await expect(
		assertNatsReachable(
			`nats://127.0.0.1:${closedPort},nats://127.0.0.1:${openPort}`,
			"or not",
		),
	).resolves.toBeUndefined();
});

test("none taking it is a UserError naming each server, why, and nats-server; no password", async () => {
	const transporter = `nats://ops:hunter2@127.0.0.1:${closedPort},tls://[::1]:${closedPort}`;
	const err = await assertNatsReachable(transporter, "or leave TRANSPORTER out").catch(
		(e: unknown) => e,
	);
	expect(err).toBeInstanceOf(NatsUnreachableError);
	expect(err).toBeInstanceOf(UserError);
	const message = (err as Error).message;
	expect(message).toContain(`127.0.0.1:${closedPort} (ECONNREFUSED)`);
	expect(message).toContain(`::1:${closedPort} (`);
	expect(message).toContain(`nats-server -p ${closedPort}`);
	expect(message).toContain("apt-get install -y nats-server");
	expect(message).toMatch(/, or leave TRANSPORTER out$/);
	expect(message).not.toContain("hunter2");
});
