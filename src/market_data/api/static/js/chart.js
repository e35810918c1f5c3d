// The candlestick chart of the selected series (lightweight-charts, vendored): candles and
// volume from /candles; older candles are fetched as the user scrolls left, the newest ones are
// refreshed on every poll.
import { getJSON } from "./api.js";

const PAGE = 1000; // candles per /candles request
const LOAD_MARGIN = 50; // fetch older candles when fewer than this many are left of the view

const UP = "#2ea26b";
const DOWN = "#d8434b";

let chart = null;
let candleSeries = null;
let volumeSeries = null;
let current = null; // {symbol, timeframe, firstCandle, candles: [], loadingOlder, exhausted}

const toTime = (iso) => Math.floor(Date.parse(iso) / 1000);

function toBars(candles) {
  return candles.map((c) => ({
    time: toTime(c.ts), open: c.open, high: c.high, low: c.low, close: c.close,
  }));
}

function toVolumes(candles) {
  return candles.map((c) => ({
    time: toTime(c.ts), value: c.volume, color: c.close >= c.open ? "rgba(46,162,107,.45)" : "rgba(216,67,75,.45)",
  }));
}

function precisionFor(price) {
  const p = Math.abs(price);
  if (p >= 1000) return 1;
  if (p >= 10) return 2;
  if (p >= 1) return 4;
  return 6;
}

function ensureChart(container) {
  if (chart) return;
  const LWC = window.LightweightCharts;
  chart = LWC.createChart(container, {
    autoSize: true,
    layout: { background: { color: "#ffffff" }, textColor: "#3b4656", fontSize: 12 },
    grid: { vertLines: { color: "#f0f2f6" }, horzLines: { color: "#f0f2f6" } },
    timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#e3e7ee" },
    rightPriceScale: { borderColor: "#e3e7ee", scaleMargins: { top: 0.08, bottom: 0.28 } },
    crosshair: { mode: LWC.CrosshairMode.Normal },
  });
  candleSeries = chart.addSeries(LWC.CandlestickSeries, {
    upColor: UP, downColor: DOWN, borderVisible: false, wickUpColor: UP, wickDownColor: DOWN,
  });
  volumeSeries = chart.addSeries(LWC.HistogramSeries, {
    priceFormat: { type: "volume" }, priceScaleId: "volume", lastValueVisible: false,
    priceLineVisible: false,
  });
  chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.78, bottom: 0 } });
  chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
    if (range && range.from < LOAD_MARGIN) loadOlder();
  });
  chart.subscribeCrosshairMove((param) => {
    const bar = param && param.time ? param.seriesData.get(candleSeries) : null;
    showLegend(bar || lastBar());
  });
}

function lastBar() {
  if (!current || !current.candles.length) return null;
  const c = current.candles[current.candles.length - 1];
  return { open: c.open, high: c.high, low: c.low, close: c.close };
}

function showLegend(bar) {
  const el = document.getElementById("ohlc");
  if (!bar) {
    el.textContent = "";
    return;
  }
  const digits = precisionFor(bar.close);
  const f = (v) => v.toFixed(digits);
  el.textContent = `O ${f(bar.open)}  H ${f(bar.high)}  L ${f(bar.low)}  C ${f(bar.close)}`;
}

function render() {
  candleSeries.setData(toBars(current.candles));
  volumeSeries.setData(toVolumes(current.candles));
}

export async function showSeries(container, symbol, timeframe, firstCandle) {
  ensureChart(container);
  const mine = { symbol, timeframe, firstCandle, candles: [], loadingOlder: false, exhausted: false };
  current = mine;
  container.dataset.state = "loading";
  const body = await getJSON("/candles", { symbol, timeframe, limit: PAGE });
  if (current !== mine) return;
  mine.candles = body.candles;
  if (mine.candles.length) {
    const digits = precisionFor(mine.candles[mine.candles.length - 1].close);
    candleSeries.applyOptions({
      priceFormat: { type: "price", precision: digits, minMove: 10 ** -digits },
    });
  }
  render();
  chart.timeScale().fitContent();
  if (mine.candles.length > 150) {
    const n = mine.candles.length;
    chart.timeScale().setVisibleLogicalRange({ from: n - 150, to: n + 2 });
  }
  showLegend(lastBar());
  container.dataset.state = "ready";
  container.dataset.series = `${symbol} ${timeframe}`;
}

async function loadOlder() {
  const mine = current;
  if (!mine || mine.loadingOlder || mine.exhausted || !mine.candles.length) return;
  const end = mine.cursor ?? mine.candles[0].ts;
  if (!mine.firstCandle || Date.parse(end) <= Date.parse(mine.firstCandle)) {
    mine.exhausted = true;
    return;
  }
  mine.loadingOlder = true;
  try {
    const body = await getJSON("/candles", {
      symbol: mine.symbol, timeframe: mine.timeframe, end, limit: PAGE,
    });
    if (current !== mine) return;
    const oldest = mine.candles[0].ts;
    const older = body.candles.filter((c) => c.ts < oldest);
    // A stretch wider than a page without candles moves the cursor on without data.
    mine.cursor = older.length ? older[0].ts : body.start;
    if (older.length) {
      mine.candles = older.concat(mine.candles);
      render();
    }
  } finally {
    mine.loadingOlder = false;
  }
  const range = chart.timeScale().getVisibleLogicalRange();
  if (current === mine && range && range.from < LOAD_MARGIN) loadOlder();
}

// The newest candles again (the last one may still be open, and new ones close).
export async function refreshLatest() {
  const mine = current;
  if (!mine || !mine.candles.length) return;
  const body = await getJSON("/candles", { symbol: mine.symbol, timeframe: mine.timeframe, limit: 5 });
  if (current !== mine || !body.candles.length) return;
  const lastTs = mine.candles[mine.candles.length - 1].ts;
  let changed = false;
  for (const c of body.candles) {
    if (c.ts < lastTs) {
      const i = mine.candles.findIndex((x) => x.ts === c.ts);
      if (i >= 0 && JSON.stringify(mine.candles[i]) !== JSON.stringify(c)) {
        mine.candles[i] = c;
        changed = true;
      }
    } else if (c.ts === lastTs) {
      mine.candles[mine.candles.length - 1] = c;
      candleSeries.update(toBars([c])[0]);
      volumeSeries.update(toVolumes([c])[0]);
    } else {
      mine.candles.push(c);
      candleSeries.update(toBars([c])[0]);
      volumeSeries.update(toVolumes([c])[0]);
    }
  }
  if (changed) render();
  showLegend(lastBar());
}

// What the chart holds, for checks (the same objects setData got).
export function chartCandles() {
  return candleSeries ? candleSeries.data() : [];
}
