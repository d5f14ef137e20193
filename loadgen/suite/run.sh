#!/usr/bin/env bash
# The benchmark suite: from a fresh clone, on this machine, measures
#   - each RPC's throughput and latency next to a no-op gRPC server's (loadgen --ceiling),
#   - the loader's rows/s into SQLite and PostgreSQL next to the database's own bulk path
#     (PostgreSQL COPY, SQLite one-transaction prepared inserts) on the same rows,
#   - peak memory of the loader and of the servers,
#   - deposits and withdrawals (phase 1 + phase 2) next to pgbench's tpcb-like TPS at the
#     same clients, run right before each deposit run,
#   - PostgreSQL's own read ceiling (pgbench select-only, prepared),
# for days of 50, 10,000 and 1,000,000 accounts, and writes the results as JSON under
# $BENCH_OUT, then results.md and chart.svg there (report.py, beside this script).
#
#   loadgen/suite/run.sh                # the whole suite (about 40 minutes on 2 cores)
#   loadgen/suite/run.sh --smoke        # seconds: 50 accounts, SQLite, 1 s runs, debug build
#
# Settings (environment): BENCH_SIZES ("50 10000 1000000"), BENCH_BACKENDS ("sqlite postgres"),
# BENCH_DURATION (20s), BENCH_WARMUP (3s), BENCH_ROUNDS (3: real servers and ceiling
# alternate, each measured for a third of the duration), BENCH_CONCURRENCY (32),
# BENCH_CONNECTIONS (4), BENCH_SERVER_THREADS (1: tokio worker threads of each server process
# and of the no-op ceiling, which runs in its own process), BENCH_SKEW (1.1),
# BENCH_OVERLAY_DEPOSITS (10000), BENCH_FRESHNESS_COUNT (500), BENCH_POSTGRES (postgres://postgres@127.0.0.1:5432), BENCH_OUT (target/bench),
# BENCH_SWITCH (0; 1 also runs switch.sh, the daily switch at a million accounts, ~80 minutes).
set -euo pipefail

suite=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$suite/../.." && pwd)
smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true

if $smoke; then
  sizes=${BENCH_SIZES:-50}
  backends=${BENCH_BACKENDS:-sqlite}
  duration=${BENCH_DURATION:-1s}
  warmup=${BENCH_WARMUP:-0s}
  profile=debug
  out=${BENCH_OUT:-$root/target/bench-smoke}
else
  sizes=${BENCH_SIZES:-50 10000 1000000}
  backends=${BENCH_BACKENDS:-sqlite postgres}
  duration=${BENCH_DURATION:-20s}
  warmup=${BENCH_WARMUP:-3s}
  profile=release
  out=${BENCH_OUT:-$root/target/bench}
fi
rounds=${BENCH_ROUNDS:-3}
# Worker threads of each server process (ours and the no-op ceiling alike): the client shares
# the machine, and with two cores one each leaves it a core (see BENCHMARKS.md, Method).
server_threads=${BENCH_SERVER_THREADS:-1}
skew=${BENCH_SKEW:-1.1}
if $smoke; then
  overlay_deposits=${BENCH_OVERLAY_DEPOSITS:-200}
  freshness_count=${BENCH_FRESHNESS_COUNT:-20}
else
  overlay_deposits=${BENCH_OVERLAY_DEPOSITS:-10000}
  freshness_count=${BENCH_FRESHNESS_COUNT:-500}
fi
concurrency=${BENCH_CONCURRENCY:-32}
connections=${BENCH_CONNECTIONS:-4}
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
  if ${with_pgbench:-false}; then
    psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS bench_pgbench WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n==> %s\n' "$*" >&2; }

if $smoke; then
  (cd "$root" && cargo build --bins --quiet)
else
  (cd "$root" && cargo build --release --bins --quiet)
fi

export INVEST_JWT_SECRET="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export INVEST_LOG_FORMAT=json RUST_LOG=warn

# Peak resident memory (kB) of a running process.
peak_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# "h:mm:ss" or "m:ss.xx" of /usr/bin/time -v to seconds.
elapsed_s() { awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }'; }

