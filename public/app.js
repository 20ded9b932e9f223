// Dashboard: live progress from GET /api/events, keys and batches polled from the API. No build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
	runId: null,
	status: "idle",
	polling: null,
	throughput: [],
	elapsedSeconds: 0,
	verdictRequest: 0,
};

function fmt(n) {
	return Number(n || 0).toLocaleString("en");
}

function setStatus(status, runId) {
	state.status = status;
	if (runId !== undefined) state.runId = runId;
	const badge = $("run-status");
	badge.textContent = status;
	badge.className = `badge ${status}`;
	$("run-id").textContent = state.runId || "";
	$("cancel-run").disabled = status !== "running";
}

function showProgress(p) {
	if (!p || !p.records) return;
	const share = Math.min(1, p.signed / p.records);
	const percent = (share * 100).toFixed(1);
	$("progress-fill").style.width = `${percent}%`;
	$("progress").setAttribute("aria-valuenow", percent);
	$("progress-text").textContent = `${percent}% · ${fmt(p.signed)} / ${fmt(p.records)} records`;
	const rate = p.currentRate !== undefined ? ` · now ${fmt(p.currentRate)} records/s` : "";
	$("rate-text").textContent =
		`${fmt(p.recordsPerSecond)} records/s average${rate}${p.elapsedSeconds !== undefined ? ` · ${Number(p.elapsedSeconds).toFixed(1)} s` : ""}`;
}

function authHeaders() {
	const token = sessionStorage.getItem("token");
	return token ? { Authorization: `Bearer ${token}` } : {};
}

async function getJson(path) {
	const response = await fetch(path, { headers: authHeaders() });
	if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
	return response.json();
}

const SVG = "http://www.w3.org/2000/svg";

function svgText(parent, text, attributes) {
	const node = document.createElementNS(SVG, "text");
	for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
	node.textContent = text;
	parent.append(node);
	return node;
}

function svgLine(parent, x1, y1, x2, y2) {
	const node = document.createElementNS(SVG, "line");
	for (const [name, value] of Object.entries({ x1, y1, x2, y2 }))
		node.setAttribute(name, value.toFixed(1));
	parent.append(node);
	return node;
}

/** 1, 2 or 5 times a power of ten, at least `rough`. */
function niceStep(rough) {
	const power = 10 ** Math.floor(Math.log10(Math.max(rough, 1e-9)));
	const unit = [1, 2, 5, 10].find((f) => f * power >= rough * (1 - 1e-9));
	return unit * power;
}

/** Seconds between x ticks: a step a reader counts in (…, 10, 15, 30, 60, 120, …). */
function timeStep(minimum) {
	const steps = [1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1800, 3600];
	return steps.find((s) => s >= minimum) ?? niceStep(minimum);
}

function boxesOverlap(a, b, gap = 0) {
	return (
		a.x < b.x + b.width + gap &&
		b.x < a.x + a.width + gap &&
		a.y < b.y + b.height &&
		b.y < a.y + a.height
	);
}

/**
 * The throughput chart, drawn in the SVG's own pixels (its viewBox follows its size) so it fills
 * its panel at any width, with text at its real size. Per-second counts are drawn as steps: one
 * step per second since the first signed batch, a stall shows as a drop to zero.
 */
function drawThroughput(series) {
	state.throughput = series || [];
	renderThroughput();
}

