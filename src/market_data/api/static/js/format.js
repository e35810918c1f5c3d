// Small formatting helpers shared by the views.
export const ms = (iso) => (iso ? Date.parse(iso) : null);

export function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// "2026-02-05 20:00" from an ISO time, as text (for textContent).
export function whenText(iso) {
  if (!iso) return "—";
  return String(iso).replace("T", " ").replace(/:00Z$|Z$/, "");
}

// The same, escaped for markup.
export function when(iso) {
  return esc(whenText(iso));
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.abs(seconds);
  if (s === 0) return "0 s";
  if (s < 1) return `${seconds.toFixed(2)} s`;
  if (s < 90) return `${Math.round(seconds)} s`;
  if (s < 5400) return `${Math.round(seconds / 60)} min`;
  if (s < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

export function relative(iso, now) {
  if (!iso) return "—";
  const delta = (Date.parse(iso) - now) / 1000;
  if (Math.abs(delta) < 1) return "just now";
  return delta >= 0 ? `in ${duration(delta)}` : `${duration(-delta)} ago`;
}

export function count(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

export function percent(ratio) {
  if (ratio === null || ratio === undefined) return "—";
  const p = ratio * 100;
  return `${p >= 99.995 ? "100" : p.toFixed(2)}%`;
}

export function pill(state) {
  return `<span class="pill ${esc(state)}">${esc(state)}</span>`;
}
