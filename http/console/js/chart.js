// A chart of the query's result with uPlot: line or bar, over a chosen x column and one or
// more y columns; drawn again when the query runs again.

import { resultPage } from "./api.js";
import { $, fill, h } from "./dom.js";
import { showError } from "./state.js";

/* global uPlot */

/** Most rows charted (the first ones of the result). */
const MAX_POINTS = 5000;
const COLORS = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#be185d", "#4d7c0f"];

let currentResult = () => null;
/** The chart was asked for: draw it again for every new result. */
let wanted = false;
/** `{id, columns, rows}` of the result whose rows were read for the chart. */
let data = null;
let plot = null;
let drawing = null;

const isNumeric = (type) => /^(u?int|float|double|decimal)/i.test(type || "");
const isTime = (type) => /^(timestamp|date)/i.test(type || "");

export function init(getResult) {
  currentResult = getResult;
  $("#chart-form").addEventListener("submit", (event) => {
    event.preventDefault();
    wanted = true;
    draw();
  });
  $("#chart-type").addEventListener("change", () => wanted && draw());
  $("#chart-x").addEventListener("change", () => wanted && draw());
  $("#chart-y").addEventListener("change", () => wanted && draw());
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => plot && visible() && plot.setSize(size()), 100);
  });
  empty("Run a query, then choose the x and y columns.");
}

function visible() {
  return !$("#result-chart").hidden && !$("#view-sql").hidden;
}

function size() {
  const el = $("#chart");
  return { width: Math.max(320, el.clientWidth - 8), height: 360 };
}

function empty(text) {
  if (plot) {
    plot.destroy();
    plot = null;
  }
  fill($("#chart"), h("p", { class: "muted pad", testid: "chart-empty" }, text));
}

/** A new result: offer its columns, keeping the chosen ones when they are still there. */
export function resultChanged() {
  const result = currentResult();
  data = null;
  if (!result) return;
  const columns = result.columns;
  const xSelect = $("#chart-x");
  const previousX = xSelect.value;
  const previousY = new Set(
    [...document.querySelectorAll("#chart-y input:checked")].map((i) => /** @type {HTMLInputElement} */ (i).value),
  );
  const names = columns.map((c) => c.name);
  const defaultX =
    (names.includes(previousX) && previousX) ||
    (columns.find((c) => isTime(c.type)) || columns.find((c) => !isNumeric(c.type)) || columns[0] || {}).name;
  fill(
    xSelect,
    columns.map((c) => h("option", { value: c.name, selected: c.name === defaultX }, `${c.name} (${c.type})`)),
  );
  const numeric = columns.filter((c) => isNumeric(c.type));
  let chosen = numeric.filter((c) => previousY.has(c.name)).map((c) => c.name);
  if (!chosen.length) {
    const first = numeric.find((c) => c.name !== defaultX);
    if (first) chosen = [first.name];
  }
  fill(
    $("#chart-y"),
    h("legend", {}, "Y"),
    numeric.length
      ? numeric.map((c) =>
          h(
            "label",
            { class: "check" },
            h("input", {
              type: "checkbox",
              value: c.name,
              checked: chosen.includes(c.name),
              dataset: { testid: "chart-y-option" },
            }),
            c.name,
          ),
        )
      : h("span", { class: "muted" }, "no numeric column"),
  );
  if (wanted) redraw();
  else empty("Choose the x and y columns, then Draw.");
}

/** Draws when the chart is wanted and on screen. */
export function redraw() {
  if (wanted && visible()) draw();
}

async function rowsOf(result) {
  if (data && data.id === result.id) return data;
  const page = await resultPage(result.id, MAX_POINTS);
  data = { id: result.id, columns: page.columns || result.columns, rows: page.rows || [], total: result.total };
  return data;
}

