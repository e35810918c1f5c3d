// The series table: one row per series from /status, updated in place on every poll, sortable
// by any column, filterable, with a coverage strip per row loaded when the row scrolls into view.
import { count, duration, ms, percent, whenText } from "./format.js";
import { emptyStrip, loadStrip } from "./strip.js";

const TF_ORDER = ["1m", "5m", "15m", "30m", "1h", "2h", "3h", "4h", "6h", "8h", "12h", "1d", "1w", "14d", "1M"];
const STRIP_MAX_AGE_MS = 60_000; // a visible strip is redrawn at least this often

const rows = new Map(); // "SYMBOL tf" -> {tr, cells, series, strip, version, loadedAt, visible}
let sortKey = "symbol";
let sortDir = 1;
let filterTokens = [];
let onSelect = () => {};
let drawn = false;
let observer = null;

const sortValue = {
  symbol: (s) => s.symbol,
  tf: (s) => TF_ORDER.indexOf(s.timeframe),
  candles: (s) => s.candle_count,
  first: (s) => ms(s.first_candle) ?? Infinity,
  last: (s) => ms(s.last_candle) ?? -Infinity,
  lag: (s) => s.lag_seconds ?? Infinity,
  completeness: (s) => s.completeness ?? -1,
  gaps: (s) => s.open_gaps,
};

export function initTable(table, filterInput, select) {
  onSelect = select;
  observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const row = rows.get(entry.target.dataset.key);
      if (!row) continue;
      row.visible = entry.isIntersecting;
      if (row.visible) refreshStrip(row);
    }
  }, { root: table.closest(".table-wrap"), rootMargin: "200px 0px" });
  table.tHead.addEventListener("click", (event) => {
    const th = event.target.closest("th[data-key]");
    if (!th) return;
    const key = th.dataset.key;
    sortDir = key === sortKey ? -sortDir : (key === "symbol" || key === "tf" ? 1 : -1);
    sortKey = key;
    for (const other of table.tHead.querySelectorAll("th[data-key]")) {
      other.removeAttribute("aria-sort");
    }
    th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
    order(table.tBodies[0]);
  });
  filterInput.addEventListener("input", () => {
    filterTokens = filterInput.value.toLowerCase().split(/\s+/).filter(Boolean);
    applyFilter();
  });
}

function matches(series) {
  const text = `${series.symbol} ${series.timeframe}`.toLowerCase();
  return filterTokens.every((t) => (t === "gaps" ? series.open_gaps > 0 : text.includes(t)));
}

function applyFilter() {
  let shown = 0;
  for (const row of rows.values()) {
    row.tr.hidden = !matches(row.series);
    if (!row.tr.hidden) shown += 1;
  }
  document.getElementById("series-count").textContent =
    shown === rows.size ? `(${rows.size})` : `(${shown} of ${rows.size})`;
}

function order(tbody) {
  const value = sortValue[sortKey];
  const sorted = [...rows.values()].sort((a, b) => {
    const x = value(a.series);
    const y = value(b.series);
    if (x < y) return -sortDir;
    if (x > y) return sortDir;
    return a.tr.dataset.key < b.tr.dataset.key ? -1 : 1;
  });
  // Moving hundreds of rows every poll costs a relayout: only when the order changed.
  const now = tbody.children;
  if (now.length === sorted.length && sorted.every((row, i) => now[i] === row.tr)) return;
  const fragment = document.createDocumentFragment();
  for (const row of sorted) fragment.appendChild(row.tr);
  tbody.appendChild(fragment);
}

function newRow(series, key) {
  const tr = document.createElement("tr");
  tr.dataset.key = key;
  tr.dataset.symbol = series.symbol;
  tr.dataset.timeframe = series.timeframe;
  const cells = {};
  for (const name of ["symbol", "tf", "candles", "first", "last", "lag", "completeness", "gaps"]) {
    const td = document.createElement("td");
    td.className = name === "symbol" ? "sym" : "";
    if (["candles", "lag", "completeness", "gaps"].includes(name)) td.classList.add("num");
    tr.appendChild(td);
    cells[name] = td;
  }
  const stripCell = document.createElement("td");
  const strip = emptyStrip();
  strip.dataset.key = key;
  stripCell.appendChild(strip);
  tr.appendChild(stripCell);
  tr.tabIndex = 0; // reachable from the keyboard: Enter opens the chart
  tr.addEventListener("click", () => onSelect(series.symbol, series.timeframe));
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter") onSelect(series.symbol, series.timeframe);
  });
  observer.observe(strip);
  return { tr, cells, series, strip, version: "", loadedAt: 0, visible: false };
}

// Writes only what changed: hundreds of rows are refreshed every few seconds.
function put(td, text, className) {
  if (td.textContent !== text) td.textContent = text;
  if (className !== undefined && td.className !== className) td.className = className;
}

function fill(row, s) {
  const c = row.cells;
  put(c.symbol, s.symbol);
  put(c.tf, s.derived ? `${s.timeframe} (derived)` : s.timeframe);
  put(c.candles, count(s.candle_count));
  put(c.first, whenText(s.first_candle));
  put(c.last, whenText(s.last_candle));
  put(c.lag, duration(s.lag_seconds));
  const incomplete = s.completeness !== null && s.completeness < 0.999;
  put(c.completeness, percent(s.completeness), incomplete ? "num warn" : "num");
  put(c.gaps, String(s.open_gaps), s.open_gaps > 0 ? "num bad" : "num");
  row.series = s;
}

export function updateTable(table, statusBody) {
  const tbody = table.tBodies[0];
  const seen = new Set();
  for (const s of statusBody.series) {
    const key = `${s.symbol} ${s.timeframe}`;
    seen.add(key);
    let row = rows.get(key);
    if (!row) {
      row = newRow(s, key);
      rows.set(key, row);
      tbody.appendChild(row.tr);
    }
    fill(row, s);
    const version = `${s.open_gaps}|${s.first_candle}|${s.candle_count}`;
    if (version !== row.version) row.stale = true;
    row.version = version;
  }
  for (const [key, row] of rows) {
    if (!seen.has(key)) {
      observer.unobserve(row.strip);
      row.tr.remove();
      rows.delete(key);
    }
  }
  order(tbody);
  applyFilter();
  for (const row of rows.values()) if (row.visible) refreshStrip(row);
  if (!drawn) {
    drawn = true;
    performance.mark("table-drawn");
    document.body.dataset.tableDrawn = "true";
  }
}

function refreshStrip(row) {
  const now = Date.now();
  if (row.loading || (!row.stale && now - row.loadedAt < STRIP_MAX_AGE_MS)) return;
  row.loading = true;
  row.stale = false;
  loadStrip(row.strip, row.series.symbol, row.series.timeframe).finally(() => {
    row.loading = false;
    row.loadedAt = Date.now();
  });
}

export function markSelected(key) {
  for (const row of rows.values()) {
    const mine = row.tr.dataset.key === key;
    row.tr.classList.toggle("selected", mine);
    row.tr.setAttribute("aria-selected", String(mine));
  }
}

export function seriesFor(key) {
  return rows.get(key)?.series ?? null;
}
