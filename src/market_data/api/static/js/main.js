// The dashboard: polls the JSON endpoints every few seconds and redraws each part in place.
// Read-only until the user enters the API token (kept in memory by api.js, never stored).
import { getJSON, hasToken, postAction, setToken } from "./api.js";
import { chartCandles, refreshLatest, showSeries } from "./chart.js";
import { count, duration, esc, whenText } from "./format.js";
import { drawGaps, drawJobs, drawLimiter, drawLoops, drawWebSocket } from "./panels.js";
import { drawStrip } from "./strip.js";
import { initTable, markSelected, seriesFor, updateTable } from "./table.js";

const $ = (id) => document.getElementById(id);
const requested = Number(new URLSearchParams(location.search).get("refresh"));
const REFRESH_S = Number.isFinite(requested) && requested >= 1 && requested <= 60 ? requested : 5;

let selected = null; // {symbol, timeframe}
let polling = false;

function toast(text, isError = false) {
  const el = $("toast");
  el.textContent = text;
  el.className = isError ? "error" : "";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 5000);
}

function drawSummary(status) {
  const items = [
    ["series", count(status.series.length)],
    ["open gaps", count(status.open_gaps)],
    ["uptime", duration(status.uptime_seconds)],
    ["backfill", esc(status.backfill.state)],
    ["database", esc(status.database) + (status.database_reachable ? "" : " (unreachable)")],
  ];
  $("summary").innerHTML = items.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${v}</dd></div>`).join("");
}

function drawHealth(health) {
  const el = $("health");
  el.textContent = health ? health.status : "down";
  el.className = `badge ${health ? health.status : "down"}`;
  el.title = health
    ? Object.entries(health.checks).map(([k, c]) => `${k}: ${c.status} (${c.detail})`).join("\n")
    : "the API did not answer";
}

async function health() {
  // 503 still carries the checks (database down): read the body either way.
  try {
    const response = await fetch("/health");
    return await response.json();
  } catch (_) {
    return null;
  }
}

async function select(symbol, timeframe) {
  selected = { symbol, timeframe };
  const key = `${symbol} ${timeframe}`;
  markSelected(key);
  history.replaceState(null, "", `${location.pathname}${location.search}#${encodeURIComponent(symbol)}/${encodeURIComponent(timeframe)}`);
  const series = seriesFor(key);
  $("detail").hidden = false;
  $("detail-title").textContent = `${symbol} · ${timeframe}`;
  $("detail-strip").innerHTML = "";
  await Promise.all([
    refreshDetailStrip(),
    showSeries($("chart"), symbol, timeframe, series ? series.first_candle : null),
  ]);
}

async function refreshDetailStrip() {
  if (!selected) return;
  const mine = selected;
  const body = await getJSON("/coverage", { symbol: mine.symbol, timeframe: mine.timeframe });
  if (selected !== mine) return;
  const strip = $("detail-strip");
  drawStrip(strip, body);
  strip.dataset.series = `${mine.symbol} ${mine.timeframe}`;
  const notable = body.runs.filter((r) => r.state !== "stored").length;
  $("strip-from").textContent = whenText(body.start);
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  $("strip-runs").textContent = `${plural(body.runs.length, "run")}, ${notable} not stored` +
    (body.truncated ? " (cut: too many gaps to list)" : "");
  $("strip-to").textContent = whenText(body.end);
}

async function poll(first = false) {
  if (polling) return;
  polling = true;
  try {
    const [status, checks, jobs, gaps] = await Promise.all([
      getJSON("/status"), health(), getJSON("/jobs", { limit: 10 }), getJSON("/gaps", { limit: 10 }),
    ]);
    const now = Date.parse(status.now);
    updateTable($("series-table"), status);
    drawSummary(status);
    drawHealth(checks);
    drawWebSocket($("ws-panel"), status.websocket, now);
    drawLoops($("loops-panel"), status.loops, now);
    drawLimiter($("limiter-panel"), status.rate_limiter);
    drawJobs($("jobs-panel"), jobs.jobs, now);
    drawGaps($("gaps-panel"), gaps.gaps);
    if (first) {
      const [symbol, timeframe] = location.hash.slice(1).split("/").map(decodeURIComponent);
      const wanted = symbol && timeframe && seriesFor(`${symbol} ${timeframe}`);
      const firstRow = document.querySelector("#series-table tbody tr:not([hidden])");
      if (wanted) await select(symbol, timeframe);
      else if (firstRow) await select(firstRow.dataset.symbol, firstRow.dataset.timeframe);
    } else if (selected) {
      await Promise.all([refreshDetailStrip(), refreshLatest()]);
    }
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (error) {
    drawHealth(null);
    toast(`Refresh failed: ${error.message}`, true);
  } finally {
    polling = false;
  }
}

function showActions() {
  const unlocked = hasToken();
  $("token-input").hidden = unlocked;
  $("token-unlock").hidden = unlocked;
  $("token-state").hidden = !unlocked;
  $("token-lock").hidden = !unlocked;
  $("repair-all").hidden = !unlocked;
  $("backfill-series").hidden = !unlocked;
}

async function act(path, params, what) {
  const result = await postAction(path, params);
  if (result.ok) {
    toast(result.detail || `${what} started`);
  } else {
    toast(`${what}: ${result.detail} (HTTP ${result.status})`, true);
    if (result.status === 401 || result.status === 403) {
      setToken(null);
      showActions();
    }
  }
  poll();
}

function initToken() {
  const unlock = () => {
    setToken($("token-input").value);
    $("token-input").value = "";
    showActions();
  };
  $("token-unlock").addEventListener("click", unlock);
  $("token-input").addEventListener("keydown", (e) => { if (e.key === "Enter") unlock(); });
  $("token-lock").addEventListener("click", () => { setToken(null); showActions(); });
  $("repair-all").addEventListener("click", () => act("/gaps/repair", {}, "Gap repair"));
  $("backfill-series").addEventListener("click", () => {
    if (selected) act("/backfill", { symbol: selected.symbol, timeframe: selected.timeframe }, "Backfill");
  });
  showActions();
}

function start() {
  initTable($("series-table"), $("filter"), (symbol, timeframe) => select(symbol, timeframe));
  initToken();
  // For checks and scripts: what the chart holds. Read-only.
  window.marketDataDashboard = { chartCandles, refreshSeconds: REFRESH_S };
  poll(true);
  setInterval(() => poll(), REFRESH_S * 1000);
}

if (window.LightweightCharts) start();
else window.addEventListener("load", start, { once: true });
