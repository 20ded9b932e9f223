/**
 * GET /api/audit's verdict (src/api/audit-verdict.ts) over a real system: kept while fresh,
 * shared by callers arriving during one audit, and, once the stores change, never answered
 * from an audit begun before the change.
 */
import { AuditVerdict } from "../../src/api/audit-verdict";
import { runToCompletion, startSystem, type TestSystem } from "../support/system";

let system: TestSystem;

beforeAll(async () => {
	system = await startSystem({ records: 300, keys: 3 });
	await runToCompletion(system, 50);
}, 60_000);

afterAll(() => system.broker.stop());

test("a fresh verdict is kept and shared; callers during one audit share it", async () => {
	let clock = 1_000_000;
	const verdict = new AuditVerdict(system.broker, 60_000, () => clock);
	const [a, b] = await Promise.all([verdict.current(), verdict.current()]);
	expect(a).toBe(b);
	expect(a).toMatchObject({ ok: true, cached: false });
	expect(await verdict.current()).toMatchObject({
		ok: true,
		cached: true,
		checkedAt: a.checkedAt,
	});
	clock += 60_001;
	expect(await verdict.current()).toMatchObject({ cached: false });
});

test("after the stores change, an audit begun before is neither shared with later callers nor kept", async () => {
	let clock = 2_000_000;
	const verdict = new AuditVerdict(system.broker, 60_000, () => clock);
	const before = verdict.current();
	verdict.invalidate();
	clock += 1_000;
	const after = verdict.current();
	expect(after).not.toBe(before);
	const [old, fresh] = await Promise.all([before, after]);
	expect(new Date(old.checkedAt).getTime()).toBe(2_000_000);
	expect(new Date(fresh.checkedAt).getTime()).toBe(2_001_000);
	// What is kept is the audit begun after the change.
	expect(await verdict.current()).toMatchObject({ cached: true, checkedAt: fresh.checkedAt });
});
