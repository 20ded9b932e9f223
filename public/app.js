// Dashboard: live progress from GET /api/events, keys and batches polled from the API. No build step, no CDN.
"use strict";

const $ = id => document.getElementById(id);
const state = { runId: null, status: "idle", polling: null };

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
	$("rate-text").textContent = `${fmt(p.recordsPerSecond)} records/s average${rate}${p.elapsedSeconds !== undefined ? ` · ${Number(p.elapsedSeconds).toFixed(1)} s` : ""}`;
}

async function getJson(path) {
	const headers = {};
	const token = sessionStorage.getItem("token");
	if (token) headers.Authorization = `Bearer ${token}`;
	const response = await fetch(path, { headers });
	if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
	return response.json();
}

function drawThroughput(series) {
	const line = $("throughput-line");
	if (!series || series.length === 0) {
		line.setAttribute("points", "");
		$("throughput-max").textContent = "";
		return;
	}
	// Fill missing seconds with zero so a stall shows as a dip, not a straight line.
	const first = series[0][0];
	const last = series[series.length - 1][0];
	const bySecond = new Map(series);
	const values = [];
	for (let t = first; t <= last; t++) values.push(bySecond.get(t) || 0);
	const max = Math.max(...values, 1);
	// The plot area inside the axes (see index.html): x 50..630, y 10..160.
	const [left, right, top, bottom] = [50, 630, 10, 160];
	const step = values.length > 1 ? (right - left) / (values.length - 1) : 0;
	line.setAttribute("points", values.map((v, i) => `${(left + i * step).toFixed(1)},${(bottom - (v / max) * (bottom - top)).toFixed(1)}`).join(" "));
	$("axis-y-max").textContent = fmt(max);
	$("axis-y-mid").textContent = fmt(Math.round(max / 2));
	$("axis-x-end").textContent = `${values.length - 1} s`;
	$("throughput-max").textContent = `peak ${fmt(max)} records/s over ${values.length} s`;
}

function drawHeatmap(keys, metrics) {
	const map = $("heatmap");
	const leasedNow = new Set((metrics && metrics.leasedNow) || []);
	const maxUses = Math.max(1, ...keys.map(k => k.uses || 0));
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
	body.replaceChildren(...(recent || []).slice(0, 12).map(batch => {
		const row = document.createElement("tr");
		for (const value of [batch.batchId.split("-").pop(), batch.keyId || "–", batch.size, batch.status, batch.latencyMs ?? "–"]) {
			const cell = document.createElement("td");
			cell.textContent = String(value);
			row.append(cell);
		}
		return row;
	}));
}

async function refresh() {
	try {
		const [keys, metrics] = await Promise.all([getJson("/api/keys"), getJson("/api/metrics")]);
		drawHeatmap(keys, metrics);
		drawBatches(metrics.recentBatches);
		drawThroughput(metrics.throughput);
		if (state.status === "idle" && metrics.runId) {
			setStatus(metrics.status, metrics.runId);
			showProgress(metrics);
		}
	} catch (err) {
		$("rate-text").textContent = String(err.message || err);
	}
}

async function showAudit() {
	const target = $("audit");
	target.className = "muted";
	target.textContent = "auditing the stores…";
	$("audit-violations").replaceChildren();
	try {
		const report = await getJson("/api/audit");
		target.className = report.ok ? "ok" : "bad";
		const checked = report.checked ? ` (${fmt(report.checked.records)} records, ${fmt(report.checked.signatures)} signatures, ${fmt(report.checked.leases)} leases checked)` : "";
		target.textContent = `${report.ok ? "Audit passed" : "Audit FAILED"}${checked}`;
		target.dataset.verdict = report.ok ? "passed" : "failed";
		$("audit-violations").replaceChildren(...(report.violations || []).slice(0, 20).map(v => {
			const item = document.createElement("li");
			item.textContent = `${v.rule}: ${v.message}`;
			return item;
		}));
	} catch (err) {
		target.className = "bad";
		target.textContent = `audit unavailable: ${err.message || err}`;
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
	events.addEventListener("run.started", message => {
		const run = JSON.parse(message.data);
		setStatus("running", run.runId);
		showProgress({ records: run.records, signed: run.alreadySigned, recordsPerSecond: 0 });
		$("audit").className = "muted";
		$("audit").textContent = "the verdict appears when the run ends";
		delete $("audit").dataset.verdict;
		startPolling();
	});
	events.addEventListener("progress", message => {
		const progress = JSON.parse(message.data);
		showProgress(progress);
		if (progress.runId && state.status !== "running" && progress.status === undefined) setStatus("running", progress.runId);
	});
	events.addEventListener("run.completed", async message => {
		const { report, status, error } = JSON.parse(message.data);
		setStatus(status || "completed", report.runId);
		// A run that did not complete says so plainly, with what it left.
		if (status === "cancelled" || status === "failed")
			$("progress-text").textContent = `${status.toUpperCase()}: ${fmt(report.signedThisRun)} records signed in this run, the rest wait for the next run${error ? ` · ${error}` : ""}`;
		stopPolling();
		await refresh();
		await showAudit();
	});
	events.onerror = () => $("rate-text").textContent = "event stream reconnecting…";
}

$("start-form").addEventListener("submit", async event => {
	event.preventDefault();
	const token = $("token").value.trim() || sessionStorage.getItem("token") || "";
	if (token) sessionStorage.setItem("token", token);
	const response = await fetch("/api/batcher/start", {
		method: "POST",
		headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}`, "Idempotency-Key": crypto.randomUUID() },
		body: JSON.stringify({ batchSize: Number($("batch-size").value) })
	});
	const body = await response.json().catch(() => ({}));
	$("start-result").textContent = response.ok ? `started ${body.id}` : `${response.status} ${body.type || ""}: ${body.message || ""}`;
});

$("cancel-run").addEventListener("click", async () => {
	const token = $("token").value.trim() || sessionStorage.getItem("token") || "";
	if (token) sessionStorage.setItem("token", token);
	const response = await fetch(`/api/runs/${encodeURIComponent(state.runId)}/cancel`, { method: "POST", headers: { Authorization: `Bearer ${token}` } });
	const body = await response.json().catch(() => ({}));
	$("start-result").textContent = response.ok ? `cancelling ${body.id}: batches in flight finish first` : `${response.status} ${body.type || ""}: ${body.message || ""}`;
});

refresh();
connect();
