// Ingest & jobs: per table the records per second (from the change of `records` between two
// polls of GET /v1/ingest), the last commit and its age, what waits in the write-ahead log
// and the rejected rows; the scheduled jobs with their last runs and failures.

import { ingestStatus, jobRuns, listJobs, runJob } from "./api.js";
import { $, age, badge, duration, facts, fill, formatBytes, formatNumber, h, table, timeEl } from "./dom.js";
import { can, guarded, showError } from "./state.js";

const POLL_MS = 2000;
const RUNS_SHOWN = 10;

let timer = null;
/** The previous poll: `{at (ms), records: Map(table → records)}`. */
let previous = null;
/** Rates of the last poll, kept when a poll comes too soon after the previous one. */
const rates = new Map();
const openJobs = new Set();

export function init() {
  $("#refresh-jobs").addEventListener("click", loadJobs);
}

export function reset() {
  previous = null;
  rates.clear();
  openJobs.clear();
}

export function show() {
  hide();
  poll();
  timer = setInterval(poll, POLL_MS);
  loadJobs();
}

export function hide() {
  if (timer) clearInterval(timer);
  timer = null;
}

async function poll() {
  let answer;
  try {
    answer = await ingestStatus();
  } catch (e) {
    if (e.status === 401 || e.status === 403) {
      hide();
      showError(e, "Ingest");
    }
    fill(
      $("#ingest"),
      h("p", { class: "muted" }, e.status === 404 ? "This server does not report ingest (GET /v1/ingest)." : `Ingest could not be read: ${e.message}`),
    );
    return;
  }
  if ($("#view-ingest").hidden) return;
  const now = performance.now();
  const tables = answer.tables || [];
  const seconds = previous ? (now - previous.at) / 1000 : 0;
  for (const t of tables) {
    const before = previous && previous.records.get(t.table);
    if (before !== undefined && seconds > 0.2) {
      rates.set(t.table, Math.max(0, (t.records - before) / seconds));
    }
  }
  previous = { at: now, records: new Map(tables.map((t) => [t.table, t.records])) };
  render(answer);
}

function render(answer) {
  const wal = answer.wal || {};
  const tables = (answer.tables || []).slice().sort((a, b) => a.table.localeCompare(b.table));
  fill(
    $("#ingest"),
    h(
      "div",
      { class: "cards" },
      stat("write-ahead log", formatBytes(wal.bytes), `${formatNumber(wal.segments)} segment${wal.segments === 1 ? "" : "s"}`, "wal"),
      stat(
        "oldest uncommitted",
        wal.oldest_uncommitted_age_seconds === null || wal.oldest_uncommitted_age_seconds === undefined
          ? "none"
          : duration(wal.oldest_uncommitted_age_seconds),
        "waiting for its Delta commit",
      ),
      stat(
        "records / s",
        formatRate([...rates.values()].reduce((a, b) => a + b, 0)),
        `over ${tables.length} table${tables.length === 1 ? "" : "s"}`,
      ),
    ),
    tables.length
      ? table(
          ["table", "records / s", "records", "rejected", "in the WAL", "bytes", "last commit", "age"],
          tables.map((t) => [
            h("a", { href: `#catalog/${encodeURIComponent(t.table)}`, dataset: { testid: "ingest-table" } }, t.table),
            h("span", { class: "num rate", dataset: { testid: "rate" } }, rates.has(t.table) ? formatRate(rates.get(t.table)) : "…"),
            formatNumber(t.records),
            t.rejected ? h("span", { class: "warn" }, formatNumber(t.rejected)) : "0",
            formatNumber(t.buffered),
            formatBytes(t.bytes),
            t.last_commit ? `v${t.last_commit.version}` : "–",
            t.last_commit ? h("time", { datetime: t.last_commit.at, title: t.last_commit.at }, age(t.last_commit.at)) : "–",
          ]),
          { testid: "ingest-tables" },
        )
      : h("p", { class: "muted" }, "Nothing ingested since the server started."),
  );
}

function formatRate(r) {
  if (r === undefined || r === null) return "–";
  if (r === 0) return "0";
  if (r < 10) return r.toFixed(1);
  return formatNumber(Math.round(r));
}

function stat(label, value, sub, testid) {
  return h(
    "div",
    { class: "card stat", testid },
    h("div", { class: "stat-label" }, label),
    h("div", { class: "stat-value" }, value),
    sub ? h("div", { class: "muted" }, sub) : null,
  );
}

// --- jobs -------------------------------------------------------------------------------

