#!/usr/bin/env python3
"""Splits the requests of a switch run (switch.sh) into phases and reports each.

    switch.py MARKS.json REQUESTS.csv OUT.json [--check]   # prints a Markdown report

With --check (the smoke run in CI) it fails when a request failed or a day was not pruned;
it checks no timing.

Phases of each measured day: quiet (before the first load), load (the loader runs), switch
(5 s either side of the loader's end, when the new day becomes current), prune (until both
services hold one day only), after (until the next load). Reads are GetAccount and
ListHoldings; a deposit is both of its phases. Targets: no error, p99 during the switch within
2x of quiet, max under one second; the databases' size after the last day within 10% of after
the third.
"""

import csv
import json
import sys

SWITCH_MS = 5_000


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def summary(rows):
    latencies = sorted(r["latency_ms"] for r in rows)
    return {
        "requests": len(rows),
        "errors": sum(r["code"] != "OK" for r in rows),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
    }


def main():
    marks = json.load(open(sys.argv[1]))
    with open(sys.argv[2]) as f:
        requests = [
            {
                "at": int(r["started_unix_ms"]),
                "kind": "deposits" if r["operation"] == "deposit" else "reads",
                "latency_ms": int(r["latency_us"]) / 1000,
                "code": r["code"],
            }
            for r in csv.DictReader(f)
        ]
    end = max((r["at"] for r in requests), default=0) + 1
    loads = {load["day"]: load for load in marks["loads"]}
    measured = [day for day in (1, 2) if day in loads]
    phases = [("quiet", marks["quiet_from"], loads[measured[0]]["started"] if measured else end)]
    for day in measured:
        load = loads[day]
        following = loads.get(day + 1, {}).get("started", end) if day + 1 in measured else end
        # Phases never overlap; one that a short load or prune leaves empty shows as such.
        switch_from = max(load["started"], load["ended"] - SWITCH_MS)
        switch_to = load["ended"] + SWITCH_MS
        settled = max(switch_to, load["pruned"])
        # Days are counted from 1 (the first day loaded), as in the table of sizes.
        phases += [
            (f"day {day + 1}: load", load["started"], switch_from),
            (f"day {day + 1}: switch", switch_from, switch_to),
            (f"day {day + 1}: prune", switch_to, settled),
            (f"day {day + 1}: after", settled, max(settled, following)),
        ]
    report = {"backend": marks["backend"], "accounts": marks["accounts"], "rate": marks["rate"], "phases": []}
    for name, start, stop in phases:
        rows = [r for r in requests if start <= r["at"] < stop]
        report["phases"].append({
            "phase": name,
            "seconds": round((stop - start) / 1000, 1),
            "reads": summary([r for r in rows if r["kind"] == "reads"]),
            "deposits": summary([r for r in rows if r["kind"] == "deposits"]),
        })
    report["days"] = [
        {
            "day": load["day"],
            "load_seconds": round((load["ended"] - load["started"]) / 1000, 1),
            "prune_seconds": round((load["pruned"] - load["ended"]) / 1000, 1),
            "size_bytes": load["size_bytes"],
        }
        for load in marks["loads"]
    ]

    quiet = report["phases"][0]
    verdicts = []
    errors = sum(p[k]["errors"] for p in report["phases"] for k in ("reads", "deposits"))
    verdicts.append(("no error", errors == 0, f"{errors} errors"))
    for phase in report["phases"][1:]:
        if not phase["phase"].endswith("switch"):
            continue
        for kind in ("reads", "deposits"):
            q, s = quiet[kind]["p99_ms"], phase[kind]["p99_ms"]
            if q and s is not None:
                verdicts.append((f"{phase['phase']}: {kind} p99 within 2x of quiet", s <= 2 * q,
                                 f"{s:.1f} ms against {q:.1f} ms ({s / q:.2f}x)"))
    for phase in report["phases"]:
        for kind in ("reads", "deposits"):
            worst = phase[kind]["max_ms"]
            if worst is not None and worst >= 1000:
                verdicts.append((f"{phase['phase']}: {kind} max under 1 s", False, f"{worst:.0f} ms"))
    worst = max((p[k]["max_ms"] or 0 for p in report["phases"] for k in ("reads", "deposits")), default=0)
    verdicts.append(("max under 1 s in every phase", worst < 1000, f"worst {worst:.0f} ms"))
    sizes = [d["size_bytes"] for d in report["days"]]
    if len(sizes) >= 4:
        ratio = sizes[-1] / sizes[2]
        verdicts.append((f"size after day {len(sizes)} within 10% of after day 3", ratio <= 1.10,
                         f"{sizes[-1] / 2**20:.0f} MiB against {sizes[2] / 2**20:.0f} MiB ({ratio:.3f}x)"))
    report["verdicts"] = [{"check": c, "ok": ok, "detail": d} for c, ok, d in verdicts]
    json.dump(report, open(sys.argv[3], "w"), indent=1)

    def cell(s):
        if not s["requests"]:
            return "– | – | – | –"
        return f"{s['requests']} ({s['errors']} err) | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.0f}"

    print(f"### {report['backend']}, {report['accounts']:,} accounts, {report['rate']} requests/s\n")
    print("| phase | s | reads (errors) | p50 ms | p99 ms | max ms | deposits (errors) | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in report["phases"]:
        print(f"| {p['phase']} | {p['seconds']} | {cell(p['reads'])} | {cell(p['deposits'])} |")
    print("\n| day | load s | prune s | size MiB |")
    print("|---:|---:|---:|---:|")
    for d in report["days"]:
        print(f"| {d['day'] + 1} | {d['load_seconds']} | {d['prune_seconds']} | {d['size_bytes'] / 2**20:.0f} |")
    print()
    for v in report["verdicts"]:
        print(f"- {'met' if v['ok'] else 'MISSED'}: {v['check']} ({v['detail']})")
    if "--check" in sys.argv[4:] and (errors or not report["days"]):
        sys.exit(f"switch.py: {errors} requests failed" if errors else "switch.py: no day was loaded")


if __name__ == "__main__":
    main()
