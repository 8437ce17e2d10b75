#!/usr/bin/env bash
# Soak: one herald hub holding many subscribers for a long time while publishing, watched from
# outside. See bench/README.md ("Soak").
#
#   bench/soak.sh [--minutes 60] [--subscribers 18000] [--rate 2]
#
# Load, all on loopback against one `herald serve` (release build, durable file store):
#   - `herald bench fanout`: SUBSCRIBERS - 1000 steady subscribers of one topic, RATE updates/s
#     of 200 bytes for the whole run; it counts every lost, duplicate or reordered delivery;
#   - bench/soak_clients.py: 500 subscribers that disconnect every 5-30 s and resume with
#     Last-Event-ID (gaps and duplicates counted, p50/p99 latency per minute), 500 slow readers
#     (1 KB every 2 s), and a publisher of mixed sizes (100 B to 64 KB) at 5 updates/s;
#   - a sampler: the hub's RSS, CPU and connections every 30 s ($RUN_DIR/samples.csv).
# At the end: $RUN_DIR/fanout.json, $RUN_DIR/clients.jsonl, samples.csv and a summary.
#
# Environment: HERALD_BIN (skips the cargo build), RUN_DIR (default: a new mktemp dir).
set -euo pipefail

MINUTES=60
SUBSCRIBERS=18000
RATE=2
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES=$2; shift 2 ;;
        --subscribers) SUBSCRIBERS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$BENCH_DIR/.."
log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -z "${HERALD_BIN:-}" ]; then
    cargo build --release -q -p herald
    HERALD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/herald"
fi
RUN_DIR="${RUN_DIR:-$(mktemp -d /tmp/herald-soak.XXXXXX)}"
mkdir -p "$RUN_DIR"
ulimit -n "$(ulimit -Hn)"
KEY="soak-$RANDOM-$RANDOM"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SECONDS_TOTAL=$((MINUTES * 60))
STEADY=$((SUBSCRIBERS - 1000))

"$HERALD_BIN" serve --listen "127.0.0.1:$PORT" --jwt-key "$KEY" --store "file:$RUN_DIR/data" \
    --history-size 100000 >"$RUN_DIR/herald.log" 2>&1 &
HUB=$!
trap 'kill $HUB $SAMPLER $CLIENTS 2>/dev/null || true' EXIT
SAMPLER=
CLIENTS=
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.2
done
log "hub pid $HUB on port $PORT; run dir $RUN_DIR; $MINUTES min, $SUBSCRIBERS subscribers"

PUB=$("$HERALD_BIN" token --key "$KEY" --publish '*')
SUB=$("$HERALD_BIN" token --key "$KEY" --subscribe '*' --ttl 86400)

(
    echo "t_s,rss_mb,cpu_s,connections,subscribers,owed_bytes,closed_stalled,closed_slow"
    start=$(date +%s)
    ticks=$(getconf CLK_TCK)
    while kill -0 $HUB 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ {printf "%.1f", $2/1024}' /proc/$HUB/status)
        cpu=$(awk -v t="$ticks" '{printf "%.1f", ($14+$15)/t}' /proc/$HUB/stat)
        m=$(curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" || true)
        g() { echo "$m" | awk -v n="$1" '$1==n {print $2}'; }
        echo "$(( $(date +%s) - start )),$rss,$cpu,$(g herald_connections),$(g herald_subscribers),$(g herald_owed_bytes),$(g herald_subscriber_closed_stalled_total),$(g herald_subscriber_closed_slow_total)"
        sleep 30
    done
) >"$RUN_DIR/samples.csv" &
SAMPLER=$!

python3 "$BENCH_DIR/soak_clients.py" --port "$PORT" --publisher-token "$PUB" \
    --subscriber-token "$SUB" --seconds "$SECONDS_TOTAL" >"$RUN_DIR/clients.jsonl" 2>&1 &
CLIENTS=$!

"$HERALD_BIN" bench fanout --url "http://127.0.0.1:$PORT" --jwt-key "$KEY" \
    --server-pid "$HUB" --conns "$STEADY" --rate "$RATE" --messages $((SECONDS_TOTAL * RATE)) \
    --size 200 --timeout 60 --floor-us 1 --json >"$RUN_DIR/fanout.json" 2>"$RUN_DIR/fanout.err" || true
wait $CLIENTS || true
log "done; summary:"
python3 - "$RUN_DIR" <<'EOF'
import csv, json, sys, pathlib
run = pathlib.Path(sys.argv[1])
rows = list(csv.DictReader(open(run / "samples.csv")))
rss = [float(r["rss_mb"]) for r in rows if r["rss_mb"]]
warm = rss[len(rss) // 6:] if len(rss) > 6 else rss
if warm:
    lo, hi = min(warm), max(warm)
    print(f"RSS after warm-up: {lo:.0f}-{hi:.0f} MB (spread {100 * (hi - lo) / lo:.1f}%), samples {len(rss)}")
try:
    fan = json.loads((run / "fanout.json").read_text().strip().splitlines()[-1])
    keys = ("subscribers", "connect_failed", "expected", "delivered", "lost", "duplicates", "reordered", "latency_ms", "bench_cpu_us", "publish_errors")
    print("fanout:", json.dumps({k: fan.get(k) for k in keys}))
except Exception as err:
    print("fanout: no result:", err, (run / "fanout.err").read_text()[-500:])
windows = [json.loads(l) for l in open(run / "clients.jsonl") if l.startswith('{"t"')]
if windows:
    p99 = [w["p99_ms"] for w in windows if w["p99_ms"] is not None]
    last = windows[-1]
    print(f"clients: {len(windows)} windows; gaps {last['gaps_total']}, duplicates {last['duplicates_total']}; "
          f"p99 per window {min(p99):.1f}-{max(p99):.1f} ms; reconnects/window ~{windows[-1]['reconnects']}")
EOF