async function loadJobs() {
  const el = $("#jobs");
  const answer = await guarded("Jobs", () => listJobs());
  if (!answer) {
    fill(el, h("p", { class: "muted" }, "The jobs could not be read."));
    return;
  }
  const jobs = answer.jobs || [];
  if (!jobs.length) {
    fill(el, h("p", { class: "muted", testid: "no-jobs" }, "No scheduled jobs. Declare them in tarn.toml ([[jobs]]) or with PUT /v1/jobs/{name}."));
    return;
  }
  const runs = await Promise.all(
    jobs.map((job) =>
      jobRuns(job.name, RUNS_SHOWN)
        .then((a) => a.runs || [])
        .catch((e) => {
          if (e.status === 401 || e.status === 403) showError(e, `Runs of ${job.name}`);
          return null;
        }),
    ),
  );
  const admin = can("admin");
  const rows = [];
  jobs.forEach((job, i) => {
    const def = job.definition;
    const jobRuns = runs[i];
    const last = jobRuns && jobRuns[0];
    const failures = jobRuns ? jobRuns.filter((r) => r.state === "failed" || r.state === "timed_out").length : null;
    const output = def.into
      ? `→ ${def.into.table} (${def.into.mode || "append"})`
      : def.export
        ? `→ ${def.export.location} (${def.export.format || "parquet"})`
        : "";
    const toggle = h(
      "button",
      {
        type: "button",
        class: "link",
        "aria-expanded": openJobs.has(job.name) ? "true" : "false",
        dataset: { testid: "job-runs-toggle" },
        onclick: () => {
          if (openJobs.has(job.name)) openJobs.delete(job.name);
          else openJobs.add(job.name);
          loadJobs();
        },
      },
      openJobs.has(job.name) ? "▾" : "▸",
      " ",
      job.name,
    );
    rows.push(
      h(
        "tr",
        { dataset: { testid: "job", job: job.name } },
        h("td", {}, toggle, h("div", { class: "muted small" }, output)),
        h("td", {}, h("code", {}, def.schedule || ""), def.timezone ? h("div", { class: "muted small" }, def.timezone) : null),
        h("td", {}, timeEl(job.next_run)),
        h(
          "td",
          {},
          last
            ? [
                badge(last.state, stateClass(last.state)),
                " ",
                h("time", { datetime: last.started_at, title: last.started_at }, age(last.started_at)),
                last.rows !== null && last.rows !== undefined ? h("div", { class: "muted small" }, `${formatNumber(last.rows)} rows`) : null,
              ]
            : h("span", { class: "muted" }, jobRuns ? "never ran" : "–"),
        ),
        h(
          "td",
          {},
          failures === null ? "–" : failures ? h("span", { class: "warn", dataset: { testid: "job-failures" } }, `${failures} of the last ${jobRuns.length}`) : "0",
          last && last.error ? h("div", { class: "error-text small", dataset: { testid: "job-error" } }, last.error) : null,
        ),
        h(
          "td",
          {},
          admin
            ? h("button", { type: "button", dataset: { testid: "run-job" }, onclick: () => runNow(job.name) }, "Run now")
            : null,
        ),
      ),
    );
    if (openJobs.has(job.name)) {
      rows.push(
        h(
          "tr",
          { class: "detail" },
          h(
            "td",
            { colspan: "6" },
            facts([
              ["SQL", h("pre", { class: "sql" }, def.sql || "")],
              ["retries", def.retries ? `${def.retries.attempts} attempts, backoff ${def.retries.backoff}` : "–"],
              ["timeout", def.timeout || "–"],
              ["source", `${job.source}, updated ${age(job.updated_at)}`],
            ]),
            jobRuns && jobRuns.length
              ? table(
                  ["run", "attempt", "trigger", "state", "started", "took", "rows", "output", "error"],
                  jobRuns.map((r) => [
                    h("code", {}, r.run_id),
                    r.attempt,
                    r.trigger,
                    badge(r.state, stateClass(r.state)),
                    timeEl(r.started_at),
                    r.finished_at ? duration((Date.parse(r.finished_at) - Date.parse(r.started_at)) / 1000) : "…",
                    r.rows ?? "–",
                    r.output || "",
                    r.error ? h("span", { class: "error-text" }, r.error) : "",
                  ]),
                )
              : h("p", { class: "muted" }, "No runs yet."),
          ),
        ),
      );
    }
  });
  fill(
    el,
    h(
      "table",
      { class: "grid jobs-grid" },
      h("thead", {}, h("tr", {}, ["job", "schedule", "next run", "last run", "failures", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows),
    ),
  );
}

function stateClass(s) {
  return s === "succeeded" ? "ok" : s === "running" ? "info" : "bad";
}

async function runNow(name) {
  const started = await guarded(`Run ${name}`, () =>
    runJob(name),
  );
  if (started) {
    openJobs.add(name);
    await loadJobs();
    setTimeout(loadJobs, 2000);
  }
}
