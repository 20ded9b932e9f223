/** The dashboard in headless Chromium during a real run: progress to 100%, one heat-map cell per key, the audit verdict. */
import fs from "node:fs";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { request, startApiSystem, type ApiSystem } from "./support/http";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/**
 * Polls `expression` in the page from here (each look is one DevTools evaluation): the pages'
 * Content-Security-Policy forbids the eval that Playwright's own in-page polling uses.
 */
async function waitInPage(page: import("playwright-core").Page, expression: string, timeoutMs = 10_000): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	while (!(await page.evaluate(expression))) {
		if (Date.now() > deadline) throw new Error(`timed out waiting for ${expression}`);
		await new Promise(resolve => setTimeout(resolve, 50));
	}
}
const ARTIFACTS = path.join(__dirname, "..", "test-artifacts");

describe("dashboard", () => {
	let system: ApiSystem;
	let browser: Browser;

	beforeAll(async () => {
		if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
		[system, browser] = await Promise.all([
			startApiSystem({ records: 4000, keys: 6, window: 2 }),
			chromium.launch({
				executablePath: CHROMIUM,
				args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
			})
		]);
	});
	afterAll(async () => {
		await browser?.close();
		await system?.stop();
	});

	test("shows progress reaching 100% during a run, a cell per key, and the audit verdict", async () => {
		const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
		const pageErrors: string[] = [];
		page.on("pageerror", err => pageErrors.push(err.message));
		await page.goto(system.baseUrl + "/");
		// Browser-side code as strings: this project's TypeScript has no DOM types.
		await waitInPage(page, `document.querySelectorAll("#heatmap .key-cell").length === 6`);

		// Record every value the progress bar shows, to see it move rather than jump to the end.
		await page.evaluate(`
			window.seen = [];
			new MutationObserver(() => window.seen.push(document.getElementById("progress").getAttribute("aria-valuenow")))
				.observe(document.getElementById("progress"), { attributes: true });
		`);

		const completion = system.nextCompletion();
		const started = await request(system.baseUrl, "POST", "/api/batcher/start", { body: { batchSize: 10 }, token: await system.token() });
		expect(started.status).toBe(202);
		await completion;

		await waitInPage(page, `document.getElementById("progress-text").textContent.startsWith("100.0%")`);
		expect(await page.textContent("#progress-text")).toContain("4,000 / 4,000");
		expect(await page.getAttribute("#progress", "aria-valuenow")).toBe("100.0");
		const seen = (await page.evaluate(`window.seen.map(Number)`)) as number[];
		expect(seen.some(v => v > 0 && v < 100)).toBe(true);

		await page.waitForSelector("#audit[data-verdict]", { timeout: 15_000 });
		expect(await page.getAttribute("#audit", "data-verdict")).toBe("passed");
		expect(await page.textContent("#run-status")).toBe("completed");

		const cells = await page.$$eval("#heatmap .key-cell", nodes => nodes.map(n => ({ keyId: n.getAttribute("data-key-id"), uses: Number(n.getAttribute("data-uses")) })));
		expect(cells).toHaveLength(6);
		expect(new Set(cells.map(c => c.keyId)).size).toBe(6);
		expect(cells.reduce((sum, c) => sum + c.uses, 0)).toBeGreaterThanOrEqual(400);
		expect(await page.$$eval("#batches tbody tr", rows => rows.length)).toBeGreaterThan(0);
		expect(await page.getAttribute("#throughput-line", "points")).not.toBe("");

		fs.mkdirSync(ARTIFACTS, { recursive: true });
		await page.screenshot({ path: path.join(ARTIFACTS, "dashboard.png"), fullPage: true });
		expect(pageErrors).toEqual([]);

		// The throughput chart has labelled axes with a scale.
		expect(await page.textContent("#axis-y-max")).toMatch(/^[\d,]+$/);
		expect(Number((await page.textContent("#axis-y-max"))!.replace(/,/g, ""))).toBeGreaterThan(0);
		expect(await page.textContent("#axis-x-end")).toMatch(/^\d+ s$/);
		expect(await page.$$eval("#throughput .axis text", nodes => nodes.map(n => n.textContent))).toEqual(expect.arrayContaining(["seconds since the run started", "records/s"]));

		const docs = await browser.newPage();
		await docs.goto(system.baseUrl + "/docs/");
		await docs.waitForSelector("#startRun");
		expect(await docs.$$eval("#operations section", s => s.length)).toBeGreaterThanOrEqual(14);
		await docs.screenshot({ path: path.join(ARTIFACTS, "docs.png"), fullPage: true });
	});

	test("a run cancelled from the dashboard shows plainly as cancelled", async () => {
		// Its own system, with records left to sign and one batch at a time: the run lasts.
		const slow = await startApiSystem({ records: 20_000, keys: 4, window: 1 });
		try {
			await cancelFromTheDashboard(slow);
		} finally {
			await slow.stop();
		}
	});

	async function cancelFromTheDashboard(system: ApiSystem): Promise<void> {
		const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
		const pageErrors: string[] = [];
		page.on("pageerror", err => pageErrors.push(err.message));
		await page.goto(system.baseUrl + "/");
		await page.fill("#token", await system.token());
		await page.fill("#batch-size", "5");
		const completion = system.nextCompletion();
		await page.click("#start-form button[type=submit]");
		await waitInPage(page, `!document.getElementById("cancel-run").disabled`);
		await page.click("#cancel-run");
		expect(await completion).toMatchObject({ status: "cancelled" });
		await waitInPage(page, `document.getElementById("run-status").textContent === "cancelled"`);
		expect(await page.getAttribute("#run-status", "class")).toBe("badge cancelled");
		expect(await page.textContent("#progress-text")).toMatch(/^CANCELLED: [\d,]+ records signed in this run, the rest wait for the next run/);
		expect(await page.isDisabled("#cancel-run")).toBe(true);
		await page.screenshot({ path: path.join(ARTIFACTS, "dashboard-cancelled.png"), fullPage: true });
		expect(pageErrors).toEqual([]);
	}
});
