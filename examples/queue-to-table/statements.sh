#!/bin/sh
# Writes N account statements (default 23300, seed 003's count) as CSV: a header, then one row
# per statement; every 100th row re-issues an earlier statement with a corrected amount, so
# a table keeps the later row of those keys. No randomness: the same N gives the same file.
awk -v n="${1:-23300}" 'BEGIN {
  print "statement_id,account_id,period,amount,currency,issued"
  for (i = 1; i <= n; i++) {
    id = i
    amount = sprintf("%.2f", ((i * 7919) % 100000) / 100)
    if (i % 100 == 0) { id = i - 50; amount = sprintf("%.2f", ((id * 7919) % 100000) / 100 + 0.01) }
    month = 1 + id % 12
    printf "ST%07d,AC%05d,2026-%02d,%s,%s,%d\n", id, 1 + (id * 31) % 4000, month, amount, (id % 7 ? "EUR" : "USD"), i
  }
}'