# Runs a command under /usr/bin/time -v; prints "SECONDS PEAK_KB".
timed() {
  local log="$work/time.log"
  /usr/bin/time -v "$@" >"$work/stdout.log" 2>"$log" || { cat "$work/stdout.log" "$log" >&2; return 1; }
  local wall peak
  wall=$(grep 'Elapsed (wall clock)' "$log" | sed 's/.*): //' | elapsed_s)
  peak=$(grep 'Maximum resident' "$log" | awk '{print $NF}')
  echo "$wall $peak"
}

# A port nothing listens on now (the servers of this run take it a moment later), so that the
# suite never talks to servers that are not its own.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_servers() { # backend size → sets portfolio_pid deposit_pid portfolio_url deposit_url
  local backend=$1 size=$2 pdb ddb
  case $backend in
    sqlite)
      pdb="sqlite://$work/portfolio-$size.db"; ddb="sqlite://$work/deposit-$size.db" ;;
    postgres)
      for name in "bench_portfolio_$size" "bench_deposit_$size"; do
        psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null
      done
      pdb="$pg/bench_portfolio_$size"; ddb="$pg/bench_deposit_$size" ;;
  esac
  local portfolio_port deposit_port
  portfolio_port=$(free_port)
  deposit_port=$(free_port)
  portfolio_url="http://127.0.0.1:$portfolio_port"
  deposit_url="http://127.0.0.1:$deposit_port"
  portfolio_db=$pdb
  portfolio_metrics="127.0.0.1:$(free_port)"
  TOKIO_WORKER_THREADS=$server_threads "$bin/portfolio-svc" --listen "127.0.0.1:$portfolio_port" \
    --metrics-listen "$portfolio_metrics" --database-url "$pdb" 2>"$work/portfolio.log" &
  portfolio_pid=$!
  TOKIO_WORKER_THREADS=$server_threads "$bin/deposit-svc" --listen "127.0.0.1:$deposit_port" --metrics-listen 127.0.0.1:0 --database-url "$ddb" \
    --portfolio-url "$portfolio_url" 2>"$work/deposit.log" &
  deposit_pid=$!
  # The ceiling: a no-op server of the same day in its own process, run like ours.
  local noop_port log="$work/noop.log"
  noop_port=$(free_port)
  noop_url="http://127.0.0.1:$noop_port"
  TOKIO_WORKER_THREADS=$server_threads "$bin/loadgen" noop --listen "127.0.0.1:$noop_port" --accounts "$size" \
    --seed 1 >"$log" 2>&1 &
  pids=("$portfolio_pid" "$deposit_pid" "$!")
  for _ in $(seq 600); do
    grep -q "listening on" "$log" && return 0
    sleep 0.1
  done
  echo "the no-op server did not start:" >&2
  cat "$log" >&2
  return 1
}

# A second portfolio-svc on the same database (extra flags after the name) → sets replica_url.
start_replica() { # name flags…
  local name=$1 port
  shift
  port=$(free_port)
  replica_url="http://127.0.0.1:$port"
  local log="$work/replica-$name.log"
  RUST_LOG=info TOKIO_WORKER_THREADS=$server_threads "$bin/portfolio-svc" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 \
    --database-url "$portfolio_db" "$@" 2>"$log" &
  pids+=("$!")
  for _ in $(seq 600); do
    grep -q "database migrated; serving" "$log" && return 0
    sleep 0.1
  done
  echo "the replica $name did not start:" >&2
  tail -n 20 "$log" >&2
  return 1
}

# The read cache's counters of portfolio-svc: "HITS MISSES BYPASSES BYTES".
cache_counts() {
  python3 - "$portfolio_metrics" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=10).read().decode()
def value(name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if line.startswith(name + " ") or "}" in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0
def counter(result):
    return value(f'portfolio_read_cache_requests_total{{result="{result}"}}')
print(int(counter("hit")), int(counter("miss")), int(counter("bypass")), int(value("portfolio_read_cache_bytes")))
PY
}

stop_servers() {
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}

