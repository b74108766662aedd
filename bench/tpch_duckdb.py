"""DuckDB's side of `tarn-bench tpch`: the TPC-H queries over the Parquet files of Tarn's tables.

Started by the benchmark (never by hand) as `python tpch_duckdb.py TABLES.json`, where the
file maps each table to its Parquet files: {"lineitem": ["/path/part-0.parquet", ...], ...}.
Each table becomes a view over exactly the files the Delta log lists, so DuckDB reads the
very same files as Tarn. DuckDB uses its default number of threads (one per core).

Then it answers on stdout, one JSON line per JSON line read on stdin, so that the benchmark
can alternate the two engines run by run (both then see the same background load):

    first line out:  {"version": "...", "threads": 2}
    {"sql": "..."}   -> {"rows": 4, "ms": 123.4}  or  {"error": "..."}
    end of input     -> {"peak_rss_mib": 1234.5}

A run is timed with `time.perf_counter` around executing the query and fetching its whole
result as an Arrow table.
"""

import json
import sys
import time

import duckdb


def peak_rss_mib():
    """The high-water mark of this process's memory; not getrusage's ru_maxrss, which Linux
    carries over from the parent across fork and exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def quote(text):
    return "'" + text.replace("'", "''") + "'"


def reply(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def main():
    with open(sys.argv[1]) as f:
        tables = json.load(f)
    con = duckdb.connect()
    for name, files in tables.items():
        listing = "[" + ", ".join(quote(path) for path in files) + "]"
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet({listing})')
    threads = con.sql("SELECT current_setting('threads')").fetchall()[0][0]
    reply({"version": duckdb.__version__, "threads": threads})
    for line in sys.stdin:
        sql = json.loads(line)["sql"]
        try:
            started = time.perf_counter()
            table = con.sql(sql).to_arrow_table()
            ms = (time.perf_counter() - started) * 1000.0
            reply({"rows": table.num_rows, "ms": ms})
        except duckdb.Error as e:
            reply({"error": str(e)})
    reply({"peak_rss_mib": peak_rss_mib()})


if __name__ == "__main__":
    main()
