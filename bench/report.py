#!/usr/bin/env python3
"""Turns bench/compare.sh's results.jsonl into one table: per scenario, herald's and nchan's key
figures and the ratio herald/nchan. Prints it and, with --markdown, writes it to a file.
Any figure missing from a bench's JSON shows as "-"."""

import argparse
import json
import sys


def get(obj, *path):
    for key in path:
        if not isinstance(obj, dict) or obj.get(key) is None:
            return None
        obj = obj[key]
    return obj


def num(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
            return f"{int(value):,}"
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return "-"
    return f"{a / b:.2f}"


def rows_idle(h, n):
    """(metric, herald value, nchan value, comparable numbers or None)"""
    def conn(o):
        if o is None or "error" in o and get(o, "connected") is None:
            return "-"
        return f"{num(get(o, 'connected'))}/{num(get(o, 'conns'))}"

    out = [
        ("connected/asked", conn(h), conn(n), None),
        ("connect failures", num(get(h, "failed")), num(get(n, "failed")), None),
    ]
    for label, key in (("server B/sub (RSS)", "rss_per_conn"), ("server B/sub (PSS)", "pss_per_conn")):
        hv, nv = get(h, "server", key), get(n, "server", key)
        out.append((label, num(hv, 0), num(nv, 0), ratio(hv, nv)))
    for label, key in (("server RSS after, MiB", "rss_after"), ("server PSS after, MiB", "pss_after")):
        hv, nv = get(h, "server", key), get(n, "server", key)
        mib = lambda v: v / 1048576 if isinstance(v, (int, float)) else None
        out.append((label, num(mib(hv)), num(mib(nv)), ratio(hv, nv)))
    hv, nv = get(h, "server", "cpu_us"), get(n, "server", "cpu_us")
    out.append(("server CPU ms", num(ms(hv)), num(ms(nv)), ratio(hv, nv)))
    hv, nv = get(h, "bench_cpu_us"), get(n, "bench_cpu_us")
    out.append(("bench CPU ms", num(ms(hv)), num(ms(nv)), ratio(hv, nv)))
    return out


def ms(us):
    return us / 1000 if isinstance(us, (int, float)) else None


def rows_fanout(h, n, floor_us):
    def deliv(o):
        if get(o, "delivered") is None:
            return "-"
        return f"{num(get(o, 'delivered'))}/{num(get(o, 'expected'))}"

    out = [
        ("delivered/expected", deliv(h), deliv(n), ratio(get(h, "delivered"), get(n, "delivered"))),
        ("lost", num(get(h, "lost")), num(get(n, "lost")), None),
        ("duplicates", num(get(h, "duplicates")), num(get(n, "duplicates")), None),
        ("publish errors", num(get(h, "publish_errors")), num(get(n, "publish_errors")), None),
    ]
    hv, nv = get(h, "deliveries_per_s"), get(n, "deliveries_per_s")
    out.append(("deliveries/s", num(hv, 0), num(nv, 0), ratio(hv, nv)))
    for p in ("p50", "p99", "max"):
        hv, nv = get(h, "latency_ms", p), get(n, "latency_ms", p)
        out.append((f"latency {p} ms", num(hv, 2), num(nv, 2), ratio(hv, nv)))
    hv, nv = get(h, "server", "cpu_us_per_delivery"), get(n, "server", "cpu_us_per_delivery")
    out.append(("server CPU-us/delivery", num(hv, 2), num(nv, 2), ratio(hv, nv)))
    # Each fan-out run measured the floor with as many sockets and as large writes as it
    # delivers to (the kernel's cost per write grows with the number of sockets).
    run_floor = get(h, "floor_us") or get(n, "floor_us") or floor_us
    x = lambda v: v / run_floor if isinstance(v, (int, float)) and run_floor else None
    out.append(("floor CPU-us/write (same N, size)", num(run_floor, 2), "", None))
    out.append(("  server x floor", num(x(hv), 2), num(x(nv), 2), None))
    hv, nv = get(h, "bench_cpu_us_per_delivery"), get(n, "bench_cpu_us_per_delivery")
    out.append(("bench CPU-us/delivery", num(hv, 2), num(nv, 2), ratio(hv, nv)))
    hv, nv = get(h, "server", "rss_after"), get(n, "server", "rss_after")
    mib = lambda v: v / 1048576 if isinstance(v, (int, float)) else None
    out.append(("server RSS after, MiB", num(mib(hv)), num(mib(nv)), ratio(hv, nv)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", required=True)
    ap.add_argument("--floor")
    ap.add_argument("--meta")
    ap.add_argument("--markdown")
    args = ap.parse_args()

    results = []
    with open(args.results) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    results.append(json.loads(line))
                except ValueError:
                    print(f"skipping a line that is not JSON: {line[:80]}", file=sys.stderr)

    floor = None
    if args.floor:
        try:
            with open(args.floor) as f:
                floor = json.loads(f.read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            floor = None
    floor_us = get(floor, "cpu_us_per_write")

    scenarios = []
    by = {}
    for r in results:
        s = r.get("scenario", "?")
        if s not in by:
            scenarios.append(s)
            by[s] = {}
        by[s][r.get("target", "?")] = r

    lines = ["# herald vs nginx + nchan", ""]
    if args.meta:
        try:
            with open(args.meta) as f:
                lines += [f"- {l.strip()}" for l in f if l.strip()]
        except OSError:
            pass
    if floor_us is not None:
        lines.append(
            f"- floor: {num(floor_us, 2)} CPU-us per {num(get(floor, 'size'))}-byte loopback write "
            f"({num(get(floor, 'conns'))} sockets x {num(get(floor, 'rounds'))} rounds)"
        )
    else:
        lines.append("- floor: -")
    lines += ["", "| scenario | metric | herald | nchan | herald/nchan |", "|---|---|---|---|---|"]

    errors = []
    for s in scenarios:
        h, n = by[s].get("herald"), by[s].get("nchan")
        mode = get(h, "mode") or get(n, "mode") or s.split()[0]
        rows = rows_fanout(h, n, floor_us) if mode == "fanout" else rows_idle(h, n)
        for i, (metric, hv, nv, rt) in enumerate(rows):
            lines.append(f"| {s if i == 0 else ''} | {metric} | {hv} | {nv} | {rt or ''} |")
        for t, o in (("herald", h), ("nchan", n)):
            if o is None:
                errors.append(f"{s} / {t}: no result")
            elif o.get("error"):
                errors.append(f"{s} / {t}: {o['error']}")
    if errors:
        lines += ["", "Errors:", ""] + [f"- {e}" for e in errors]
    lines += [
        "",
        "B/sub: growth of the server's memory from before connecting to while all subscriptions "
        "are held, per subscription (nchan: master + worker). CPU-us/delivery: the server's CPU "
        "time over the run per delivered update; x floor: that over the machine's cost of one "
        "small socket write. Ratios below 1 favour herald, except deliveries/s and delivered.",
    ]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
