// The live panels: WebSocket shards, loops, rate limiter, recent jobs and gaps; each redrawn
// in place from the latest poll.
import { count, duration, esc, pill, relative, when } from "./format.js";

function table(head, rows) {
  if (!rows.length) return '<p class="muted">none</p>';
  const th = head.map((h) => `<th${h.num ? ' class="num"' : ""}>${esc(h.label ?? h)}</th>`).join("");
  return `<table><thead><tr>${th}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function kv(pairs) {
  return `<dl class="kv">${pairs.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join("")}</dl>`;
}

export function drawWebSocket(el, ws, now) {
  if (!ws.enabled) {
    el.innerHTML = '<p class="muted">WebSocket ingestion is disabled (WS_INGESTION_ENABLED).</p>';
    return;
  }
  const d = ws.details || {};
  const shards = (d.shards || []).map((s) => `<tr><td>${esc(s.id)}</td><td>${pill(s.state)}</td>` +
    `<td class="num">${count(s.subscriptions)}</td><td>${relative(s.last_message, now)}</td>` +
    `<td class="num">${count(s.reconnects)}</td><td class="num">${count(s.messages)}</td></tr>`);
  el.innerHTML = kv([
    ["connections", `${count(ws.connections)} subscribed`],
    ["channels", `${count(ws.subscriptions)} of ${count(d.configured_channels)}`],
    ["queue", `${count(ws.queue_depth)} (max ${count(d.queue_max_depth)} of ${count(d.queue_bound)})`],
    ["last flush", relative(d.last_flush, now)],
    ["database outage", d.database_outage ? "yes" : "no"],
  ]) + table(["shard", "state", { label: "chans", num: true }, "last msg",
    { label: "reconn.", num: true }, { label: "msgs", num: true }], shards);
}

export function drawLoops(el, loops, now) {
  const rows = loops.map((l) => {
    const state = l.running ? "running" : l.consecutive_failures ? "failed" : "ok";
    const error = l.last_error ? ` title="${esc(l.last_error)}"` : "";
    return `<tr${error}><td>${esc(l.name)}</td><td>${pill(state)}</td>` +
      `<td>${relative(l.last_finish || l.last_start, now)}</td>` +
      `<td>${l.running ? "now" : relative(l.next_run, now)}</td>` +
      `<td class="num">${count(l.runs)}</td><td class="num">${count(l.failures)}</td></tr>`;
  });
  el.innerHTML = table(["loop", "state", "last run", "next run", { label: "runs", num: true },
    { label: "failures", num: true }], rows);
}

export function drawLimiter(el, limiter) {
  if (!limiter) {
    el.innerHTML = '<p class="muted">not reported</p>';
    return;
  }
  const waiting = Object.entries(limiter.waiting).map(([p, n]) => `${esc(p.toLowerCase())} ${n}`).join(" · ");
  const outcomes = Object.entries(limiter.rest_outcomes).map(([o, n]) => `${esc(o)} ${count(n)}`).join(" · ");
  const penalty = limiter.penalty_seconds_left > 0
    ? `<span class="pill failed">${duration(limiter.penalty_seconds_left)} left</span>`
    : '<span class="pill ok">clear</span>';
  el.innerHTML = kv([
    ["requests", count(limiter.requests)],
    ["429 answers", count(limiter.rate_limited)],
    ["gave up", count(limiter.gave_up)],
    ["penalty box", penalty],
    ["backoff", duration(limiter.current_backoff_seconds)],
    ["spacing", duration(limiter.delay_seconds)],
    ["waiting now", waiting || "—"],
    ["REST outcomes", outcomes || "—"],
  ]);
}

export function drawJobs(el, jobs, now) {
  const rows = jobs.map((j) => `<tr${j.last_error ? ` title="${esc(j.last_error)}"` : ""}>` +
    `<td>${esc(j.job_type)}</td><td>${esc(j.symbol ?? "all")} ${esc(j.timeframe ?? "")}</td>` +
    `<td>${pill(j.status)}</td><td>${relative(j.started_at, now)}</td>` +
    `<td class="num">${duration(j.duration_seconds)}</td>` +
    `<td class="num">${count(j.candles_fetched)}</td></tr>`);
  el.innerHTML = table(["job", "series", "status", "started", { label: "took", num: true },
    { label: "candles", num: true }], rows);
}

export function drawGaps(el, gaps) {
  const rows = gaps.map((g) => `<tr${g.last_error ? ` title="${esc(g.last_error)}"` : ""}>` +
    `<td>${esc(g.symbol)} ${esc(g.timeframe)}</td><td>${when(g.gap_start)}</td>` +
    `<td class="num">${count(g.missing_candles)}</td><td>${pill(g.status)}</td>` +
    `<td class="num">${count(g.attempts)}</td></tr>`);
  el.innerHTML = table(["series", "from", { label: "missing", num: true }, "status",
    { label: "attempts", num: true }], rows);
}
