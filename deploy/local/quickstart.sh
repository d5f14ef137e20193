#!/usr/bin/env bash
# Quickstart: builds the binaries, generates a day of data, starts portfolio-svc and
# deposit-svc on SQLite, loads the day with the loader, and prints how to query them and how
# to make a deposit. Ctrl-C stops everything.
#
#   deploy/local/quickstart.sh [ACCOUNTS]        (default 50 accounts)
#
# Everything it writes goes to .quickstart/ (QUICKSTART_DIR to change it); ports 50051, 50052,
# 9451 and 9452 must be free.
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

say "starting deposit-svc on sqlite://$work/deposit.db (log: $work/deposit-svc.log)"
"$bin/deposit-svc" \
  --listen 127.0.0.1:50052 \
  --metrics-listen 127.0.0.1:9452 \
  --database-url "sqlite://$work/deposit.db" \
  --portfolio-url http://127.0.0.1:50051 \
  >"$work/deposit-svc.log" 2>&1 &
pids+=($!)

say "loading the day"
# The day is generated now, so it describes this moment: as_of = now. A real delivery passes
# its cut-off instead (--cutoff 04:00+09:00); the loader refuses to guess.
"$bin/loader" load "$work/day" \
  --as-of now \
  --portfolio-url http://127.0.0.1:50051 \
  --deposit-url http://127.0.0.1:50052 \
  --rejects "$work/rejects.jsonl" \
  --attempts 10

# A customer of the generated day, to query as (plain CSV: customer,brokerage,account,...).
IFS=, read -r customer _ account _ < <(sed -n 2p "$work/day/account_asset_info_set.csv")
token=$("$bin/loader" token --sub "$customer" --scope "accounts:read deposits:write withdrawals:write" --ttl 12h)
signature=$("$bin/loader" sign --account "$account" --name "$customer" --amount 10000)
withdrawal_signature=$("$bin/loader" sign --account "$account" --name "$customer" --amount 5000)

cat <<MSG

portfolio-svc is serving on 127.0.0.1:50051 (metrics: http://127.0.0.1:9451/metrics),
deposit-svc on 127.0.0.1:50052 (metrics: http://127.0.0.1:9452/metrics).
Query them with grpcurl (https://github.com/fullstorydev/grpcurl) as $customer:

  export TOKEN='$token'
  grpcurl -plaintext 127.0.0.1:50051 list
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" 127.0.0.1:50051 invest.portfolio.v1.PortfolioService/ListAccounts
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{"account_number": "$account"}' 127.0.0.1:50051 invest.portfolio.v1.PortfolioService/GetAccount
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{"account_number": "$account"}' 127.0.0.1:50051 invest.portfolio.v1.PortfolioService/ListHoldings

Deposit 10000 won in two phases (the signature is BLAKE3 of account + name + amount):

  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{"account_number": "$account", "customer_name": "$customer", "amount": 10000}' 127.0.0.1:50052 invest.deposit.v1.DepositService/RegisterDeposit
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{"transfer_id": "<transfer_id from above>", "signature": "$signature"}' 127.0.0.1:50052 invest.deposit.v1.DepositService/ConfirmDeposit
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" 127.0.0.1:50052 invest.deposit.v1.DepositService/ListDeposits

Withdraw 5000 won the same way: phase 1 holds it out of the account's available cash
(GetAccount's available_cash falls at once; more than is available is FAILED_PRECONDITION
INSUFFICIENT_FUNDS), phase 2 takes it; CancelWithdrawal releases a pending one:

  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{"account_number": "$account", "customer_name": "$customer", "amount": 5000}' 127.0.0.1:50052 invest.deposit.v1.WithdrawalService/RegisterWithdrawal
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{"transfer_id": "<transfer_id from above>", "signature": "$withdrawal_signature"}' 127.0.0.1:50052 invest.deposit.v1.WithdrawalService/ConfirmWithdrawal
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{"transfer_id": "<transfer_id>"}' 127.0.0.1:50052 invest.deposit.v1.WithdrawalService/CancelWithdrawal
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" 127.0.0.1:50052 invest.deposit.v1.WithdrawalService/ListWithdrawals

Another customer's token:  INVEST_JWT_SECRET_FILE=$work/jwt-secret $bin/loader token --sub NAME --scope "accounts:read deposits:write withdrawals:write"
Press Ctrl-C to stop.
MSG
wait
