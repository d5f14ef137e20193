#!/usr/bin/env python3
"""The holdings rows of a generated day as the servers store them, for a database's own bulk
path: `snapshot_id,account_number,isin,quantity,current_price,valuation` (snapshot 1).

    holdings_csv.py DAY/account_asset_info_set.csv OUT.csv
"""

import csv
import sys

with open(sys.argv[1], encoding="utf-8-sig", newline="") as f, open(sys.argv[2], "w") as out:
    rows = csv.reader(f)
    next(rows)
    for row in rows:
        if len(row) == 7:
            q, p = int(row[6]), int(row[5])
            out.write(f"1,{row[2].strip()},{row[4].strip()},{q},{p},{q * p}\n")
