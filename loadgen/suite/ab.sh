#!/usr/bin/env bash
# A/B of two builds of the servers on this machine: the same generated day loaded into each,
# the same loadgen client, runs alternating between the two (A, B, A, B, …) so that the
# machine's drift weighs on both alike. For a change on the request path, whose cost the
# ceiling ratios of run.sh are too noisy to show.
#
#   loadgen/suite/ab.sh OLD_RELEASE_DIR NEW_RELEASE_DIR
#
# Each directory holds portfolio-svc, deposit-svc and loader of one build (e.g. a worktree of
# the old commit built with `cargo build --release --bins`, and target/release). Settings
# (environment): AB_ACCOUNTS (10000), AB_ROUNDS (3), AB_DURATION (8s), AB_MIXES
# ("get_account list_holdings"), AB_LOAD_ACCOUNTS (0: no load runs; otherwise the size of a
# day whose `loader load` into fresh servers is timed, AB_ROUNDS times per side). Prints one
# line per run and the mean of each side; SQLite.
set -euo pipefail
old=${1:?usage: ab.sh OLD_RELEASE_DIR NEW_RELEASE_DIR}
new=${2:?usage: ab.sh OLD_RELEASE_DIR NEW_RELEASE_DIR}
accounts=${AB_ACCOUNTS:-10000}
load_accounts=${AB_LOAD_ACCOUNTS:-0}
rounds=${AB_ROUNDS:-3}
duration=${AB_DURATION:-8s}
mixes=${AB_MIXES:-get_account list_holdings}

work=$(mktemp -d)
pids=()
cleanup() {
  if [ ${#pids[@]} -gt 0 ]; then kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export INVEST_JWT_SECRET="ab-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export RUST_LOG=warn
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

"$new/loader" gen "$work/day" --accounts "$accounts" --seed 1 >/dev/null
# Starts one build's servers on fresh SQLite files; sets url[$side] and their pids.
start() { # side tag
  local side=$1 tag=$2 dir=${!1} p d
  p=$(free_port) d=$(free_port)
  "$dir/portfolio-svc" --listen "127.0.0.1:$p" --metrics-listen 127.0.0.1:0 \
    --database-url "sqlite://$work/$tag-portfolio.db" 2>"$work/$tag-portfolio.log" &
  pids+=($!)
  "$dir/deposit-svc" --listen "127.0.0.1:$d" --metrics-listen 127.0.0.1:0 \
    --database-url "sqlite://$work/$tag-deposit.db" --portfolio-url "http://127.0.0.1:$p" \
    2>"$work/$tag-deposit.log" &
  pids+=($!)
  url[$side]="http://127.0.0.1:$p"
  deposit_url="http://127.0.0.1:$d"
}

# Loads `day` with one build's own loader (builds before the mandatory as_of do not know
# `--as-of now`), retrying while the servers start.
load() { # side day
  local dir=${!1} day=$2 status=1
  for _ in $(seq 1 50); do
    set +e
    "$dir/loader" load "$day" --as-of now --portfolio-url "${url[$1]}" \
      --deposit-url "$deposit_url" >/dev/null 2>&1
    status=$?
    [ $status -eq 2 ] && "$dir/loader" load "$day" --portfolio-url "${url[$1]}" \
      --deposit-url "$deposit_url" >/dev/null 2>&1 && status=0
    set -e
    [ $status -eq 0 ] && return 0
    sleep 0.2 # the servers are still starting
  done
  echo "cannot load $day into the $1 build" >&2
  exit 1
}

declare -A url
for side in old new; do
  start "$side" "$side"
  load "$side" "$work/day"
done
for mix in $mixes; do
  for round in $(seq 1 "$rounds"); do
    for side in old new; do
      "$new/loadgen" bench --accounts "$accounts" --portfolio-url "${url[$side]}" \
        --mix "$mix=1" --duration "$duration" --warmup 2s --json "$work/$side-$mix-$round.json" >/dev/null
    done
  done
done

if [ "$load_accounts" -gt 0 ]; then
  "$new/loader" gen "$work/big" --accounts "$load_accounts" --seed 7 --format plain >/dev/null
  # Servers that already listen, so that (nearly) only the load is timed.
  for round in $(seq 1 "$rounds"); do
    for side in old new; do
      start "$side" "$side-load-$round"
      until python3 -c "import socket,sys; [socket.create_connection(('127.0.0.1', int(u.rsplit(':', 1)[1])), 1) for u in sys.argv[1:]]" "${url[$side]}" "$deposit_url" 2>/dev/null; do
        sleep 0.1
      done
      started=$(date +%s.%N)
      load "$side" "$work/big"
      ended=$(date +%s.%N)
      echo "$side $round $(python3 -c "print($ended - $started)")" >>"$work/loads"
    done
  done
fi

python3 - "$work" "$rounds" $mixes <<'PY'
import json, sys
work, rounds, mixes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for mix in mixes:
    means = {}
    for side in ("old", "new"):
        values = []
        for r in range(1, rounds + 1):
            rpcs = json.load(open(f"{work}/{side}-{mix}-{r}.json"))["real"]["rpcs"]
            values.append(next(iter(rpcs.values()))["throughput_rps"])
        means[side] = sum(values) / len(values)
        print(f"{mix:14} {side}: " + "  ".join(f"{v:8.0f}" for v in values) + f"   mean {means[side]:8.0f} req/s")
    print(f"{mix:14} new / old: {means['new'] / means['old']:.2f}")
import os
if os.path.exists(f"{work}/loads"):
    times = {"old": [], "new": []}
    for line in open(f"{work}/loads"):
        side, _, seconds = line.split()
        times[side].append(float(seconds))
    for side in ("old", "new"):
        values = times[side]
        print(f"{'loader load':14} {side}: " + "  ".join(f"{v:7.2f}s" for v in values) + f"   mean {sum(values) / len(values):7.2f}s")
    print(f"{'loader load':14} new / old: {(sum(times['new']) / len(times['new'])) / (sum(times['old']) / len(times['old'])):.2f}")
PY