function renderThroughput() {
	const svg = $("throughput");
	const width = Math.round(svg.clientWidth);
	const height = Math.round(svg.clientHeight);
	if (width < 50 || height < 50) return;
	svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
	const axis = svg.querySelector(".axis");
	const grid = svg.querySelector(".grid");
	axis.replaceChildren();
	grid.replaceChildren();

	const series = state.throughput || [];
	// Fill missing seconds with zero so a stall shows as a dip, not a straight line.
	const values = [];
	let max = 0;
	let offset = 0;
	if (series.length) {
		const first = series[0][0];
		const last = series[series.length - 1][0];
		const bySecond = new Map(series);
		for (let t = first; t <= last; t++) values.push(bySecond.get(t) || 0);
		max = Math.max(...values);
		// The API keeps the last 120 s: a longer run's window starts that far into it.
		if (series.length >= 120 && state.elapsedSeconds > values.length + 1)
			offset = Math.floor(state.elapsedSeconds - values.length);
	}
	const seconds = Math.max(values.length, 1);

	// y: 0 up to a round number, a tick every ~45 px at most.
	const pad = 8;
	const titleSize = 14;
	const top = 12;
	const bottom = height - (pad + titleSize + 8 + 14 + 8);
	const yTicks = Math.max(2, Math.min(6, Math.floor((bottom - top) / 45)));
	const yStep = niceStep(Math.max(max, 1) / yTicks);
	const yMax = Math.max(yStep, Math.ceil(Math.max(max, 1) / yStep) * yStep);
	const yLabels = [];
	// Six-figure rates read better short: 1.5M, 250K.
	const yFormat =
		yMax >= 100_000
			? new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 }).format
			: fmt;
	for (let v = 0; v <= yMax + yStep / 2; v += yStep)
		yLabels.push({
			value: v,
			node: svgText(axis, yFormat(v), {
				class: "tick-y",
				"text-anchor": "end",
				"dominant-baseline": "middle",
			}),
		});
	const yLabelWidth = Math.max(...yLabels.map((l) => l.node.getComputedTextLength()));
	const left = pad + titleSize + 8 + Math.ceil(yLabelWidth) + 6;

	// x: seconds since the run started; the widest label sets how far apart the ticks must be.
	const probe = svgText(axis, `${offset + seconds} s`, { class: "tick-x" });
	const xLabelWidth = probe.getComputedTextLength();
	probe.remove();
	const right = width - Math.max(pad, Math.ceil(xLabelWidth / 2) + 4);
	const plotWidth = right - left;
	const xPerSecond = plotWidth / seconds;
	const xStep = timeStep(Math.max(xLabelWidth + 12, 48) / xPerSecond);
	const x = (t) => left + (t - offset) * xPerSecond;
	const y = (v) => bottom - (v / yMax) * (bottom - top);

	for (const label of yLabels) {
		label.node.setAttribute("x", (left - 6).toFixed(1));
		label.node.setAttribute("y", y(label.value).toFixed(1));
		if (label.value > 0) svgLine(grid, left, y(label.value), right, y(label.value));
	}
	yLabels[yLabels.length - 1].node.id = "axis-y-max";
	svgLine(axis, left, top, left, bottom);
	svgLine(axis, left, bottom, right, bottom);

	const firstTick = Math.ceil(offset / xStep) * xStep;
	let lastLabel = null;
	for (let t = firstTick; t <= offset + seconds; t += xStep) {
		svgLine(axis, x(t), bottom, x(t), bottom + 5);
		const node = svgText(axis, `${t} s`, {
			class: "tick-x",
			x: x(t).toFixed(1),
			y: bottom + 10,
			"text-anchor": "middle",
			"dominant-baseline": "hanging",
		});
		// Never two labels on top of each other, whatever the fonts: drop one that would touch the last.
		if (lastLabel && boxesOverlap(lastLabel.getBBox(), node.getBBox(), 6)) node.remove();
		else lastLabel = node;
	}
	if (lastLabel) lastLabel.id = "axis-x-end";
	svgText(axis, "seconds since the run started", {
		class: "title",
		x: ((left + right) / 2).toFixed(1),
		y: height - pad,
		"text-anchor": "middle",
	});
	svgText(axis, "records/s", {
		class: "title",
		x: pad + titleSize / 2,
		y: ((top + bottom) / 2).toFixed(1),
		"text-anchor": "middle",
		"dominant-baseline": "middle",
		transform: `rotate(-90 ${pad + titleSize / 2} ${((top + bottom) / 2).toFixed(1)})`,
	});

	const empty = $("throughput-empty");
	empty.textContent = values.length ? "" : "no batches signed yet";
	empty.setAttribute("x", ((left + right) / 2).toFixed(1));
	empty.setAttribute("y", ((top + bottom) / 2).toFixed(1));

	// Steps: second i (from the window's start) spans [i, i + 1).
	const points = [];
	values.forEach((v, i) =>
		points.push(
			`${x(offset + i).toFixed(1)},${y(v).toFixed(1)}`,
			`${x(offset + i + 1).toFixed(1)},${y(v).toFixed(1)}`,
		),
	);
	$("throughput-line").setAttribute("points", points.join(" "));
	if (points.length)
		$("throughput-area").setAttribute(
			"d",
			`M${x(offset).toFixed(1)},${bottom.toFixed(1)} L${points.join(" L")} L${x(offset + seconds).toFixed(1)},${bottom.toFixed(1)} Z`,
		);
	else $("throughput-area").removeAttribute("d");
	$("throughput-max").textContent = values.length
		? `peak ${fmt(max)} records/s over ${values.length} s`
		: "";
}

