// Coverage strips: GET /coverage runs drawn as SVG rects over [start, end). Each rect carries
// its state and bounds (data-state, data-start, data-end) and a tooltip.
import { getJSON } from "./api.js";
import { esc, when } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1000; // viewBox units across the strip
// Gaps stay visible however short: a one-minute gap in a year still shows. (Not empty runs: a
// pair with many quiet minutes would look all empty.)
const MIN_WIDTH = 3;
const WIDENED = new Set(["gap", "failed"]);

export function drawStrip(svg, coverage) {
  const start = Date.parse(coverage.start);
  const end = Date.parse(coverage.end);
  const span = Math.max(1, end - start);
  const parts = [];
  // Settled runs first, then what needs attention on top.
  const order = { stored: 0, unknown: 1, empty: 2, gap: 3, failed: 4 };
  const runs = [...coverage.runs].sort((a, b) => order[a.state] - order[b.state]);
  for (const run of runs) {
    const a = ((Date.parse(run.start) - start) / span) * WIDTH;
    let w = ((Date.parse(run.end) - Date.parse(run.start)) / span) * WIDTH;
    if (WIDENED.has(run.state) && w < MIN_WIDTH) w = MIN_WIDTH;
    parts.push(
      `<rect class="${esc(run.state)}" x="${a.toFixed(3)}" y="0" width="${w.toFixed(3)}" ` +
      `height="10" data-state="${esc(run.state)}" data-start="${esc(run.start)}" ` +
      `data-end="${esc(run.end)}"><title>${esc(run.state)}: ${when(run.start)} → ` +
      `${when(run.end)}</title></rect>`,
    );
  }
  svg.innerHTML = parts.join("");
  svg.dataset.start = coverage.start;
  svg.dataset.end = coverage.end;
  svg.dataset.loaded = "true";
}

// At most a few /coverage requests at a time, however many strips scroll into view.
const queue = [];
let running = 0;
const CONCURRENCY = 4;

export function loadStrip(svg, symbol, timeframe) {
  return new Promise((resolve) => {
    queue.push(async () => {
      try {
        drawStrip(svg, await getJSON("/coverage", { symbol, timeframe }));
      } catch (_) {
        svg.dataset.loaded = "error";
      }
      resolve();
    });
    pump();
  });
}

function pump() {
  while (running < CONCURRENCY && queue.length) {
    const job = queue.shift();
    running += 1;
    job().finally(() => {
      running -= 1;
      pump();
    });
  }
}

export function emptyStrip() {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "strip");
  svg.setAttribute("viewBox", `0 0 ${WIDTH} 10`);
  svg.setAttribute("preserveAspectRatio", "none");
  return svg;
}
