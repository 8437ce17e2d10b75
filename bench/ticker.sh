#!/usr/bin/env bash
# Conflation, measured: `herald bench ticker` (500 symbols x 10 updates/s to 2,000 subscribers
# watching 10 symbols each, 200 of them slow readers) against three hubs in one run, each fresh:
#   exact       no --conflate: every subscriber gets every update;
#   conflated   --conflate on the symbols' topics;
#   no-lowat    --conflate, with --tcp-notsent-lowat 0 (the kernel's whole send buffer).
#
#   bench/ticker.sh [--seconds 60] [--store memory|file] [-- more `herald bench ticker` flags]
#
# Environment: HERALD_BIN (skips the cargo build), RUN_DIR (default: a new mktemp dir).
# Prints one line per hub; the JSON reports are in $RUN_DIR.
set -euo pipefail

SECONDS_RUN=60
STORE=memory
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_RUN=$2; shift 2 ;;
        --store) STORE=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${HERALD_BIN:-}" ]; then
    cargo build --release -q -p herald
    HERALD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/herald"
fi
RUN_DIR="${RUN_DIR:-$(mktemp -d /tmp/herald-ticker.XXXXXX)}"
mkdir -p "$RUN_DIR"
ulimit -n "$(ulimit -Hn)"
KEY="ticker-$RANDOM"
PRICES='https://bench.herald.invalid/prices/{symbol}'

for config in exact conflated no-lowat; do
    case $config in
        exact) flags=() ;;
        conflated) flags=(--conflate "$PRICES") ;;
        no-lowat) flags=(--conflate "$PRICES" --tcp-notsent-lowat 0) ;;
    esac
    store=memory
    if [ "$STORE" = file ]; then
        rm -rf "$RUN_DIR/data-$config" "$RUN_DIR/data-$config.head"
        store="file:$RUN_DIR/data-$config"
    fi
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$HERALD_BIN" serve --listen "127.0.0.1:$PORT" --jwt-key "$KEY" --store "$store" \
        "${flags[@]}" >"$RUN_DIR/herald-$config.log" 2>&1 &
    HUB=$!
    for _ in $(seq 50); do
        curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
        sleep 0.2
    done
    "$HERALD_BIN" bench ticker --url "http://127.0.0.1:$PORT" --jwt-key "$KEY" \
        --seconds "$SECONDS_RUN" --server-pid "$HUB" --json "$@" \
        >"$RUN_DIR/$config.json" 2>"$RUN_DIR/$config.err" || {
        echo "$config: bench failed, see $RUN_DIR/$config.err" >&2
        tail -3 "$RUN_DIR/$config.err" >&2
    }
    kill "$HUB"
    wait "$HUB" 2>/dev/null || true
done

python3 - "$RUN_DIR" <<'PY'
import json, sys, os
d = sys.argv[1]
print(f"{'hub':<10} {'fast lost':>9} {'fast p99 ms':>11} {'slow got':>8} {'current p50/p99/max ms':>24} "
      f"{'never':>5} {'RSS MB warm':>12} {'hub CPU %':>9} {'bench %':>7} {'busy %':>6}")
for config in ["exact", "conflated", "no-lowat"]:
    path = os.path.join(d, config + ".json")
    try:
        r = json.loads(open(path).read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        print(f"{config:<10} (no report)")
        continue
    f, s, sv = r["fast"], r["slow_readers"], r.get("server") or {}
    c = s["current_after_ms"]
    rss = sv.get("rss_mb_after_warm_up", {})
    print(f"{config:<10} {f['lost']:>9} {f['latency_ms']['p99']:>11} {s['received_share']:>8} "
          f"{str(c['p50']) + '/' + str(c['p99']) + '/' + str(c['max']):>24} {s['never_current']:>5} "
          f"{str(rss.get('min')) + '-' + str(rss.get('max')):>12} {sv.get('cpu_percent', '-'):>9} "
          f"{r['bench_cpu_percent']:>7} {r['machine_busy_percent']:>6}")
PY
echo "reports: $RUN_DIR"
