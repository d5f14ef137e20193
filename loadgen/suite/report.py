#!/usr/bin/env python3
"""Turns the JSON results of loadgen/suite/run.sh into Markdown tables and an SVG chart.

    report.py OUT_DIR            writes OUT_DIR/results.md and OUT_DIR/chart.svg
    report.py OUT_DIR --check    also fails if a run is missing or reported errors (CI smoke)

No third-party packages: the chart is plain SVG.
"""

import json
import pathlib
import platform
import subprocess
import sys

RPCS = ["GetAccount", "ListHoldings", "ListAccounts", "Deposit", "Withdrawal"]
RUNS = {"get_account": "GetAccount", "list_holdings": "ListHoldings", "list_accounts": "ListAccounts", "deposit": "Deposit",
        "withdrawal": "Withdrawal"}


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def rpc_stats(run, target):
    """The per-RPC stats of a single-RPC run (its only RPC)."""
    side = run.get(target) or {}
    rpcs = side.get("rpcs", {})
    return next(iter(rpcs.values()), None) if len(rpcs) == 1 else side.get("total")


def command(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": command("nproc"),
        "memory": mem,
        "kernel": platform.release(),
        "rustc": command("rustc", "--version"),
        "postgres": command("psql", "--version"),
    }


def fmt_bytes(n):
    return f"{n / 1048576:.1f} MiB" if n >= 1048576 else f"{n / 1024:.0f} KiB"


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def chart(rows, path):
    """Grouped bars: throughput of each RPC against the ceiling, per backend and size; p99 as
    labels. rows: (label, real_rps, ceiling_rps, real_p99, ceiling_p99)."""
    if not rows:
        return
    width, bar, gap, top, left, height = 1000, 14, 18, 40, 230, 0
    height = top + len(rows) * (2 * bar + gap) + 40
    peak = max(max(r[1], r[2]) for r in rows) or 1
    scale = (width - left - 160) / peak
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">Throughput (requests/s) and p99: ours (blue) vs a no-op gRPC server (grey), same machine, same run</text>',
    ]
    y = top
    for label, real, ceiling, real_p99, ceiling_p99 in rows:
        out.append(f'<text x="{left - 8}" y="{y + bar + 4}" text-anchor="end">{label}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{real * scale:.1f}" height="{bar}" fill="#2b6cb0"/>')
        out.append(f'<text x="{left + real * scale + 6:.1f}" y="{y + bar - 3}">{real:,.0f}/s, p99 {fmt_us(real_p99)}</text>')
        y += bar
        out.append(f'<rect x="{left}" y="{y}" width="{ceiling * scale:.1f}" height="{bar}" fill="#a0aec0"/>')
        out.append(f'<text x="{left + ceiling * scale + 6:.1f}" y="{y + bar - 3}" fill="#4a5568">{ceiling:,.0f}/s, p99 {fmt_us(ceiling_p99)}</text>')
        y += bar + gap
    out.append("</svg>")
    path.write_text("\n".join(out), encoding="utf-8")


def run_figures(out, backend, accounts, name):
    """(real stats, ceiling stats, cache counts) of one run, or None when it is missing."""
    path = out / f"rpc-{backend}-{accounts}-{name}.json"
    if not path.exists():
        return None
    result = load(path)
    cache = out / f"cache-{backend}-{accounts}-{name}.json"
    counts = load(cache) if cache.exists() else {}
    side = lambda target: (result.get(target) or {}).get("total")
    return side("real"), side("ceiling"), counts


def hit_rate(counts):
    asked = counts.get("hits", 0) + counts.get("misses", 0) + counts.get("bypasses", 0)
    return f"{counts['hits'] / asked:.1%}" if asked else "–"


