#!/bin/sh
# Writes N taxi trips (default 20000) as CSV, shaped like the Kaggle "Taxi Service Trajectory"
# train.csv whose rows seed 004's producer sends: a header, every field quoted, TIMESTAMP in
# seconds since 1970, POLYLINE a JSON array of [longitude, latitude] every 15 seconds. No
# randomness: the same N gives the same file with any awk. 20000 trips span three days
# from 2013-07-01 (about 14 MB).
awk -v n="${1:-20000}" 'BEGIN {
  print "\"TRIP_ID\",\"CALL_TYPE\",\"ORIGIN_CALL\",\"ORIGIN_STAND\",\"TAXI_ID\",\"TIMESTAMP\",\"DAY_TYPE\",\"MISSING_DATA\",\"POLYLINE\""
  for (i = 1; i <= n; i++) {
    t = 1372636800 + i * 11 + (i * 7) % 5
    taxi = 20000001 + (i * 7919) % 448
    kind = substr("ABCCB", i % 5 + 1, 1)
    call = kind == "A" ? 2000 + (i * 37) % 60000 : ""
    stand = kind == "B" ? 1 + (i * 13) % 63 : ""
    lon = -8.61 + ((i * 17) % 100) / 2000; lat = 41.14 + ((i * 29) % 100) / 2000
    points = 10 + (i * 31) % 50
    line = ""
    for (p = 0; p < points; p++) {
      line = line sprintf("%s[%.6f,%.6f]", p ? "," : "", lon + p * 0.0004 * cos(i + p / 9), lat + p * 0.0003 * sin(i + p / 7))
    }
    printf "\"%d%d\",\"%s\",\"%s\",\"%s\",\"%d\",\"%d\",\"A\",\"False\",\"[%s]\"\n", t, taxi, kind, call, stand, taxi, t, line
  }
}'
