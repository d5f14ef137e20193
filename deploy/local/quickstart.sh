#!/usr/bin/env bash
# Quickstart: builds the binaries, generates a day of data, starts portfolio-svc on SQLite,
# loads the day with the loader, and prints how to query it. Ctrl-C stops everything.
#
#   deploy/local/quickstart.sh [ACCOUNTS]        (default 50 accounts)
#
# Everything it writes goes to .quickstart/ (QUICKSTART_DIR to change it); ports 50051 and
# 9451 must be free.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
work=${QUICKSTART_DIR:-$root/.quickstart}
accounts=${1:-50}
bin="$root/target/release"

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

say "building (cargo build --release; the first build takes a few minutes)"
(cd "$root" && cargo build --release --bins)

mkdir -p "$work"
if [ ! -s "$work/jwt-secret" ]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/jwt-secret"
fi
export INVEST_JWT_SECRET_FILE="$work/jwt-secret"

say "generating a day of $accounts accounts into $work/day"
rm -rf "$work/day"
"$bin/loader" gen "$work/day" --accounts "$accounts" --seed 1 --format plain

pids=()
stop() {
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

say "starting portfolio-svc on sqlite://$work/portfolio.db (log: $work/portfolio-svc.log)"
"$bin/portfolio-svc" \
  --listen 127.0.0.1:50051 \
  --metrics-listen 127.0.0.1:9451 \
  --database-url "sqlite://$work/portfolio.db" \
  >"$work/portfolio-svc.log" 2>&1 &
pids+=($!)

say "loading the day"
"$bin/loader" load "$work/day" \
  --portfolio-url http://127.0.0.1:50051 \
  --rejects "$work/rejects.jsonl" \
  --attempts 10

# A customer of the generated day, to query as (plain CSV: customer,brokerage,account,...).
IFS=, read -r customer _ account _ < <(sed -n 2p "$work/day/account_asset_info_set.csv")
token=$("$bin/loader" token --sub "$customer" --scope "accounts:read" --ttl 12h)

cat <<MSG

portfolio-svc is serving on 127.0.0.1:50051 (metrics: http://127.0.0.1:9451/metrics).
Query it with grpcurl (https://github.com/fullstorydev/grpcurl) as $customer:

  export TOKEN='$token'
  grpcurl -plaintext 127.0.0.1:50051 list
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" 127.0.0.1:50051 invest.portfolio.v1.PortfolioService/ListAccounts
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{"account_number": "$account"}' 127.0.0.1:50051 invest.portfolio.v1.PortfolioService/GetAccount
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{"account_number": "$account"}' 127.0.0.1:50051 invest.portfolio.v1.PortfolioService/ListHoldings

Another customer's token:  INVEST_JWT_SECRET_FILE=$work/jwt-secret $bin/loader token --sub NAME --scope accounts:read
Press Ctrl-C to stop.
MSG
wait