# The database's own bulk path on the same holdings rows, into a table shaped like ours.
bulk_baseline() { # backend size day → seconds
  local backend=$1 size=$2 day=$3 csv="$work/holdings-$size.csv"
  python3 "$suite/holdings_csv.py" "$day/account_asset_info_set.csv" "$csv"
  case $backend in
    postgres)
      local db="bench_copy_$size"
      psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
      psql "$pg/$db" -qc "CREATE TABLE holdings (snapshot_id BIGINT NOT NULL, account_number TEXT NOT NULL,
        isin TEXT NOT NULL, quantity BIGINT NOT NULL CHECK (quantity >= 0),
        current_price BIGINT NOT NULL CHECK (current_price >= 0), valuation BIGINT NOT NULL CHECK (valuation >= 0),
        PRIMARY KEY (snapshot_id, account_number, isin))"
      local started ended
      started=$(date +%s.%N)
      psql "$pg/$db" -qc "\\copy holdings FROM '$csv' CSV"
      ended=$(date +%s.%N)
      psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
      python3 -c "print($ended - $started)" ;;
    sqlite)
      python3 - "$csv" "$work/copy-$size.db" <<'PY'
import sqlite3, sys, time
rows = (line.rstrip("\n").split(",") for line in open(sys.argv[1]))
db = sqlite3.connect(sys.argv[2])
db.executescript("""PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
CREATE TABLE holdings (snapshot_id BIGINT NOT NULL, account_number TEXT NOT NULL, isin TEXT NOT NULL,
  quantity BIGINT NOT NULL CHECK (quantity >= 0), current_price BIGINT NOT NULL CHECK (current_price >= 0),
  valuation BIGINT NOT NULL CHECK (valuation >= 0), PRIMARY KEY (snapshot_id, account_number, isin)) WITHOUT ROWID;""")
started = time.perf_counter()
with db:
    db.executemany("INSERT INTO holdings VALUES (?, ?, ?, ?, ?, ?)",
                   ((int(a), b, c, int(d), int(e), int(f)) for a, b, c, d, e, f in rows))
print(time.perf_counter() - started)
PY
      rm -f "$work/copy-$size.db"* ;;
  esac
}

loadgen() { # name backend size extra-args…
  local name=$1 backend=$2 size=$3
  shift 3
  local before after
  before=$(cache_counts)
  "$bin/loadgen" bench --portfolio-url "${target_url:-$portfolio_url}" --deposit-url "$deposit_url" \
    --accounts "$size" --seed 1 --concurrency "$concurrency" --connections "$connections" \
    --duration "$duration" --warmup "$warmup" --ceiling --ceiling-url "$noop_url" --rounds "$rounds" --json "$out/rpc-$backend-$size-$name.json" "$@" \
    >"$out/rpc-$backend-$size-$name.txt"
  after=$(cache_counts)
  python3 - "$before" "$after" "$out/cache-$backend-$size-$name.json" <<'PY'
import json, sys
b, a = ([int(x) for x in s.split()] for s in sys.argv[1:3])
json.dump({"hits": a[0] - b[0], "misses": a[1] - b[1], "bypasses": a[2] - b[2], "bytes": a[3]},
          open(sys.argv[3], "w"))
PY
}

# pgbench's database, made once; its tpcb-like run goes right before each deposit run, so
# that each ratio compares two figures of the same minute (this machine's disk drifts).
with_pgbench=false
if ! $smoke && [[ " $backends " == *" postgres "* ]]; then
  with_pgbench=true
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS bench_pgbench WITH (FORCE)" -c "CREATE DATABASE bench_pgbench" >/dev/null
  pgbench -q -i -s 10 "$pg/bench_pgbench" >/dev/null 2>&1
fi
pgbench_tps() { # args… → TPS of a pgbench run on bench_pgbench with the suite's clients and duration
  local log="$work/pgbench.log"
  pgbench -c "$concurrency" -j 2 -T "${duration%s}" "$@" "$pg/bench_pgbench" >"$log" 2>&1
  grep -oP 'tps = \K[0-9.]+' "$log" | head -n 1
}

