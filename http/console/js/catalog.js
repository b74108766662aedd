// The catalog: the sidebar's tables, an overview of namespaces and tables, and one table in
// detail (columns, contract, partitions, statistics, history, and its `_rejected` table).

import { describeTable, listNamespaces, listTables, sql, tableHistory } from "./api.js";
import {
  $,
  badge,
  facts,
  fill,
  formatBytes,
  formatNumber,
  h,
  ident,
  table,
  timeEl,
} from "./dom.js";
import { guarded, setTables, state } from "./state.js";

let selected = null;
/** Increases with each rendering, so that a slow answer for an older one is dropped. */
let renderToken = 0;

export function init() {
  $("#table-filter").addEventListener("input", renderSidebar);
  $("#refresh-tables").addEventListener("click", () => loadTables());
}

export function reset() {
  selected = null;
  state.columns.clear();
  setTables([]);
  renderSidebar();
}

const qualified = (t) => t.qualified_name || `${t.namespace}.${t.name}`;

/** Reads `GET /v1/tables`, redraws the sidebar, then reads every table's columns (for the
 * editor's completion) in the background. */
export async function loadTables() {
  const answer = await guarded("Reading the catalog", () => listTables());
  if (!answer) return;
  const tables = (answer.tables || []).slice();
  tables.sort((a, b) => qualified(a).localeCompare(qualified(b)));
  setTables(tables);
  renderSidebar();
  if (!$("#view-catalog").hidden && !selected) renderOverview();
  loadColumns(tables.map(qualified));
}