export async function draw() {
  const result = currentResult();
  if (!result) {
    empty("Run a query first.");
    return;
  }
  const mine = {};
  drawing = mine;
  let d;
  try {
    d = await rowsOf(result);
  } catch (e) {
    showError(e, "Reading the result for the chart");
    return;
  }
  if (drawing !== mine) return;
  const xName = $("#chart-x").value;
  const yNames = [...document.querySelectorAll("#chart-y input:checked")].map(
    (i) => /** @type {HTMLInputElement} */ (i).value,
  );
  const xi = d.columns.findIndex((c) => c.name === xName);
  const yis = yNames.map((n) => d.columns.findIndex((c) => c.name === n)).filter((i) => i >= 0);
  if (xi < 0 || !yis.length) {
    empty("Choose an x column and at least one numeric y column.");
    return;
  }
  const kind = $("#chart-type").value;
  const xType = d.columns[xi].type;
  const xMode = isTime(xType) ? "time" : isNumeric(xType) ? "number" : "category";
  const toNumber = (v) => {
    if (v === null || v === undefined || v === "") return null;
    const n = typeof v === "number" ? v : Number(v);
    return Number.isFinite(n) ? n : null;
  };
  const toX = (v) => {
    if (xMode === "time") {
      const t = typeof v === "number" ? v : Date.parse(v);
      return Number.isFinite(t) ? t / 1000 : null;
    }
    return toNumber(v);
  };
  let rows = d.rows;
  let labels = null;
  if (xMode === "category") {
    labels = rows.map((r) => (r[xi] === null ? "NULL" : String(r[xi])));
  } else {
    rows = rows.filter((r) => toX(r[xi]) !== null).sort((a, b) => toX(a[xi]) - toX(b[xi]));
  }
  const xs = xMode === "category" ? rows.map((_, i) => i) : rows.map((r) => toX(r[xi]));
  const series = yis.map((i) => rows.map((r) => toNumber(r[i])));
  const bars = kind === "bar";
  const barPaths = bars && uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 80] }) : null;
  const opts = {
    ...size(),
    class: "tarn-chart",
    scales: {
      x: {
        time: xMode === "time",
        ...(xMode === "category" || bars
          ? {
              range: (u, min, max) => {
                const pad = xMode === "category" ? 0.5 : (max - min) / Math.max(1, xs.length - 1) / 2 || 1;
                return [min - pad, max + pad];
              },
            }
          : {}),
      },
    },
    axes: [
      xMode === "category"
        ? {
            splits: () => xs.filter((_, i) => xs.length <= 40 || i % Math.ceil(xs.length / 40) === 0),
            values: (u, splits) => splits.map((i) => labels[i] ?? ""),
            rotate: xs.length > 12 ? -45 : 0,
            size: xs.length > 12 ? 80 : 40,
          }
        : {},
      {},
    ],
    legend: { show: true },
    cursor: { drag: { x: true, y: false } },
    series: [
      {
        label: xName,
        value: xMode === "category" ? (u, v) => (v === null || v === undefined ? "–" : labels[v] ?? "") : undefined,
      },
      ...yis.map((i, k) => ({
        label: d.columns[i].name,
        stroke: COLORS[k % COLORS.length],
        width: bars ? 1 : 2,
        fill: bars ? COLORS[k % COLORS.length] + (yis.length > 1 ? "88" : "cc") : undefined,
        paths: barPaths || undefined,
        points: { show: !bars && xs.length <= 60 },
        spanGaps: false,
      })),
    ],
  };
  if (plot) plot.destroy();
  const el = $("#chart");
  el.replaceChildren();
  plot = new uPlot(opts, [xs, ...series], el);
  const note =
    d.total > d.rows.length
      ? `The first ${d.rows.length.toLocaleString("en-US")} of ${d.total.toLocaleString("en-US")} rows.`
      : `${d.rows.length.toLocaleString("en-US")} rows.`;
  el.appendChild(h("p", { class: "muted chart-note", testid: "chart-note" }, note));
}
