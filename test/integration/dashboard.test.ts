/** The dashboard in headless Chromium during a real run: progress to 100%, one heat-map cell per key, the audit verdict. */
import fs from "node:fs";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { until } from "../support/cluster";
import { request, startApiSystem, type ApiSystem } from "../support/http";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/**
 * Polls `expression` in the page from here (each look is one DevTools evaluation): the pages'
 * Content-Security-Policy forbids the eval that Playwright's own in-page polling uses.
 */
async function waitInPage(
	page: import("playwright-core").Page,
	expression: string,
	timeoutMs = 10_000,
): Promise<void> {
	await until(
		`${expression} in the page`,
		timeoutMs,
		async () => Boolean(await page.evaluate(expression)),
		50,
	);
}
const ARTIFACTS = path.join(__dirname, "../..", "test-artifacts");

interface Box {
	text: string;
	left: number;
	right: number;
	top: number;
	bottom: number;
}

/** The chart's layout as drawn: its box, its panel's content box, and every axis label's box on screen. */
const CHART_LAYOUT = `(() => {
	const svg = document.getElementById("throughput");
	const panel = svg.closest(".card");
	const style = getComputedStyle(panel);
	const box = node => { const r = node.getBoundingClientRect(); return { text: node.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom }; };
	return {
		chart: box(svg),
		panelContentWidth: panel.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight),
		xLabels: [...svg.querySelectorAll(".axis .tick-x")].map(box),
		labels: [...svg.querySelectorAll(".axis text")].map(box)
	};
})()`;

/** The chart has been drawn at its current size (it redraws on resize, one frame later). */
const CHART_DRAWN = `(() => {
	const svg = document.getElementById("throughput");
	return svg.viewBox.baseVal.width === Math.round(svg.clientWidth) && svg.querySelectorAll(".axis .tick-x").length > 0;
})()`;

/** Pairs of boxes that overlap (touching edges do not). */
function overlapping(boxes: Box[]): string[] {
	const found: string[] = [];
	boxes.forEach((a, i) =>
		boxes.slice(i + 1).forEach((b) => {
			if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom)
				found.push(`"${a.text}" and "${b.text}"`);
		}),
	);
	return found;
}

/** The chart fills its panel's width, and no axis label overlaps another or leaves the chart. */
async function expectReadableChart(
	page: import("playwright-core").Page,
	minXLabels: number,
): Promise<void> {
	await waitInPage(page, CHART_DRAWN);
	const layout = (await page.evaluate(CHART_LAYOUT)) as {
		chart: Box;
		panelContentWidth: number;
		xLabels: Box[];
		labels: Box[];
	};
	const chartWidth = layout.chart.right - layout.chart.left;
	expect(chartWidth).toBeGreaterThanOrEqual(0.9 * layout.panelContentWidth);
	expect(layout.chart.bottom - layout.chart.top).toBeGreaterThanOrEqual(180);
	expect(layout.xLabels.length).toBeGreaterThanOrEqual(minXLabels);
	for (const label of layout.xLabels) expect(label.text).toMatch(/^\d+ s$/);
	// Left to right, in time order.
	const starts = layout.xLabels.map((l) => Number(l.text.split(" ")[0]));
	expect(starts).toEqual([...starts].sort((a, b) => a - b));
	expect(overlapping(layout.xLabels)).toEqual([]);
	expect(overlapping(layout.labels)).toEqual([]);
	for (const label of layout.labels) {
		expect(label.left).toBeGreaterThanOrEqual(layout.chart.left);
		expect(label.right).toBeLessThanOrEqual(layout.chart.right);
		expect(label.top).toBeGreaterThanOrEqual(layout.chart.top);
		expect(label.bottom).toBeLessThanOrEqual(layout.chart.bottom);
	}
}

