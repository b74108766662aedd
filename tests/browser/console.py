"""Drives Tarn's web console in headless Chromium, as a person would, and screenshots each view.

Usage:
  python console.py <server url> <screenshots dir>
      An open server (no API keys) with the tables `events` (examples/clickstream, with rejected
      rows) and `readings` (more than 100 rows of ts, sensor, temperature, humidity), and at
      least one job that ran. Opens a table and reads its columns, types a query into the editor
      and runs it with Ctrl+Enter, pages the result, downloads it as CSV, charts it, runs it
      again, and looks at Ingest & jobs.
  python console.py <server url> <screenshots dir> keys <query key> <ingest key>
      A server with API keys: `<query key>` has the scope `query`, `<ingest key>` only
      `ingest:events`. The login form appears; a wrong key is refused with the server's
      message; the ingest key does not see the catalog, SQL or jobs, sends a record to
      `events` and is shown the 403 of another table; the query key sees the catalog and the
      editor but no ingest form, and a statement that writes is refused visibly.

Prints one `ok: ...` line per checked step, then `done`; exits non-zero with `FAIL: ...` (and
a screenshot `failure-open.png` or `failure-keys.png`) at the first step that fails. Chromium
is Debian's (/usr/bin/chromium, or TARN_TEST_CHROMIUM); Playwright drives it and downloads no
browser.
"""
import json
import os
import re
import sys

from playwright.sync_api import sync_playwright

import chromium

TIMEOUT_MS = 20_000


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def ok(message):
    print(f"ok: {message}", flush=True)


def testid(name):
    return f'[data-testid="{name}"]'


def error_text(page):
    return page.locator(testid("error")).inner_text().strip()


def type_sql(page, sql):
    """Replaces the editor's text by typing `sql` on the keyboard."""
    page.locator(f"{testid('sql-editor')} .CodeMirror").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.type(sql)


def run_with_ctrl_enter(page):
    page.keyboard.press("Control+Enter")
    state = page.locator(testid("query-state"))
    state.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(
        """() => { const s = document.querySelector('[data-testid="query-state"]');
                   return s && ['succeeded', 'failed', 'cancelled'].includes(s.textContent); }""",
        timeout=TIMEOUT_MS,
    )
    if state.inner_text() == "succeeded":
        # The state shows before the first page of the result is read and drawn.
        page.wait_for_function(
            """() => { const i = document.querySelector('[data-testid="page-info"]');
                       return i && /( of |^0 rows$)/.test(i.textContent); }""",
            timeout=TIMEOUT_MS,
        )
    return state.inner_text()


def page_info(page):
    return page.locator(testid("page-info")).inner_text().strip()


def grid_rownums(page):
    return page.locator(f"{testid('results')} tbody td.rownum").all_inner_texts()