async function loadColumns(names) {
  const queue = names.filter((n) => !state.columns.has(n)).slice(0, 500);
  const worker = async () => {
    while (queue.length) {
      const name = queue.shift();
      try {
        const info = await describeTable(name);
        state.columns.set(name, info.columns || []);
      } catch {
        // completion is best effort; the catalog view shows errors when a table is opened
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

function renderSidebar() {
  const filter = $("#table-filter").value.trim().toLowerCase();
  const list = $("#tables");
  const tables = state.tables.filter((t) => !filter || qualified(t).includes(filter));
  if (!state.tables.length) {
    fill(list, h("p", { class: "muted pad" }, "No tables yet."));
    return;
  }
  // Tables kept for another (`_rejected`, `_raw`) sit under their owner.
  const byOwner = new Map();
  for (const t of tables) {
    if (t.owner) {
      if (!byOwner.has(t.owner)) byOwner.set(t.owner, []);
      byOwner.get(t.owner).push(t);
    }
  }
  const known = new Set(tables.map(qualified));
  const groups = new Map();
  for (const t of tables) {
    if (t.owner && known.has(t.owner)) continue;
    if (!groups.has(t.namespace)) groups.set(t.namespace, []);
    groups.get(t.namespace).push(t);
  }
  const item = (t, child) =>
    h(
      "a",
      {
        href: `#catalog/${encodeURIComponent(qualified(t))}`,
        class: ["table-item", child ? "child" : "", qualified(t) === selected ? "active" : ""]
          .join(" ")
          .trim(),
        dataset: { table: qualified(t), testid: "table-item" },
        title: qualified(t),
      },
      h("span", { class: "name" }, child ? t.name.replace(/^.*?(_rejected|_raw)$/, "$1") : t.name),
      t.external ? badge("ext", "small") : null,
    );
  fill(
    list,
    [...groups.entries()].map(([namespace, members]) =>
      h(
        "div",
        { class: "ns-group" },
        h("div", { class: "ns" }, namespace),
        members.map((t) => [item(t, false), (byOwner.get(qualified(t)) || []).map((c) => item(c, true))]),
      ),
    ),
    tables.length ? null : h("p", { class: "muted pad" }, "No table matches."),
  );
}

export function show(arg) {
  selected = arg;
  renderSidebar();
  if (arg) renderTable(arg);
  else renderOverview();
}

export function hide() {}

function section(title, testid, ...body) {
  return h("section", { class: "panel", testid }, h("h3", {}, title), ...body);
}

async function renderOverview() {
  const token = ++renderToken;
  const view = $("#view-catalog");
  const namespaces = await guarded("Reading the namespaces", () => listNamespaces());
  if (token !== renderToken) return;
  fill(
    view,
    h("div", { class: "section-head" }, h("h2", {}, "Catalog")),
    h(
      "div",
      { class: "cards" },
      ((namespaces && namespaces.namespaces) || []).map((ns) =>
        h(
          "div",
          { class: "card stat", testid: "namespace" },
          h("div", { class: "stat-label" }, "namespace"),
          h("div", { class: "stat-value" }, ns.name),
          h("div", { class: "muted" }, `${ns.tables} table${ns.tables === 1 ? "" : "s"}`),
        ),
      ),
    ),
    section(
      "Tables",
      "table-overview",
      state.tables.length
        ? table(
            ["table", "kind", "partitioned by", "created"],
            state.tables.map((t) => [
              h("a", { href: `#catalog/${encodeURIComponent(qualified(t))}` }, qualified(t)),
              t.external
                ? `external ${t.external.format}`
                : t.owner
                  ? `kept for ${t.owner}`
                  : t.declared
                    ? "declared"
                    : "inferred",
              (t.partition_by || []).join(", ") || "–",
              timeEl(t.created_at),
            ]),
          )
        : h("p", { class: "muted" }, "No tables yet: send records to /v1/ingest/{table}, or declare one."),
    ),
  );
}

async function renderTable(name) {
  const token = ++renderToken;
  const view = $("#view-catalog");
  fill(view, h("p", { class: "muted" }, `Reading ${name}…`));
  const info = await guarded(`Reading ${name}`, () => describeTable(name));
  if (token !== renderToken) return;
  if (!info) {
    fill(view, h("p", { class: "muted" }, `${name} could not be read.`));
    return;
  }
  const full = `${info.namespace}.${info.name}`;
  state.columns.set(full, info.columns || []);
  const { stats } = info;
  const rejected = state.tables.find((t) => qualified(t) === `${full}_rejected`);
  const queryButton = h(
    "a",
    {
      class: "button",
      href: "#sql",
      testid: "query-table",
      onclick: () => {
        sessionStorage.setItem(
          "tarn.console.draft",
          `SELECT *\nFROM ${info.namespace}.${ident(info.name)}\nLIMIT 100`,
        );
      },
    },
    "Query in SQL",
  );
  const kind = info.external
    ? badge(`external ${info.external.format}`)
    : info.owner
      ? badge(`kept for ${info.owner}`)
      : info.created_by === "auto"
        ? badge("inferred from its first records")
        : badge(`declared (${info.created_by})`, "ok");

  const partitions = section("Partitions", "partitions", h("p", { class: "muted" }, "–"));
  const history = section("History", "commits", h("p", { class: "muted" }, "Reading…"));
  const rejectedPanel = rejected
    ? section(`Rejected rows: ${full}_rejected`, "rejected", h("p", { class: "muted" }, "Reading…"))
    : null;

  fill(
    view,
    h(
      "div",
      { class: "section-head" },
      h("h2", { testid: "table-name" }, full),
      kind,
      h("span", { class: "spacer" }),
      queryButton,
    ),
    info.comment ? h("p", { class: "comment" }, info.comment) : null,
    h(
      "div",
      { class: "cards", testid: "statistics" },
      stat("version", formatNumber(stats.version)),
      stat("rows", stats.rows === null || stats.rows === undefined ? "unknown" : formatNumber(stats.rows)),
      stat("files", formatNumber(stats.files)),
      stat("size", formatBytes(stats.bytes)),
      stat("last commit", timeEl(stats.last_commit, { relative: true })),
    ),
    section(
      "Columns",
      "columns",
      table(
        ["column", "type", "nullable", "origin", "comment"],
        (info.columns || []).map((c) => [
          h("code", { class: "colname" }, c.name),
          h("code", {}, c.type),
          c.nullable ? "yes" : "no",
          c.origin || "",
          c.comment || "",
        ]),
      ),
    ),
    contract(info),
    partitions,
    rejectedPanel,
    history,
    section(
      "Location",
      "location",
      facts([
        ["URL", h("code", {}, info.url || "–")],
        ["created", [timeEl(info.created_at), ` by ${info.created_by || "?"}`]],
        ["definition revision", String(info.revision ?? 0)],
        ...(info.updated_at ? [["definition changed", timeEl(info.updated_at)]] : []),
      ]),
    ),
  );

  // The slower parts, each on its own.
  guarded(`History of ${full}`, async () => {
    const answer = await tableHistory(full, 20);
    if (token !== renderToken) return;
    fill(
      history,
      h("h3", {}, "History"),
      table(
        ["version", "committed", "operation", "files added", "rows added"],
        (answer.commits || []).map((c) => [
          c.version,
          timeEl(c.timestamp),
          c.operation || "",
          c.files_added,
          c.rows_added ?? "–",
        ]),
      ),
    );
  });
  const partitionBy = info.partition_by || [];
  if (partitionBy.length && !info.external) {
    const cols = partitionBy.map(ident).join(", ");
    const q = `SELECT ${cols}, count(*) AS "rows" FROM ${info.namespace}.${ident(info.name)} GROUP BY ${cols} ORDER BY ${partitionBy.map((c) => `${ident(c)} DESC`).join(", ")} LIMIT 50`;
    guarded(`Partitions of ${full}`, async () => {
      const answer = await sql(q);
      if (token !== renderToken) return;
      fill(
        partitions,
        h("h3", {}, `Partitions by ${partitionBy.join(", ")}`),
        answer.rows.length
          ? table(answer.columns.map((c) => c.name), answer.rows)
          : h("p", { class: "muted" }, "No data yet."),
        answer.rows.length === 50 ? h("p", { class: "muted" }, "The 50 latest partitions.") : null,
      );
    });
  } else {
    fill(partitions, h("h3", {}, "Partitions"), h("p", { class: "muted" }, "Not partitioned."));
  }
  if (rejectedPanel) {
    const rname = `${info.namespace}.${ident(`${info.name}_rejected`)}`;
    guarded(`Rejected rows of ${full}`, async () => {
      const [count, latest] = await Promise.all([
        sql(`SELECT count(*) AS n FROM ${rname}`),
        sql(
          `SELECT rejected_at, rule, field, reason, source, record FROM ${rname} ORDER BY rejected_at DESC LIMIT 20`,
        ),
      ]);
      if (token !== renderToken) return;
      const n = count.rows[0] ? count.rows[0][0] : 0;
      fill(
        rejectedPanel,
        h("h3", {}, "Rejected rows ", h("a", { href: `#catalog/${encodeURIComponent(`${full}_rejected`)}` }, `${full}_rejected`)),
        h("p", { class: "muted", testid: "rejected-count" }, `${formatNumber(n)} row${n === 1 ? "" : "s"} rejected in all; the latest 20:`),
        latest.rows.length
          ? table(
              latest.columns.map((c) => c.name),
              latest.rows.map((r) => r.map((v, i) => (latest.columns[i].name === "record" ? h("code", { class: "record" }, String(v)) : v))),
            )
          : h("p", { class: "muted" }, "None."),
      );
    });
  }
}

function stat(label, value) {
  return h(
    "div",
    { class: "card stat" },
    h("div", { class: "stat-label" }, label),
    h("div", { class: "stat-value" }, value),
  );
}

function contract(info) {
  const rules = info.rules || [];
  const derived = info.derived || [];
  const unique = info.unique_key || [];
  const parts = [];
  parts.push(
    facts([
      ["unique key", unique.length ? h("code", {}, unique.join(", ")) : "none"],
      ["partitioned by", (info.partition_by || []).length ? h("code", {}, info.partition_by.join(", ")) : "not partitioned"],
      ["raw backup", info.raw_backup ? `yes (${info.namespace}.${info.name}_raw)` : "no"],
      ...(info.flush && Object.keys(info.flush).length
        ? [["flush", Object.entries(info.flush).map(([k, v]) => `${k} = ${v}`).join(", ")]]
        : []),
    ]),
  );
  parts.push(h("h4", {}, "Rules"));
  parts.push(
    rules.length
      ? table(
          ["rule", "check", "message"],
          rules.map((r) => [r.name, h("code", {}, r.check), r.message || ""]),
        )
      : h("p", { class: "muted" }, "No rules."),
  );
  parts.push(h("h4", {}, "Derived columns"));
  parts.push(
    derived.length
      ? table(
          ["column", "expression", "comment"],
          derived.map((d) => [h("code", {}, d.name), h("code", {}, d.expr), d.comment || ""]),
        )
      : h("p", { class: "muted" }, "None."),
  );
  return section("Contract", "contract", ...parts);
}
