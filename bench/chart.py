"""The scaling table and chart of BENCHMARKS.md, from bench/measurements.csv.

    python3 bench/chart.py [MEASUREMENTS.csv] [CHART.svg]

Takes the loads of random keys into the SQLite sink on the local backend (and DuckDB's runs of
the same files), the latest measurement of each (records, workers), and prints a Markdown table
(records/s, CPU per record, peak RSS, phases, and the share of the run that is serial: the plan
and the gather) and writes an SVG chart of records/s against input size. Needs nothing but
Python's standard library.
"""

import csv
import math
import sys
from collections import OrderedDict


def rows(path):
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("keys") != "random" or r.get("run") != "load" or r.get("sink") != "true":
                continue
            backend = r["backend"]
            if backend != "local" and not backend.startswith("duckdb"):
                continue
            yield r


def num(r, k):
    try:
        return float(r.get(k) or 0)
    except ValueError:
        return 0.0


def latest(path):
    """The latest row of each (series, records)."""
    by = OrderedDict()
    for r in rows(path):
        series = "DuckDB" if r["backend"].startswith("duckdb") else f"sluicebox, {r['workers']} worker" + (
            "s" if r["workers"] != "1" else "")
        by[(series, int(r["records"]))] = r
    return by


def table(by):
    out = ["| records | who | records/s | wall | CPU per record | serial share (plan + gather) | peak RSS |",
           "|---:|---|---:|---:|---:|---:|---:|"]
    for (series, records), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        seconds = num(r, "seconds")
        cpu = num(r, "cpu_s")
        per = f"{cpu * 1e6 / records:.1f} µs" if cpu > 0 else "—"
        serial = num(r, "plan_ms") + num(r, "gather_ms")
        share = f"{serial / (seconds * 1000):.0%}" if seconds > 0 and serial > 0 else "—"
        out.append(f"| {records:,} | {series} | {num(r, 'records_per_s'):,.0f} | {seconds:.2f} s | {per} | {share} "
                   f"| {num(r, 'peak_rss_mib'):.0f} MiB |")
    return "\n".join(out)


def chart(by, path):
    series = OrderedDict()
    for (name, records), r in sorted(by.items(), key=lambda kv: kv[0][1]):
        series.setdefault(name, []).append((records, num(r, "records_per_s")))
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    if not xs:
        raise SystemExit("no measurements of random-key loads into SQLite")
    w, h, left, right, top, bottom = 640, 360, 70, 190, 30, 50
    x0, x1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y1 = max(ys) * 1.15

    def px(x):
        return left + (math.log10(x) - x0) / (x1 - x0) * (w - left - right)

    def py(y):
        return h - bottom - y / y1 * (h - top - bottom)

    colours = ["#1b6ac9", "#2ca02c", "#d62728", "#9467bd"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" font-family="sans-serif" '
             f'font-size="12"><rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{left}" y="18" font-size="14">Records per second, end to end (random keys, SQLite sink)</text>']
    step = 10 ** math.floor(math.log10(y1 / 4))
    tick = step * math.ceil(y1 / 5 / step)
    y = 0.0
    while y <= y1:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y / 1000:,.0f}k</text>')
        y += tick
    for x in sorted(set(xs)):
        label = f"{x / 1e6:g}M" if x >= 1e6 else f"{x / 1e3:g}k"
        parts.append(f'<text x="{px(x):.1f}" y="{h - bottom + 18}" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">records in the input</text>')
    for i, (name, pts) in enumerate(series.items()):
        c = colours[i % len(colours)]
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{c}"/>')
        ly = top + 20 + i * 20
        parts.append(f'<rect x="{w - right + 15}" y="{ly - 9}" width="12" height="12" fill="{c}"/>')
        parts.append(f'<text x="{w - right + 32}" y="{ly + 2}">{name}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    src = sys.argv[1] if len(sys.argv) > 1 else "bench/measurements.csv"
    dst = sys.argv[2] if len(sys.argv) > 2 else "bench/scaling.svg"
    latest_rows = latest(src)
    print(table(latest_rows))
    chart(latest_rows, dst)
    print(f"\nchart: {dst}")