def open_console(page, shots):
    """Without keys: catalog, editor, paging, download, chart, ingest & jobs."""
    # Catalog: the sidebar lists the tables; a click shows the table.
    items = page.locator(f"{testid('tables')} {testid('table-item')}")
    items.first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="table-item"]')]
                   .some(a => a.dataset.table === 'default.readings')""",
        timeout=TIMEOUT_MS,
    )
    names = [items.nth(i).get_attribute("data-table") for i in range(items.count())]
    check("default.events" in names, f"events is not in the sidebar: {names}")
    ok(f"tables listed: {','.join(names)}")

    page.locator(f'{testid("tables")} [data-table="default.events"]').click()
    columns = page.locator(f"{testid('columns')} tbody tr td:first-child")
    columns.first.wait_for(timeout=TIMEOUT_MS)
    shown = columns.all_inner_texts()
    check("event_id" in shown, f"the columns of events are not shown: {shown}")
    ok(f"table columns shown: {','.join(shown)}")
    contract = page.locator(testid("contract")).inner_text()
    check("known_event" in contract and "event_date" in contract, f"contract: {contract}")
    ok("contract shown: rules known_event, priced_purchase; derived event_date; unique key event_id")
    page.locator(f"{testid('partitions')} table").wait_for(timeout=TIMEOUT_MS)
    partitions = page.locator(f"{testid('partitions')} tbody tr").count()
    ok(f"partitions shown: {partitions}")
    page.locator(f"{testid('commits')} table").wait_for(timeout=TIMEOUT_MS)
    commits = page.locator(f"{testid('commits')} tbody tr").count()
    ok(f"history shown: {commits} commits")
    rejected = page.locator(testid("rejected-count"))
    rejected.wait_for(timeout=TIMEOUT_MS)
    reasons = page.locator(f"{testid('rejected')} tbody tr").all_inner_texts()
    check(any("unknown event type" in r for r in reasons), f"rejected reasons: {reasons}")
    ok(f"rejected rows shown: {rejected.inner_text().split(' rejected')[0]}")
    page.screenshot(path=os.path.join(shots, "catalog.png"), full_page=True)

    # The editor: completion of a column of the table after FROM.
    page.locator(testid("tab-sql")).click()
    page.locator(f"{testid('sql-editor')} .CodeMirror").wait_for(timeout=TIMEOUT_MS)
    type_sql(page, "SELECT * FROM readings WHERE hum")
    page.keyboard.press("Control+Space")
    hints = page.locator(".CodeMirror-hints li")
    hints.first.wait_for(timeout=TIMEOUT_MS)
    offered = hints.all_inner_texts()
    check("humidity" in offered, f"completion offered {offered}")
    page.keyboard.press("Escape")
    ok(f"completion offers: {','.join(offered)}")

    # A query typed on the keyboard, run with Ctrl+Enter; its result is paged.
    sql = "SELECT ts, sensor, temperature, humidity FROM readings ORDER BY ts"
    type_sql(page, sql)
    state = run_with_ctrl_enter(page)
    check(state == "succeeded", f"the query {state}: {error_text(page)}")
    info = page_info(page)
    total = int(re.search(r"of ([\d,]+)", info).group(1).replace(",", ""))
    check(total > 100, f"the query should have more than a page of rows: {info}")
    ok(f"query ran with Ctrl+Enter: {total} rows; {info}")
    nums = grid_rownums(page)
    check(len(nums) == 100 and nums[0] == "1", f"first page rows: {len(nums)} from {nums[:1]}")
    page.locator(testid("next-page")).click()
    page.wait_for_function(
        """() => (document.querySelector('[data-testid="page-info"]').textContent || '').includes('page 2')""",
        timeout=TIMEOUT_MS,
    )
    nums = grid_rownums(page)
    check(nums[0] == "101", f"second page starts at {nums[:1]}")
    ok(f"next page: {page_info(page)}")
    page.locator(testid("prev-page")).click()
    page.wait_for_function(
        """() => (document.querySelector('[data-testid="page-info"]').textContent || '').includes('page 1')""",
        timeout=TIMEOUT_MS,
    )
    ok(f"previous page: {page_info(page)}")
    headers = page.locator(f"{testid('results')} thead th").all_inner_texts()
    page.screenshot(path=os.path.join(shots, "editor.png"), full_page=True)

    # Download as CSV.
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.locator(testid("download-csv")).click()
    path = download.value.path()
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    check(lines[0] == "ts,sensor,temperature,humidity", f"CSV header: {lines[:1]}")
    check(len(lines) == total + 1, f"CSV has {len(lines) - 1} rows, the result {total}")
    ok(f"CSV downloaded: {download.value.suggested_filename}: {lines[0]} and {len(lines) - 1} rows")

    # A chart of temperature and humidity over time.
    page.locator(testid("show-chart")).click()
    page.locator(testid("chart-x")).select_option("ts")
    page.locator(testid("chart-type")).select_option("line")
    for name in ["temperature", "humidity"]:
        page.locator(f'{testid("chart-y")} input[value="{name}"]').check()
    page.locator(testid("draw-chart")).click()
    page.locator(f"{testid('chart')} canvas").first.wait_for(timeout=TIMEOUT_MS)
    legend = page.locator(f"{testid('chart')} .u-legend").inner_text()
    check("temperature" in legend and "humidity" in legend, f"legend: {legend}")
    note = page.locator(testid("chart-note")).inner_text()
    ok(f"line chart drawn: temperature,humidity over ts ({note})")
    page.screenshot(path=os.path.join(shots, "chart.png"), full_page=True)

    # The query again, narrower: the chart is drawn again from the new result.
    page.locator(f"{testid('sql-editor')} .CodeMirror").click()
    page.keyboard.press("Control+End")
    page.keyboard.type(" LIMIT 40")
    state = run_with_ctrl_enter(page)
    check(state == "succeeded", f"the query {state}: {error_text(page)}")
    page.wait_for_function(
        """() => { const n = document.querySelector('[data-testid="chart-note"]');
                   return n && n.textContent.startsWith('40 rows'); }""",
        timeout=TIMEOUT_MS,
    )
    check(page.locator(f"{testid('chart')} canvas").count() > 0, "no canvas after the second run")
    page.locator(testid("chart-type")).select_option("bar")
    page.locator(f"{testid('chart')} canvas").first.wait_for(timeout=TIMEOUT_MS)
    ok("chart redrawn after the query ran again: 40 rows, as bars")
    page.locator(testid("show-results")).click()


    # The last queries are kept in localStorage: the SQL only.
    kept = page.evaluate("() => localStorage.getItem('tarn.console.history')")
    recent = json.loads(kept)
    check(recent[0].endswith("LIMIT 40") and sql in recent, f"history: {recent}")
    ok(f"recent queries kept: {len(recent)}")

    # The same result as Parquet: a file that starts and ends with Parquet's magic bytes.
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.locator(testid("download-parquet")).click()
    with open(download.value.path(), "rb") as f:
        parquet = f.read()
    check(parquet[:4] == b"PAR1" and parquet[-4:] == b"PAR1", f"not Parquet: {parquet[:8]!r}")
    ok(f"Parquet downloaded: {download.value.suggested_filename}: {len(parquet)} bytes")

    # A long query is cancelled from the editor; the server says so.
    type_sql(page, "SELECT count(*) FROM generate_series(1, 20000000000)")
    page.keyboard.press("Control+Enter")
    cancel = page.locator(testid("cancel"))
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="cancel"]').disabled""",
        timeout=TIMEOUT_MS,
    )
    page.wait_for_timeout(500)
    cancel.click()
    page.wait_for_function(
        """() => { const s = document.querySelector('[data-testid="query-state"]');
                   return s && s.textContent === 'cancelled'; }""",
        timeout=TIMEOUT_MS,
    )
    ok("long query cancelled: cancelled")

    # Ingest & jobs.
    page.locator(testid("tab-ingest")).click()
    rows = page.locator(f"{testid('ingest')} {testid('ingest-table')}")
    rows.first.wait_for(timeout=TIMEOUT_MS)
    # Two polls give a rate.
    page.wait_for_function(
        """() => { const r = [...document.querySelectorAll('[data-testid="rate"]')];
                   return r.length && r.every(e => /^[\\d.,]+$/.test(e.textContent)); }""",
        timeout=TIMEOUT_MS,
    )
    tables = page.locator(f"{testid('ingest-tables')} tbody tr").all_inner_texts()
    summary = []
    for row in tables:
        cells = [c.strip() for c in row.split("\t")]
        summary.append(f"{cells[0]} records={cells[2]} rejected={cells[3]} per_s={cells[1]}")
    check(any(t.startswith("default.events ") for t in summary), f"ingest: {summary}")
    ok(f"ingest shown: {'; '.join(summary)}")
    jobs = page.locator(f"{testid('jobs')} {testid('job')}")
    jobs.first.wait_for(timeout=TIMEOUT_MS)
    job_rows = [" ".join(t.split()) for t in jobs.all_inner_texts()]
    ok(f"jobs shown: {'; '.join(job_rows)}")
    page.locator(testid("job-runs-toggle")).first.click()
    page.locator(f"{testid('jobs')} tr.detail table").wait_for(timeout=TIMEOUT_MS)
    ok("job runs shown")
    page.screenshot(path=os.path.join(shots, "ingest.png"), full_page=True)