def read_cache(out, loads, problems):
    """The sections of issue 12: hit rates, skewed readers, the overlay, freshness."""
    lines = ["", "## Read cache", "",
             "Hit rate of portfolio-svc's read cache in each run (hits / reads; a read of a missing "
             "entry fills it), and the bytes it held at the end.", "",
             "| backend | accounts | run | hit rate | misses | bytes held |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for r in loads:
        for name in ["get_account", "list_holdings", "list_accounts", "mixed", "reads_uniform", "reads_skewed"]:
            cache = out / f"cache-{r['backend']}-{r['accounts']}-{name}.json"
            if cache.exists():
                c = load(cache)
                lines.append(f"| {r['backend']} | {r['accounts']:,} | {name} | {hit_rate(c)} | {c['misses']:,} | "
                             f"{fmt_bytes(c['bytes'])} |")
    lines += ["", "## Uniform and skewed readers", "",
              "GetAccount and ListHoldings, half each, over the sampled customers: uniformly, then with a "
              "Zipf skew (a few hot customers).", "",
              "| backend | accounts | readers | req/s | ceiling req/s | ratio | p50 | p99 | ceiling p99 | p99 ratio | hit rate |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in loads:
        for name in ["reads_uniform", "reads_skewed"]:
            figures = run_figures(out, r["backend"], r["accounts"], name)
            if not figures or not figures[0] or not figures[1]:
                continue
            real, ceiling, counts = figures
            lat, clat = real["latency_us"], ceiling["latency_us"]
            lines.append(
                f"| {r['backend']} | {r['accounts']:,} | {name.split('_')[1]} | {real['throughput_rps']:,.0f} | "
                f"{ceiling['throughput_rps']:,.0f} | {real['throughput_rps'] / ceiling['throughput_rps']:.2f} | "
                f"{fmt_us(lat['p50'])} | {fmt_us(lat['p99'])} | {fmt_us(clat['p99'])} | "
                f"{lat['p99'] / max(clat['p99'], 1):.2f} | {hit_rate(counts)} |")
    lines += ["", "## The overlay: an account with many deposits after the snapshot", "",
              "GetAccount on one account with the suite's deposits after the snapshot (`busy`) and on one "
              "without (`none`), answered from memory and by a replica with the cache off (`database`).", "",
              "| backend | accounts | answered from | none req/s | busy req/s | none p50 | busy p50 | busy / none p50 | busy / none p99 |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in loads:
        for side in ["memory", "database"]:
            none = run_figures(out, r["backend"], r["accounts"], f"overlay_none_{side}")
            busy = run_figures(out, r["backend"], r["accounts"], f"overlay_busy_{side}")
            if not none or not busy or not none[0] or not busy[0]:
                continue
            n, b = none[0], busy[0]
            lines.append(
                f"| {r['backend']} | {r['accounts']:,} | {side} | {n['throughput_rps']:,.0f} | {b['throughput_rps']:,.0f} | "
                f"{fmt_us(n['latency_us']['p50'])} | {fmt_us(b['latency_us']['p50'])} | "
                f"{b['latency_us']['p50'] / max(n['latency_us']['p50'], 1):.2f} | "
                f"{b['latency_us']['p99'] / max(n['latency_us']['p99'], 1):.2f} |")
    fresh = sorted(out.glob("freshness-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if fresh:
        lines += ["", "## Freshness across replicas (PostgreSQL)", "",
                  "Deposits applied through one portfolio-svc replica, GetAccount through another, one at a "
                  "time: how long after ApplyDeposit answered the other replica first showed the deposit "
                  "(and from the start of the ApplyDeposit call).", "",
                  "| accounts | deposits | p50 | p90 | p99 | max | max from the call | reads per deposit | timeouts |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for path in fresh:
            f = load(path)
            if not f.get("ok", False):
                problems.append(f"{path.name}: not ok")
            a, c = f.get("after_apply_us") or {}, f.get("from_call_us") or {}
            if not a:
                continue
            lines.append(
                f"| {f['config']['accounts']:,} | {f['seen']:,} | {fmt_us(a['p50'])} | {fmt_us(a['p90'])} | "
                f"{fmt_us(a['p99'])} | {fmt_us(a['max'])} | {fmt_us(c.get('max', 0))} | "
                f"{f.get('reads_per_deposit') or 0:.1f} | {f['timeouts']} |")
    return lines


def main():
    out = pathlib.Path(sys.argv[1])
    check = "--check" in sys.argv[2:]
    problems = []
    lines = ["## Machine", ""]
    for key, value in machine().items():
        lines.append(f"- {key}: {value}")

    loads = sorted((load(p) for p in out.glob("load-*.json")), key=lambda r: (r["backend"], r["accounts"]))
    lines += ["", "## Loading a day", "",
              "| backend | accounts | holdings | loader (s) | rows/s | bulk path (s) | loader / bulk | loader peak RSS | portfolio-svc peak RSS | deposit-svc peak RSS |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in loads:
        rows_per_s = r["holdings"] / r["load_seconds"] if r["load_seconds"] else 0
        ratio = r["load_seconds"] / r["bulk_seconds"] if r["bulk_seconds"] else 0
        lines.append(
            f"| {r['backend']} | {r['accounts']:,} | {r['holdings']:,} | {r['load_seconds']:.2f} | {rows_per_s:,.0f} | "
            f"{r['bulk_seconds']:.2f} | {ratio:.2f}× | {r['loader_peak_kb'] / 1024:.0f} MiB | "
            f"{r['portfolio_peak_kb'] / 1024:.0f} MiB | {r['deposit_peak_kb'] / 1024:.0f} MiB |")

    lines += ["", "## RPCs against the no-op ceiling", "",
              "| backend | accounts | RPC | req/s | ceiling req/s | ratio | p50 | p99 | p99.9 | max | ceiling p99 | p99 ratio | errors |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    bars = []
    for r in loads:
        for run, rpc in RUNS.items():
            path = out / f"rpc-{r['backend']}-{r['accounts']}-{run}.json"
            if not path.exists():
                problems.append(f"missing {path.name}")
                continue
            result = load(path)
            real, ceiling = rpc_stats(result, "real"), rpc_stats(result, "ceiling")
            if not result.get("ok", False):
                problems.append(f"{path.name}: unexpected errors")
            if not real or not ceiling:
                problems.append(f"{path.name}: no figures")
                continue
            errors = sum((result.get("real") or {}).get("total", {}).get("errors", {}).values())
            lat, clat = real["latency_us"], ceiling["latency_us"]
            tput, ctput = real["throughput_rps"], ceiling["throughput_rps"]
            lines.append(
                f"| {r['backend']} | {r['accounts']:,} | {rpc} | {tput:,.0f} | {ctput:,.0f} | {tput / ctput:.2f} | "
                f"{fmt_us(lat['p50'])} | {fmt_us(lat['p99'])} | {fmt_us(lat['p999'])} | {fmt_us(lat['max'])} | "
                f"{fmt_us(clat['p99'])} | {lat['p99'] / max(clat['p99'], 1):.2f} | {errors} |")
            if rpc in ("GetAccount", "ListHoldings", "Deposit"):
                bars.append((f"{rpc} {r['backend']} {r['accounts']:,}", tput, ctput, lat["p99"], clat["p99"]))

    pgbench = out / "pgbench.json"
    if pgbench.exists():
        pg = load(pgbench)
        lines += ["", "## Deposits against pgbench", "",
                  f"pgbench tpcb-like, {pg['clients']} clients: **{pg['tps']:,.0f} TPS**."]
        if "select_only_tps" in pg:
            lines.append(f"pgbench select-only (prepared primary-key lookups), same clients: "
                         f"**{pg['select_only_tps']:,.0f} TPS**, PostgreSQL's own ceiling for reads here.")
        lines.append("")
        for r in loads:
            if r["backend"] != "postgres":
                continue
            path = out / f"rpc-postgres-{r['accounts']}-deposit.json"
            if path.exists():
                real = rpc_stats(load(path), "real")
                # The pgbench run right before this deposit run, where the suite made one.
                beside = out / f"pgbench-{r['accounts']}.json"
                tps, which = (load(beside)["tps"], "the pgbench run right before it") if beside.exists() \
                    else (pg["tps"], "pgbench")
                if real:
                    lines.append(f"- {r['accounts']:,} accounts: {real['throughput_rps']:,.0f} deposits/s "
                                 f"(phase 1 + phase 2) = {real['throughput_rps'] / tps:.2f} of {which} "
                                 f"({tps:,.0f} TPS)")
                path = out / f"rpc-postgres-{r['accounts']}-withdrawal.json"
                withdrawals = rpc_stats(load(path), "real") if path.exists() else None
                if withdrawals:
                    lines.append(f"- {r['accounts']:,} accounts: {withdrawals['throughput_rps']:,.0f} withdrawals/s "
                                 f"(phase 1 with its hold + phase 2 with its take) = "
                                 f"{withdrawals['throughput_rps'] / tps:.2f} of {which} ({tps:,.0f} TPS)")

    lines += read_cache(out, loads, problems)

    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    chart(bars, out / "chart.svg")
    print("\n".join(lines))
    if check and (problems or not loads):
        sys.exit("benchmark check failed: " + "; ".join(problems or ["no results"]))


if __name__ == "__main__":
    main()
