"""DuckDB's side of `tarn-bench tpch`: the TPC-H queries over the Parquet files of Tarn's tables.

Run by the benchmark (never by hand) as `python tpch_duckdb.py SPEC.json`, where the spec is

    {"tables": {"lineitem": ["/path/part-0.parquet", ...], ...},
     "queries": [{"name": "q1", "sql": "..."}, ...],
     "runs": 3}

Each table becomes a view over exactly the files the Delta log lists, so DuckDB reads the
very same files as Tarn. Each query runs once to warm up, then `runs` times; a run is timed
with `time.perf_counter` around executing the query and fetching its whole result as an Arrow
table. DuckDB uses its default number of threads (one per core).

Prints one JSON document on stdout:

    {"version": "...", "threads": 2, "peak_rss_mib": 1234.5,
     "queries": [{"name": "q1", "rows": 4, "ms": [..]} or {"name": "q1", "error": "..."}]}

Progress goes to stderr.
"""

import json
import sys
import time

import duckdb


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def quote(text):
    return "'" + text.replace("'", "''") + "'"


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    con = duckdb.connect()
    for name, files in spec["tables"].items():
        listing = "[" + ", ".join(quote(path) for path in files) + "]"
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet({listing})')
    threads = con.sql("SELECT current_setting('threads')").fetchall()[0][0]
    results = []
    for query in spec["queries"]:
        name, sql = query["name"], query["sql"]
        try:
            rows = con.sql(sql).to_arrow_table().num_rows  # warm-up
            times = []
            for _ in range(spec["runs"]):
                started = time.perf_counter()
                table = con.sql(sql).to_arrow_table()
                times.append((time.perf_counter() - started) * 1000.0)
                rows = table.num_rows
            results.append({"name": name, "rows": rows, "ms": times})
            print(f"duckdb {name}: {sorted(times)[len(times) // 2]:.1f} ms, {rows} rows",
                  file=sys.stderr, flush=True)
        except duckdb.Error as e:
            results.append({"name": name, "error": str(e)})
            print(f"duckdb {name}: error: {e}", file=sys.stderr, flush=True)
    # The high-water mark of this process's memory; not getrusage's ru_maxrss, which Linux
    # carries over from the parent across fork and exec.
    peak = peak_rss_mib()
    json.dump(
        {"version": duckdb.__version__, "threads": threads, "peak_rss_mib": peak,
         "queries": results},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