def keyed_console(page, shots, query_key, ingest_key):
    """With keys: login, a refused key, what scopes hide, and a 403 shown."""
    login = page.locator(testid("login"))
    login.wait_for(timeout=TIMEOUT_MS)
    check(not page.locator(testid("tables")).is_visible(), "the tables show before signing in")
    ok("login form shown")
    page.screenshot(path=os.path.join(shots, "login.png"), full_page=True)

    page.locator(testid("login-key")).fill("tk_not_a_key")
    page.locator(testid("login-submit")).click()
    page.locator(testid("error")).wait_for(timeout=TIMEOUT_MS)
    message = error_text(page)
    check("401" in message and login.is_visible(), f"a wrong key: {message}")
    ok(f"wrong key refused: {page.locator(testid('error-message')).inner_text()}")
    page.screenshot(path=os.path.join(shots, "login-error.png"), full_page=True)

    # A key that may only ingest into events: no catalog, SQL or jobs.
    page.locator(testid("login-key")).fill(ingest_key)
    page.locator(testid("login-submit")).click()
    page.locator(testid("send-form")).wait_for(timeout=TIMEOUT_MS)
    check(not page.locator(testid("error")).is_visible(), "an error shows after signing in")
    for hidden in ["tab-catalog", "tab-sql", "tab-ingest", "tables", "sql-editor", "jobs"]:
        check(not page.locator(testid(hidden)).is_visible(), f"{hidden} is offered to an ingest key")
    scopes = page.locator(testid("scopes")).inner_text()
    ok(f"ingest key signed in ({scopes}): catalog, SQL and jobs not offered")
    stored = page.evaluate(
        "() => [sessionStorage.getItem('tarn.console.key'), JSON.stringify(localStorage), location.href]"
    )
    check(stored[0] == ingest_key, "the key is not in sessionStorage")
    check(ingest_key not in stored[1] and ingest_key not in stored[2], "the key is in localStorage or the URL")
    ok("key kept in sessionStorage only")

    page.locator(testid("send-table")).fill("events")
    page.locator(testid("send-body")).fill(
        '{"event_id": "k-1", "event_type": "product_view", "ts": "2026-11-23T12:00:00Z"}'
    )
    page.locator(testid("send")).click()
    result = page.locator(testid("send-result"))
    result.wait_for(timeout=TIMEOUT_MS)
    answer = json.loads(result.inner_text())
    check(answer.get("accepted") == 1, f"ingest answer: {answer}")
    ok(f"record sent to events: accepted {answer['accepted']}")

    page.locator(testid("send-table")).fill("orders")
    page.locator(testid("send-body")).fill('{"order_id": 1}')
    page.locator(testid("send")).click()
    page.locator(testid("error")).wait_for(timeout=TIMEOUT_MS)
    message = error_text(page)
    check("403" in message, f"ingest into orders: {message}")
    ok(f"403 shown: {page.locator(testid('error-message')).inner_text()}")
    page.screenshot(path=os.path.join(shots, "forbidden.png"), full_page=True)

    # Signing out forgets the key; the query key sees the catalog and the editor.
    page.locator(testid("logout")).click()
    login.wait_for(timeout=TIMEOUT_MS)
    check(page.evaluate("() => sessionStorage.getItem('tarn.console.key')") is None, "key kept after sign out")
    page.locator(testid("login-key")).fill(query_key)
    page.locator(testid("login-submit")).click()
    page.locator(f"{testid('tables')} {testid('table-item')}").first.wait_for(timeout=TIMEOUT_MS)
    check(not page.locator(testid("tab-send")).is_visible(), "the ingest form is offered to a query key")
    ok("query key signed in: catalog shown, no ingest form")
    page.locator(testid("tab-ingest")).click()
    page.locator(f"{testid('jobs')} {testid('job')}").first.wait_for(timeout=TIMEOUT_MS)
    check(page.locator(testid("run-job")).count() == 0, "Run now is offered without admin")
    ok("jobs shown to the query key without Run now")
    page.locator(testid("tab-sql")).click()
    type_sql(page, "DROP TABLE events")
    state = run_with_ctrl_enter(page)
    check(state == "failed", f"DROP TABLE {state}")
    message = error_text(page)
    check("read-only" in message, f"DROP TABLE: {message}")
    ok(f"a statement that writes is refused: {page.locator(testid('error-message')).inner_text()}")


