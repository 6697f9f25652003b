"""The stream bench's job as DuckDB's partitioned COPY, on the events `sluicebox bench --stream`
generates: a peer for a paired run.

    python3 bench/duckdb_stream.py EVENTS OUT [jsonl|parquet]

reads the JSON Lines EVENTS, types the five columns as the bench's job does, and writes them
partitioned by vendor and event day under OUT (emptied first): gzip JSON Lines, or Parquet
(zstd). Prints one JSON line: seconds, peak RSS, rows, files.
"""

import json
import os
import resource
import shutil
import sys
import time

import duckdb


def main(events: str, out: str, fmt: str) -> None:
    shutil.rmtree(out, ignore_errors=True)
    start = time.monotonic()
    con = duckdb.connect()
    options = "FORMAT JSON, COMPRESSION gzip" if fmt == "jsonl" else "FORMAT PARQUET, COMPRESSION zstd"
    con.execute(
        f"""
        COPY (
            SELECT id, vendor, ts, amount, note, strftime(ts, '%Y-%m-%d') AS dt
            FROM read_json('{events}', format = 'newline_delimited', columns = {{
                'id': 'BIGINT', 'vendor': 'VARCHAR', 'ts': 'TIMESTAMP',
                'amount': 'DECIMAL(18,2)', 'note': 'VARCHAR'}})
        ) TO '{out}' ({options}, PARTITION_BY (vendor, dt))
        """
    )
    seconds = time.monotonic() - start
    files = sum(len(f) for _, _, f in os.walk(out))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 3), "peak_rss_mib": round(rss), "files": files}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "jsonl")
