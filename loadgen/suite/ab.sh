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
# ("get_account list_holdings"). Prints one line per run and the mean of each side; SQLite.
set -euo pipefail
old=${1:?usage: ab.sh OLD_RELEASE_DIR NEW_RELEASE_DIR}
new=${2:?usage: ab.sh OLD_RELEASE_DIR NEW_RELEASE_DIR}
accounts=${AB_ACCOUNTS:-10000}
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
declare -A url
for side in old new; do
  dir=${!side}
  p=$(free_port) d=$(free_port)
  "$dir/portfolio-svc" --listen "127.0.0.1:$p" --metrics-listen 127.0.0.1:0 \
    --database-url "sqlite://$work/$side-portfolio.db" 2>"$work/$side-portfolio.log" &
  pids+=($!)
  "$dir/deposit-svc" --listen "127.0.0.1:$d" --metrics-listen 127.0.0.1:0 \
    --database-url "sqlite://$work/$side-deposit.db" --portfolio-url "http://127.0.0.1:$p" \
    2>"$work/$side-deposit.log" &
  pids+=($!)
  url[$side]="http://127.0.0.1:$p"
  # Each build's own loader; builds before the mandatory as_of do not know `--as-of now`.
  for attempt in $(seq 1 50); do
    set +e
    "$dir/loader" load "$work/day" --as-of now --portfolio-url "http://127.0.0.1:$p" \
      --deposit-url "http://127.0.0.1:$d" >/dev/null 2>&1
    status=$?
    [ $status -eq 2 ] && "$dir/loader" load "$work/day" --portfolio-url "http://127.0.0.1:$p" \
      --deposit-url "http://127.0.0.1:$d" >/dev/null 2>&1 && status=0
    set -e
    [ $status -eq 0 ] && break
    sleep 0.2 # the servers are still starting
  done
  [ $status -eq 0 ] || { echo "cannot load the day into the $side build" >&2; exit 1; }
done

for mix in $mixes; do
  for round in $(seq 1 "$rounds"); do
    for side in old new; do
      "$new/loadgen" bench --accounts "$accounts" --portfolio-url "${url[$side]}" \
        --mix "$mix=1" --duration "$duration" --warmup 2s --json "$work/$side-$mix-$round.json" >/dev/null
    done
  done
done

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
PY
