#!/usr/bin/env bash
# The daily switch as an operator runs it, measured from a customer's side. For each backend:
#
#   1. portfolio-svc with --keep-snapshots 0 (the replaced day is pruned as soon as the new one
#      is current) and deposit-svc, a generated day of $SWITCH_ACCOUNTS accounts loaded;
#   2. `loadgen steady` sends reads (GetAccount, ListHoldings) and deposits (both phases) at
#      $SWITCH_RATE per second, open loop, every request written down;
#   3. a quiet period, then two consecutive daily loads, each followed by the prune of the day
#      it replaced (the script waits until both services hold one day only);
#   4. switch.py splits the requests into phases (quiet, load, switch = 5 s either side of the
#      loader's end, prune, after) and reports p50/p99/max and errors of each;
#   5. then, without the customer load, more days until $SWITCH_DAYS, with the database's size
#      after each day's prune: no bloat means day 10 is within 10% of day 3.
#
#   loadgen/suite/switch.sh             # 1,000,000 accounts, SQLite and PostgreSQL (about 80 min)
#   loadgen/suite/switch.sh --smoke     # 2,000 accounts, SQLite, 4 days (seconds; debug build)
#
# Settings (environment): SWITCH_ACCOUNTS (1000000), SWITCH_BACKENDS ("sqlite postgres"),
# SWITCH_RATE (20), SWITCH_QUIET (60: seconds), SWITCH_AFTER (30: seconds after each prune),
# SWITCH_DAYS (10), SWITCH_SERVER_THREADS (1, as the main suite), BENCH_POSTGRES
# (postgres://postgres@127.0.0.1:5432), BENCH_OUT (target/bench).
set -euo pipefail

suite=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$suite/../.." && pwd)
smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true
if $smoke; then
  accounts=${SWITCH_ACCOUNTS:-2000}
  backends=${SWITCH_BACKENDS:-sqlite}
  quiet=${SWITCH_QUIET:-2}
  after=${SWITCH_AFTER:-1}
  days=${SWITCH_DAYS:-4}
  profile=debug
  out=${BENCH_OUT:-$root/target/bench-smoke}
else
  accounts=${SWITCH_ACCOUNTS:-1000000}
  backends=${SWITCH_BACKENDS:-sqlite postgres}
  quiet=${SWITCH_QUIET:-60}
  after=${SWITCH_AFTER:-30}
  days=${SWITCH_DAYS:-10}
  profile=release
  out=${BENCH_OUT:-$root/target/bench}
fi
rate=${SWITCH_RATE:-20}
server_threads=${SWITCH_SERVER_THREADS:-1}
pg=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
bin="$root/target/$profile"
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    for log in "$work"/portfolio.log "$work"/deposit.log; do
      [ -s "$log" ] && { echo "--- last lines of $(basename "$log")" >&2; tail -n 20 "$log" >&2; }
    done
  fi
  if [ ${#pids[@]} -gt 0 ]; then kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n==> %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if $smoke; then
  (cd "$root" && cargo build --bins --quiet)
else
  (cd "$root" && cargo build --release --bins --quiet)
fi
export INVEST_JWT_SECRET="switch-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# The janitors' prune lines, nothing else: the requests are measured by loadgen.
export INVEST_LOG_FORMAT=json RUST_LOG=warn,invest_runtime::staged=info

day="$work/day"
say "generating a day of $accounts accounts"
"$bin/loader" gen "$day" --accounts "$accounts" --seed 1 --format plain >/dev/null

# The moment of day N (in the past, so that deposits made now stay on top of every day).
as_of() { date -u -d "2026-10-01T19:00:00Z + $1 days" +%Y-%m-%dT%H:%M:%SZ; }

# Whether each service holds only the versions it keeps, with nothing left of the others
# (on SQLite: rows of a version that no longer exists; on PostgreSQL: partitions).
pruned() { # backend keep
  local backend=$1 keep=$2
  case $backend in
    sqlite)
      python3 - "$work/portfolio.db" "$work/deposit.db" "$keep" <<'PY'
import sqlite3, sys
def present(db, table, column):
    ids, last = [], -2**63
    while True:
        (n,) = db.execute(f"SELECT MIN({column}) FROM {table} WHERE {column} > ?", (last,)).fetchone()
        if n is None:
            return ids
        ids.append(n)
        last = n
keep = int(sys.argv[3])
ok = True
for path, versions, tables in ((sys.argv[1], "snapshots", [("holdings", "snapshot_id"), ("accounts", "snapshot_id"), ("instruments", "snapshot_id")]),
                               (sys.argv[2], "directories", [("directory_entries", "directory_id")])):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    live = {row[0] for row in db.execute(f"SELECT id FROM {versions} WHERE state <> 'loading'")}
    limit = 1 if versions == "directories" else keep + 1
    ok &= len(live) <= limit and all(set(present(db, t, c)) <= live for t, c in tables)
sys.exit(0 if ok else 1)
PY
      ;;
    postgres)
      local p d
      p=$(psql "$pg/switch_portfolio" -Atqc "SELECT (SELECT COUNT(*) FROM pg_class WHERE relkind = 'r'
            AND relname ~ '^(holdings|accounts|instruments)_v[0-9]+$') = 3 * COUNT(*) AND COUNT(*) <= $keep + 1
            FROM snapshots")
      d=$(psql "$pg/switch_deposit" -Atqc "SELECT (SELECT COUNT(*) FROM pg_class WHERE relkind = 'r'
            AND relname ~ '^directory_entries_v[0-9]+$') = COUNT(*) AND COUNT(*) = 1 FROM directories")
      [ "$p" = t ] && [ "$d" = t ] ;;
  esac
}