describe("dashboard", () => {
	let system: ApiSystem;
	let browser: Browser;
	/** Set once a run on `system` has completed (the first test's). */
	let completedRun = false;

	beforeAll(async () => {
		if (!fs.existsSync(CHROMIUM))
			throw new Error(
				`Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`,
			);
		[system, browser] = await Promise.all([
			startApiSystem({ records: 4000, keys: 6, window: 2 }),
			chromium.launch({
				executablePath: CHROMIUM,
				args: [
					"--headless",
					"--no-sandbox",
					"--disable-gpu",
					"--disable-quic",
					"--no-first-run",
					"--disable-background-networking",
					"--disable-component-update",
					"--disable-sync",
				],
			}),
		]);
	});
	afterAll(async () => {
		await browser?.close();
		await system?.stop();
	});

	test("shows progress reaching 100% during a run, a cell per key, and the audit verdict", async () => {
		const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
		const pageErrors: string[] = [];
		page.on("pageerror", (err) => pageErrors.push(err.message));
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
		const started = await request(system.baseUrl, "POST", "/api/batcher/start", {
			body: { batchSize: 10 },
			token: await system.token(),
		});
		expect(started.status).toBe(202);
		await completion;
		completedRun = true;

		await waitInPage(
			page,
			`document.getElementById("progress-text").textContent.startsWith("100.0%")`,
		);
		expect(await page.textContent("#progress-text")).toContain("4,000 / 4,000");
		expect(await page.getAttribute("#progress", "aria-valuenow")).toBe("100.0");
		const seen = (await page.evaluate(`window.seen.map(Number)`)) as number[];
		expect(seen.some((v) => v > 0 && v < 100)).toBe(true);

		await page.waitForSelector("#audit[data-verdict]", { timeout: 15_000 });
		expect(await page.getAttribute("#audit", "data-verdict")).toBe("passed");
		expect(await page.textContent("#run-status")).toBe("completed");

		const cells = await page.$$eval("#heatmap .key-cell", (nodes) =>
			nodes.map((n) => ({
				keyId: n.getAttribute("data-key-id"),
				uses: Number(n.getAttribute("data-uses")),
			})),
		);
		expect(cells).toHaveLength(6);
		expect(new Set(cells.map((c) => c.keyId)).size).toBe(6);
		expect(cells.reduce((sum, c) => sum + c.uses, 0)).toBeGreaterThanOrEqual(400);
		expect(await page.$$eval("#batches tbody tr", (rows) => rows.length)).toBeGreaterThan(0);
		expect(await page.getAttribute("#throughput-line", "points")).not.toBe("");

		fs.mkdirSync(ARTIFACTS, { recursive: true });
		await page.screenshot({ path: path.join(ARTIFACTS, "dashboard.png"), fullPage: true });
		expect(pageErrors).toEqual([]);

		// The throughput chart has labelled axes with a scale.
		expect(await page.textContent("#axis-y-max")).toMatch(/^[\d,]+$/);
		expect(Number((await page.textContent("#axis-y-max"))!.replace(/,/g, ""))).toBeGreaterThan(
			0,
		);
		expect(await page.textContent("#axis-x-end")).toMatch(/^\d+ s$/);
		expect(
			await page.$$eval("#throughput .axis text", (nodes) => nodes.map((n) => n.textContent)),
		).toEqual(expect.arrayContaining(["seconds since the run started", "records/s"]));

		const docs = await browser.newPage();
		await docs.goto(system.baseUrl + "/docs/");
		await docs.waitForSelector("#startRun");
		expect(await docs.$$eval("#operations section", (s) => s.length)).toBeGreaterThanOrEqual(
			14,
		);
		await docs.screenshot({ path: path.join(ARTIFACTS, "docs.png"), fullPage: true });
	});

	test("a page opened after a run shows the last audit verdict, and a chart that fills its panel with readable axes", async () => {
		if (!completedRun) {
			const completion = system.nextCompletion();
			expect(
				(
					await request(system.baseUrl, "POST", "/api/batcher/start", {
						body: { batchSize: 10 },
						token: await system.token(),
					})
				).status,
			).toBe(202);
			await completion;
		}
		// What anyone may read: the last verdict.
		const verdict = await request(system.baseUrl, "GET", "/api/audit");
		expect(verdict.status).toBe(200);
		expect(verdict.body).toMatchObject({ ok: true, checked: { records: 4000 } });

		const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
		const pageErrors: string[] = [];
		page.on("pageerror", (err) => pageErrors.push(err.message));
		await page.goto(system.baseUrl + "/");
		await page.waitForSelector("#audit[data-verdict]", { timeout: 15_000 });
		expect(await page.getAttribute("#audit", "data-verdict")).toBe("passed");
		expect(await page.textContent("#audit")).toContain("PASSED");
		const detail = (await page.textContent("#audit-detail"))!;
		expect(detail).toMatch(/^checked /);
		expect(detail).toContain(`${verdict.body.checked.records.toLocaleString("en")} records`);
		expect(detail).toContain(
			`${verdict.body.checked.signatures.toLocaleString("en")} signatures`,
		);
		expect(detail).toContain("no violations");
		// When: the verdict's own time, from this run's audit (not older than the run).
		const checkedAt = Date.parse((await page.getAttribute("#audit-detail", "title"))!);
		expect(Date.now() - checkedAt).toBeLessThan(10 * 60_000);
		expect(await page.textContent("#audit")).not.toContain("appears when");

		await waitInPage(
			page,
			`document.getElementById("throughput-line").getAttribute("points") !== ""`,
		);
		fs.mkdirSync(ARTIFACTS, { recursive: true });
		for (const [width, height] of [
			[1280, 800],
			[800, 600],
			[400, 700],
		]) {
			await page.setViewportSize({ width, height });
			await expectReadableChart(page, 2);
			await page.screenshot({
				path: path.join(ARTIFACTS, `dashboard-after-run-${width}x${height}.png`),
				fullPage: true,
			});
		}

		// A long run's window (its last 120 s) with six-figure rates: ticks thin out as the chart narrows.
		await page.evaluate(
			`state.elapsedSeconds = 400.3; drawThroughput(Array.from({ length: 120 }, (_, i) => [1700000280 + i, i % 37 === 5 ? 0 : Math.round(900000 + 300000 * Math.sin(i / 9))]))`,
		);
		for (const width of [1280, 800, 360]) {
			await page.setViewportSize({ width, height: 800 });
			await expectReadableChart(page, 3);
		}
		// Seconds since the run started, not since the window's start.
		const ticks = (await page.$$eval("#throughput .tick-x", (nodes) =>
			nodes.map((n) => Number(n.textContent!.split(" ")[0])),
		)) as number[];
		for (const t of ticks) expect(t >= 280 && t <= 400).toBe(true);
		expect(pageErrors).toEqual([]);
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

	test("during a follow run started from the dashboard it shows the inflow, the backlog and the signing lag", async () => {
		const follow = await startApiSystem({ records: 10, keys: 2, batchSize: 50 });
		try {
			const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
			const pageErrors: string[] = [];
			page.on("pageerror", (err) => pageErrors.push(err.message));
			await page.goto(follow.baseUrl + "/");
			expect(await page.isHidden("#follow-card")).toBe(true);
			await page.fill("#token", await follow.token("runs:write"));
			await page.fill("#batch-size", "50");
			await page.check("#follow");
			await page.click("#start-form button[type=submit]");
			await waitInPage(page, `!document.getElementById("follow-card").hidden`);

			// Records arrive, a request every 100 ms: the card shows them coming in and signed within the linger.
			const token = await follow.token("records:write");
			for (let i = 0; i < 20; i++) {
				await request(follow.baseUrl, "POST", "/api/records", {
					body: { records: [{ id: `dash-${i}`, data: "x" }] },
					token,
				});
				await new Promise((resolve) => setTimeout(resolve, 100));
			}
			await waitInPage(
				page,
				`/^[1-9][\\d,]* records\\/s$/.test(document.getElementById("follow-inflow").textContent)`,
			);
			await waitInPage(
				page,
				`/^\\d[\\d,]* ms$/.test(document.getElementById("follow-lag").textContent)`,
			);
			const lag = Number((await page.textContent("#follow-lag"))!.replace(/\D/g, ""));
			expect(lag).toBeGreaterThanOrEqual(150);
			expect(lag).toBeLessThan(1_000);
			expect(await page.textContent("#follow-backlog")).toMatch(/^\d+ records?$/);
			expect(await page.textContent("#follow-detail")).toMatch(/signing lag over the last/);
			await page.screenshot({
				path: path.join(ARTIFACTS, "dashboard-follow.png"),
				fullPage: true,
			});
			expect(pageErrors).toEqual([]);
		} finally {
			await follow.stop();
		}
	});

	async function cancelFromTheDashboard(system: ApiSystem): Promise<void> {
		const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
		const pageErrors: string[] = [];
		page.on("pageerror", (err) => pageErrors.push(err.message));
		await page.goto(system.baseUrl + "/");
		await page.fill("#token", await system.token());
		await page.fill("#batch-size", "5");
		const completion = system.nextCompletion();
		await page.click("#start-form button[type=submit]");
		await waitInPage(page, `!document.getElementById("cancel-run").disabled`);
		// No verdict while the run goes on: it comes when the run ends.
		expect(await page.textContent("#audit")).toBe("the verdict appears when the run ends");
		expect(await page.getAttribute("#audit", "data-verdict")).toBeNull();
		await page.click("#cancel-run");
		expect(await completion).toMatchObject({ status: "cancelled" });
		await waitInPage(page, `document.getElementById("run-status").textContent === "cancelled"`);
		expect(await page.getAttribute("#run-status", "class")).toBe("badge cancelled");
		expect(await page.textContent("#progress-text")).toMatch(
			/^CANCELLED: [\d,]+ records signed in this run, the rest wait for the next run/,
		);
		expect(await page.isDisabled("#cancel-run")).toBe(true);
		await page.screenshot({
			path: path.join(ARTIFACTS, "dashboard-cancelled.png"),
			fullPage: true,
		});
		expect(pageErrors).toEqual([]);
	}
});
