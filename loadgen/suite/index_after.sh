#!/usr/bin/env bash
# Index as you go, or after the rows are in? PostgreSQL's side of the question the daily load
# asks (portfolio-svc loads a day into a partition without indexes and lets ATTACH PARTITION
# build them; see runtime/src/staged.rs). On the holdings of a generated day, in one database:
#
#   during: COPY into a table that has its primary key;
#   after:  COPY into a table without it, then ALTER TABLE … ADD PRIMARY KEY;
#
# each twice, alternating, and prints the seconds of each.
#
#   loadgen/suite/index_after.sh [ACCOUNTS]     # default 1,000,000
#
# Settings (environment): BENCH_POSTGRES (postgres://postgres@127.0.0.1:5432).
set -euo pipefail

suite=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$suite/../.." && pwd)
accounts=${1:-1000000}
pg=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
work=$(mktemp -d)
db=bench_index_after
cleanup() {
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root" && cargo build --release --quiet -p loader --bin loader)
"$root/target/release/loader" gen "$work/day" --accounts "$accounts" --seed 1 --format plain >/dev/null
python3 "$suite/holdings_csv.py" "$work/day/account_asset_info_set.csv" "$work/holdings.csv"
rows=$(wc -l <"$work/holdings.csv")
psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
columns="snapshot_id BIGINT NOT NULL, account_number TEXT NOT NULL, isin TEXT NOT NULL,
  quantity BIGINT NOT NULL CHECK (quantity >= 0), current_price BIGINT NOT NULL CHECK (current_price >= 0),
  valuation BIGINT NOT NULL CHECK (valuation >= 0)"
seconds() { # sql… → seconds of running them in one psql session
  local started ended
  started=$(date +%s.%N)
  psql "$pg/$db" -q -v ON_ERROR_STOP=1 "$@" >/dev/null
  ended=$(date +%s.%N)
  python3 -c "print(round($ended - $started, 1))"
}
echo "holdings rows: $rows"
for round in 1 2; do
  psql "$pg/$db" -qc "DROP TABLE IF EXISTS h; CREATE TABLE h ($columns, PRIMARY KEY (snapshot_id, account_number, isin))"
  echo "round $round, index during: $(seconds -c "\\copy h FROM '$work/holdings.csv' CSV") s"
  psql "$pg/$db" -qc "DROP TABLE IF EXISTS h; CREATE TABLE h ($columns)"
  echo "round $round, index after: $(seconds -c "\\copy h FROM '$work/holdings.csv' CSV" \
    -c "ALTER TABLE h ADD PRIMARY KEY (snapshot_id, account_number, isin)") s"
done
