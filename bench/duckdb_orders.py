"""The orders job in DuckDB SQL, on the files `sluicebox bench` generates: a peer to compare with.

    python3 bench/duckdb_orders.py DIR WORK [--no-table]

reads DIR/orders.csv and DIR/financial.csv, and in WORK (emptied first) does what the orders
example's job does: checks the 8 columns (all required, maximum lengths, two real m/d/yy dates,
8 fields a row), joins the reference by uuid (a missing one is a reject), writes the merged
output (14 columns, input order) and the rejected lines, and upserts the kept orders into the
keyed table `orders` of WORK/duckdb.db (not with --no-table: the peer of `sluicebox bench
--no-sink`). Prints one JSON line: seconds, peak RSS, counts.
"""

import json
import os
import resource
import shutil
import sys
import time

import duckdb


def main(data_dir: str, work: str, table: bool) -> None:
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    orders = os.path.join(data_dir, "orders.csv")
    financial = os.path.join(data_dir, "financial.csv")
    start = time.monotonic()
    con = duckdb.connect(os.path.join(work, "duckdb.db"))
    con.execute(
        f"""
        CREATE TEMP TABLE raw AS
        SELECT row_number() OVER () AS line, *
        FROM read_csv('{orders}', header = true, auto_detect = false, delim = ',', quote = '"', escape = '"', all_varchar = true, null_padding = true,
                      strict_mode = false, columns = {{
            'uuid': 'VARCHAR', 'Country': 'VARCHAR', 'Item Type': 'VARCHAR', 'Sales Channel': 'VARCHAR',
            'Order Priority': 'VARCHAR', 'Order Date': 'VARCHAR', 'Region': 'VARCHAR', 'Ship Date': 'VARCHAR'}});
        CREATE TEMP TABLE fin AS SELECT * FROM read_csv('{financial}', header = true, auto_detect = false, delim = ',', columns = {{
            'uuid': 'VARCHAR', 'unitsSold': 'BIGINT', 'unitPrice': 'DOUBLE', 'unitCost': 'DOUBLE',
            'totalRevenue': 'DOUBLE', 'totalCost': 'DOUBLE', 'totalProfit': 'DOUBLE'}});
        CREATE TEMP TABLE checked AS
        SELECT r.*, f.unitsSold, f.unitPrice, f.unitCost, f.totalRevenue, f.totalCost, f.totalProfit,
               try_strptime(r."Order Date", '%m/%d/%y') AS od, try_strptime(r."Ship Date", '%m/%d/%y') AS sd,
               f.uuid IS NOT NULL AS found
        FROM raw r LEFT JOIN fin f ON f.uuid = r.uuid;
        CREATE TEMP TABLE good AS
        SELECT * FROM checked
        WHERE coalesce(uuid, '') <> '' AND length(uuid) <= 9
          AND coalesce(Country, '') <> '' AND length(Country) <= 50
          AND coalesce("Item Type", '') <> '' AND length("Item Type") <= 30
          AND coalesce("Sales Channel", '') <> '' AND length("Sales Channel") <= 10
          AND coalesce("Order Priority", '') <> '' AND length("Order Priority") <= 5
          AND od IS NOT NULL AND length("Order Date") <= 10
          AND coalesce(Region, '') <> '' AND length(Region) <= 100
          AND sd IS NOT NULL AND length("Ship Date") <= 10
          AND found;
        COPY (SELECT uuid, Country AS country, "Item Type" AS itemType, "Sales Channel" AS salesChannel,
                     "Order Priority" AS orderPriority, strftime(od, '%Y-%m-%d') AS orderDate, Region AS region,
                     strftime(sd, '%Y-%m-%d') AS shipDate, unitsSold, unitPrice, unitCost, totalRevenue,
                     totalCost, totalProfit
              FROM good ORDER BY line) TO '{work}/output.csv' (HEADER);
        COPY (SELECT line FROM checked WHERE line NOT IN (SELECT line FROM good) ORDER BY line)
            TO '{work}/rejects.csv' (HEADER);
        """
    )
    if table:
        con.execute(
            """
        CREATE TABLE IF NOT EXISTS orders (uuid VARCHAR PRIMARY KEY, country VARCHAR, itemType VARCHAR,
            salesChannel VARCHAR, orderPriority VARCHAR, orderDate VARCHAR, region VARCHAR, shipDate VARCHAR,
            unitsSold BIGINT, unitPrice DOUBLE, unitCost DOUBLE, totalRevenue DOUBLE, totalCost DOUBLE,
            totalProfit DOUBLE);
        INSERT OR REPLACE INTO orders
        SELECT uuid, Country, "Item Type", "Sales Channel", "Order Priority", strftime(od, '%Y-%m-%d'), Region,
               strftime(sd, '%Y-%m-%d'), unitsSold, unitPrice, unitCost, totalRevenue, totalCost, totalProfit
        FROM good;
        """
        )
    written = con.execute("SELECT count(*) FROM good").fetchone()[0]
    total = con.execute("SELECT count(*) FROM raw").fetchone()[0]
    con.close()
    seconds = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 1024
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "peak_rss_mib": round(peak, 1),
                      "records": total,
                      "written": written, "rejected": total - written, "duckdb": duckdb.__version__}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--no-table" not in sys.argv[3:])