for size in $sizes; do
  day="$work/day-$size"
  say "generating a day of $size accounts"
  "$bin/loader" gen "$day" --accounts "$size" --seed 1 --format plain >/dev/null
  rows=$(( $(wc -l <"$day/account_asset_info_set.csv") - 1 ))
  for backend in $backends; do
    say "$backend, $size accounts ($rows holdings)"
    # The bulk baseline first, so that nothing but the servers runs while they are measured.
    bulk_s=$(bulk_baseline "$backend" "$size" "$day")
    start_servers "$backend" "$size"
    read -r load_s loader_kb < <(timed "$bin/loader" load "$day" --as-of now --portfolio-url "$portfolio_url" \
      --deposit-url "$deposit_url" --attempts 20)
    portfolio_load_kb=$(peak_kb "$portfolio_pid")
    loadgen get_account "$backend" "$size" --mix get_account=1
    loadgen list_holdings "$backend" "$size" --mix list_holdings=1
    loadgen list_accounts "$backend" "$size" --mix list_accounts=1
    if $with_pgbench && [ "$backend" = postgres ]; then
      say "pgbench tpcb-like, $concurrency clients, before the deposits of $size accounts"
      echo "{\"clients\": $concurrency, \"tps\": $(pgbench_tps -b tpcb-like)}" >"$out/pgbench-$size.json"
    fi
    loadgen deposit "$backend" "$size" --mix deposit=1
    loadgen withdrawal "$backend" "$size" --mix withdrawal=1
    loadgen mixed "$backend" "$size" --mix get_account=4,list_holdings=4,list_accounts=1,deposit=1
    # The screens as real traffic reads them: uniform over the sampled customers, then skewed
    # (a few hot customers).
    loadgen reads_uniform "$backend" "$size" --mix get_account=1,list_holdings=1
    loadgen reads_skewed "$backend" "$size" --mix get_account=1,list_holdings=1 --skew "$skew"
    # The overlay: GetAccount on an account with 10,000 deposits after the snapshot against
    # one without, from memory and from the database (a replica with the cache off).
    { read -r busy; read -r quiet; } < <("$bin/loadgen" accounts --accounts "$size" --seed 1 --count 2)
    "$bin/loadgen" credit --portfolio-url "$portfolio_url" --account "$busy" --count "$overlay_deposits" \
      >"$out/credit-$backend-$size.txt"
    start_replica nocache --read-cache-bytes 0
    for side in memory database; do
      [ "$side" = database ] && target_url=$replica_url
      loadgen "overlay_none_$side" "$backend" "$size" --mix get_account=1 --only-account "$quiet"
      loadgen "overlay_busy_$side" "$backend" "$size" --mix get_account=1 --only-account "$busy"
      unset target_url
    done
    if [ "$backend" = postgres ]; then
      say "freshness: deposits through one replica, reads through another"
      start_replica fresh
      "$bin/loadgen" freshness --apply-url "$portfolio_url" --read-url "$replica_url" --accounts "$size" \
        --seed 1 --count "$freshness_count" --json "$out/freshness-$size.json" >"$out/freshness-$size.txt"
    fi
    cat >"$out/load-$backend-$size.json" <<JSON
{"backend": "$backend", "accounts": $size, "holdings": $rows, "load_seconds": $load_s,
 "loader_peak_kb": $loader_kb, "bulk_seconds": $bulk_s,
 "portfolio_peak_kb_after_load": $portfolio_load_kb, "portfolio_peak_kb": $(peak_kb "$portfolio_pid"),
 "deposit_peak_kb": $(peak_kb "$deposit_pid")}
JSON
    stop_servers
    if [ "$backend" = postgres ]; then # a million accounts take gigabytes
      psql "$pg/postgres" -qc "DROP DATABASE bench_portfolio_$size WITH (FORCE)" \
        -c "DROP DATABASE bench_deposit_$size WITH (FORCE)" >/dev/null
    fi
  done
done

if $with_pgbench; then
  say "pgbench tpcb-like and select-only, $concurrency clients"
  tps=$(pgbench_tps -b tpcb-like)
  # PostgreSQL's own ceiling for reads on this machine: prepared primary-key lookups.
  select_tps=$(pgbench_tps -S -M prepared)
  echo "{\"clients\": $concurrency, \"tps\": $tps, \"select_only_tps\": $select_tps}" >"$out/pgbench.json"
  psql "$pg/postgres" -qc "DROP DATABASE bench_pgbench WITH (FORCE)" >/dev/null
fi

# The daily switch under a customer's load (its own script: at a million accounts it takes
# longer than the rest of the suite): always in the smoke run, so that it keeps working; in
# the full run with BENCH_SWITCH=1.
if $smoke; then
  BENCH_OUT="$out" bash "$suite/switch.sh" --smoke
elif [ "${BENCH_SWITCH:-0}" = 1 ]; then
  BENCH_OUT="$out" bash "$suite/switch.sh"
fi

say "results in $out"
if $smoke; then
  python3 "$suite/report.py" "$out" --check
else
  python3 "$suite/report.py" "$out"
fi