size_bytes() { # backend → bytes of both services' databases
  case $1 in
    sqlite) du -cb "$work"/portfolio.db* "$work"/deposit.db* | tail -n 1 | cut -f1 ;;
    postgres) psql "$pg/postgres" -Atqc "SELECT pg_database_size('switch_portfolio') + pg_database_size('switch_deposit')" ;;
  esac
}

for backend in $backends; do
  say "$backend: the switch at $accounts accounts"
  case $backend in
    sqlite)
      rm -f "$work"/portfolio.db* "$work"/deposit.db*
      pdb="sqlite://$work/portfolio.db"; ddb="sqlite://$work/deposit.db" ;;
    postgres)
      for name in switch_portfolio switch_deposit; do
        psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null
      done
      pdb="$pg/switch_portfolio"; ddb="$pg/switch_deposit" ;;
  esac
  pport=$(free_port); dport=$(free_port)
  purl="http://127.0.0.1:$pport"; durl="http://127.0.0.1:$dport"
  TOKIO_WORKER_THREADS=$server_threads "$bin/portfolio-svc" --listen "127.0.0.1:$pport" --metrics-listen 127.0.0.1:0 \
    --database-url "$pdb" --keep-snapshots 0 2>"$work/portfolio.log" &
  pids=("$!")
  TOKIO_WORKER_THREADS=$server_threads "$bin/deposit-svc" --listen "127.0.0.1:$dport" --metrics-listen 127.0.0.1:0 \
    --database-url "$ddb" --portfolio-url "$purl" 2>"$work/deposit.log" &
  pids+=("$!")
  marks="$out/switch-$backend-marks.json"
  echo "{\"backend\": \"$backend\", \"accounts\": $accounts, \"rate\": $rate, \"loads\": [" >"$marks"
  load_day() { # n → appends the day's marks
    local n=$1 started ended pruned_at
    started=$(now_ms)
    # At nice 10: the batch job gives way to the servers, as a loader pod's small CPU request
    # (deploy/k8s/base/loader.yaml) does on a node it shares with them.
    nice -n 10 "$bin/loader" load "$day" --as-of "$(as_of "$n")" --portfolio-url "$purl" --deposit-url "$durl" \
      --attempts 20 >"$work/load-$n.txt"
    ended=$(now_ms)
    until pruned "$backend" 0; do sleep 0.5; done
    pruned_at=$(now_ms)
    local size
    size=$(size_bytes "$backend")
    [ "$n" -gt 0 ] && echo "," >>"$marks"
    echo "{\"day\": $n, \"started\": $started, \"ended\": $ended, \"pruned\": $pruned_at, \"size_bytes\": $size}" >>"$marks"
    say "day $n: loaded in $(( (ended - started) / 1000 )) s, pruned $(( (pruned_at - ended) / 1000 )) s later; $((size / 1048576)) MiB"
  }
  load_day 0
  "$bin/loadgen" steady --portfolio-url "$purl" --deposit-url "$durl" --accounts "$accounts" --seed 1 \
    --rate "$rate" --out "$out/switch-$backend-requests.csv" >"$work/steady.txt" 2>&1 &
  steady_pid=$!
  pids+=("$steady_pid")
  quiet_from=$(now_ms)
  sleep "$quiet"
  for n in 1 2; do
    load_day "$n"
    sleep "$after"
  done
  kill -TERM "$steady_pid"
  wait "$steady_pid" || true
  cat "$work/steady.txt" >&2
  for n in $(seq 3 $((days - 1))); do
    load_day "$n"
  done
  echo "], \"quiet_from\": $quiet_from}" >>"$marks"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
  if [ "$backend" = postgres ]; then
    psql "$pg/postgres" -qc "DROP DATABASE switch_portfolio WITH (FORCE)" -c "DROP DATABASE switch_deposit WITH (FORCE)" >/dev/null
  fi
  check=()
  $smoke && check=(--check)
  python3 "$suite/switch.py" "$marks" "$out/switch-$backend-requests.csv" "$out/switch-$backend.json" "${check[@]}" \
    >"$out/switch-$backend.md"
  cat "$out/switch-$backend.md"
done