def main():
    if len(sys.argv) not in (3, 6) or (len(sys.argv) == 6 and sys.argv[3] != "keys"):
        sys.exit(__doc__)
    url, shots = sys.argv[1].rstrip("/"), sys.argv[2]
    os.makedirs(shots, exist_ok=True)
    with sync_playwright() as p:
        browser = chromium.launch(p)
        context = browser.new_context(viewport={"width": 1360, "height": 860}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        js_errors = []
        page.on("pageerror", lambda e: js_errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and print("console:", m.text, file=sys.stderr))
        page.on("response", lambda r: r.status >= 400 and print("response:", r.status, r.url, file=sys.stderr))
        mode = "keys" if len(sys.argv) == 6 else "open"
        try:
            page.goto(url + "/")
            if len(sys.argv) == 6:
                keyed_console(page, shots, sys.argv[4], sys.argv[5])
            else:
                open_console(page, shots)
            check(not js_errors, f"errors in the page: {js_errors}")
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            try:
                page.screenshot(path=os.path.join(shots, f"failure-{mode}.png"), full_page=True)
            except Exception:  # noqa: BLE001
                pass
            print(f"FAIL: {e}", flush=True)
            if js_errors:
                print(f"FAIL: errors in the page: {js_errors}", flush=True)
            browser.close()
            sys.exit(1)
        browser.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