function drawHeatmap(keys, metrics) {
	const map = $("heatmap");
	const leasedNow = new Set((metrics && metrics.leasedNow) || []);
	const maxUses = Math.max(1, ...keys.map((k) => k.uses || 0));
	// Reuse cells: one per key, in key order.
	if (map.children.length !== keys.length) {
		map.replaceChildren(...keys.map(() => document.createElement("div")));
	}
	keys.forEach((key, i) => {
		const cell = map.children[i];
		const uses = key.uses || 0;
		const heat = uses / maxUses;
		cell.className = `key-cell${key.leased || leasedNow.has(key.keyId) ? " leased" : ""}`;
		cell.dataset.keyId = key.keyId;
		cell.dataset.uses = String(uses);
		cell.style.background = uses ? `hsl(${140 - heat * 120}, 70%, ${22 + heat * 30}%)` : "";
		cell.title = `${key.keyId}: ${uses} uses${key.leased ? ` · leased by ${key.holder || "?"}` : ""}`;
	});
}

function drawBatches(recent) {
	const body = $("batches").querySelector("tbody");
	body.replaceChildren(
		...(recent || []).slice(0, 12).map((batch) => {
			const row = document.createElement("tr");
			for (const value of [
				batch.batchId.split("-").pop(),
				batch.keyId || "–",
				batch.size,
				batch.status,
				batch.latencyMs ?? "–",
			]) {
				const cell = document.createElement("td");
				cell.textContent = String(value);
				row.append(cell);
			}
			return row;
		}),
	);
}

/** A follow run's inflow, backlog and signing lag; the card is hidden when none goes on. */
function showFollow(follow) {
	$("follow-card").hidden = !follow;
	if (!follow) return;
	$("follow-inflow").textContent = `${fmt(follow.inflowPerSecond)} records/s`;
	$("follow-backlog").textContent = count(follow.backlog, "records");
	const lag = follow.lagMs;
	$("follow-lag").textContent =
		follow.lastLagMs === null ? "none yet" : `${fmt(follow.lastLagMs)} ms`;
	$("follow-detail").textContent = lag.count
		? `signing lag over the last ${count(Math.min(lag.count, 2000), "batches")}: p50 ${fmt(lag.p50)} ms · p95 ${fmt(lag.p95)} ms · max ${fmt(lag.max)} ms (from a batch's oldest record's 202 to its stored signatures)`
		: "";
}

async function refresh() {
	try {
		const [keys, metrics] = await Promise.all([getJson("/api/keys"), getJson("/api/metrics")]);
		drawHeatmap(keys, metrics);
		drawBatches(metrics.recentBatches);
		showFollow(metrics.follow);
		// A run found going on (the page opened during it): keep its figures fresh.
		if (metrics.status === "running") startPolling();
		state.elapsedSeconds = Number(metrics.elapsedSeconds) || 0;
		drawThroughput(metrics.throughput);
		if (state.status === "idle" && metrics.runId) {
			setStatus(metrics.status, metrics.runId);
			showProgress(metrics);
		}
	} catch (err) {
		$("rate-text").textContent = String(err.message || err);
	}
}

const SINGULAR = {
	records: "record",
	signatures: "signature",
	batches: "batch",
	leases: "lease",
	keys: "key",
	runs: "run",
	violations: "violation",
};

function count(n, noun) {
	return `${fmt(n)} ${Number(n) === 1 ? SINGULAR[noun] || noun : noun}`;
}

/** The verdict panel with no verdict to show (yet): `text` says why. */
function showNoVerdict(text) {
	const target = $("audit");
	target.className = "muted";
	target.textContent = text;
	delete target.dataset.verdict;
	$("audit-detail").textContent = "";
	$("audit-detail").title = "";
	$("audit-violations").replaceChildren();
}

/** One answer of GET /api/audit: PASSED or FAILED, when it was checked, what it counted. */
function showVerdict(report) {
	const target = $("audit");
	const passed = report.ok === true;
	target.className = passed ? "ok" : "bad";
	target.dataset.verdict = passed ? "passed" : "failed";
	const violations = Number(report.violationCount ?? (report.violations || []).length);
	target.textContent = passed
		? "Audit PASSED"
		: `Audit FAILED · ${count(violations, "violations")}`;
	const parts = [];
	const at = report.checkedAt ? new Date(report.checkedAt) : null;
	const dated = at !== null && !Number.isNaN(at.getTime());
	if (dated)
		parts.push(
			`checked ${at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" })}`,
		);
	if (report.checked)
		parts.push(
			Object.entries(report.checked)
				.map(([noun, n]) => count(n, noun))
				.join(", "),
		);
	if (passed) parts.push("no violations");
	$("audit-detail").textContent = parts.join(" · ");
	$("audit-detail").title = dated ? report.checkedAt : "";
	const listed = (report.violations || []).slice(0, 20);
	$("audit-violations").replaceChildren(
		...listed.map((v) => {
			const item = document.createElement("li");
			item.textContent = `${v.rule}: ${v.message}`;
			return item;
		}),
	);
	if (violations > listed.length) {
		const more = document.createElement("li");
		more.className = "muted";
		more.textContent = `… and ${fmt(violations - listed.length)} more (npm run audit lists them)`;
		$("audit-violations").append(more);
	}
}

/**
 * Reads the last verdict from GET /api/audit (public; after a run completes the gateway audits
 * again). A run that starts meanwhile wins: its placeholder is not overwritten by an older answer.
 */
async function showAudit(waiting = "auditing the stores…") {
	const request = ++state.verdictRequest;
	showNoVerdict(waiting);
	try {
		const response = await fetch("/api/audit", { headers: authHeaders() });
		const report = await response.json().catch(() => null);
		if (request !== state.verdictRequest) return;
		if (response.ok && report && typeof report.ok === "boolean") showVerdict(report);
		else if (response.ok || response.status === 404)
			showNoVerdict("no audit verdict yet: the verdict appears when a run ends");
		else {
			showNoVerdict(
				`audit unavailable: ${response.status} ${(report && (report.message || report.type)) || ""}`.trim(),
			);
			$("audit").className = "bad";
		}
	} catch (err) {
		if (request !== state.verdictRequest) return;
		showNoVerdict(`audit unavailable: ${err.message || err}`);
		$("audit").className = "bad";
	}
}

function startPolling() {
	if (!state.polling) state.polling = setInterval(refresh, 1000);
}

function stopPolling() {
	clearInterval(state.polling);
	state.polling = null;
}

function connect() {
	const events = new EventSource("/api/events");
	events.addEventListener("run.started", (message) => {
		const run = JSON.parse(message.data);
		setStatus("running", run.runId);
		showProgress({ records: run.records, signed: run.alreadySigned, recordsPerSecond: 0 });
		state.verdictRequest++;
		showNoVerdict("the verdict appears when the run ends");
		startPolling();
	});
	events.addEventListener("progress", (message) => {
		const progress = JSON.parse(message.data);
		showProgress(progress);
		if (progress.runId && state.status !== "running" && progress.status === undefined)
			setStatus("running", progress.runId);
	});
	events.addEventListener("run.completed", async (message) => {
		const { report, status, error } = JSON.parse(message.data);
		setStatus(status || "completed", report.runId);
		// A run that did not complete says so plainly, with what it left.
		if (status === "cancelled" || status === "failed")
			$("progress-text").textContent =
				`${status.toUpperCase()}: ${fmt(report.signedThisRun)} records signed in this run, the rest wait for the next run${error ? ` · ${error}` : ""}`;
		stopPolling();
		await refresh();
		await showAudit();
	});
	events.onerror = () => ($("rate-text").textContent = "event stream reconnecting…");
}

$("start-form").addEventListener("submit", async (event) => {
	event.preventDefault();
	const token = $("token").value.trim() || sessionStorage.getItem("token") || "";
	if (token) sessionStorage.setItem("token", token);
	const response = await fetch("/api/batcher/start", {
		method: "POST",
		headers: {
			"Content-Type": "application/json",
			Authorization: `Bearer ${token}`,
			"Idempotency-Key": crypto.randomUUID(),
		},
		body: JSON.stringify({
			batchSize: Number($("batch-size").value),
			...($("follow").checked ? { follow: true } : {}),
		}),
	});
	const body = await response.json().catch(() => ({}));
	$("start-result").textContent = response.ok
		? `started ${body.id}`
		: `${response.status} ${body.type || ""}: ${body.message || ""}`;
});

$("cancel-run").addEventListener("click", async () => {
	const token = $("token").value.trim() || sessionStorage.getItem("token") || "";
	if (token) sessionStorage.setItem("token", token);
	const response = await fetch(`/api/runs/${encodeURIComponent(state.runId)}/cancel`, {
		method: "POST",
		headers: { Authorization: `Bearer ${token}` },
	});
	const body = await response.json().catch(() => ({}));
	$("start-result").textContent = response.ok
		? `cancelling ${body.id}: batches in flight finish first`
		: `${response.status} ${body.type || ""}: ${body.message || ""}`;
});

// On load: the figures, then the last audit verdict unless a run is under way (its own verdict comes when it ends).
async function start() {
	connect();
	await refresh();
	if (state.status !== "running") await showAudit("reading the last audit verdict…");
}

let resizing = null;
new ResizeObserver(() => {
	cancelAnimationFrame(resizing);
	resizing = requestAnimationFrame(renderThroughput);
}).observe($("throughput"));

start();
