#!/usr/bin/env bash
# A/B: the same fan-out (1,000 subscribers x 100 updates/s of 100 B, 1,000 updates) against two
# herald binaries, /tmp/herald-base and /tmp/herald-head, alternately, three rounds, each on a
# fresh server (memory store), so that a change's cost is read in one run of the same machine.
#
#   cp <old build> /tmp/herald-base; cp target/release/herald /tmp/herald-head; bench/ab.sh
set -u
ulimit -n 20000
out=/tmp/ab; mkdir -p $out; : > $out/results.txt
for round in 1 2 3; do
  for name in base head; do
    bin=/tmp/herald-$name
    $bin serve --store memory --listen 127.0.0.1:18090 --jwt-key abkey > $out/$name-$round.log 2>&1 &
    pid=$!
    for i in $(seq 50); do curl -sf http://127.0.0.1:18090/healthz >/dev/null && break; sleep 0.1; done
    /tmp/herald-head bench fanout --url http://127.0.0.1:18090 --jwt-key abkey --conns 1000 --rate 100 --messages 1000 --size 100 --server-pid $pid --json > $out/$name-$round.json 2>$out/$name-$round.err
    python3 - "$name" "$round" "$out/$name-$round.json" >> $out/results.txt <<'PY'
import json,sys
r=json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
s=r.get("server") or {}
print(sys.argv[1], sys.argv[2], "delivered", r["delivered"], "cpu_us/deliv", s.get("cpu_us_per_delivery"), "x_floor", s.get("x_floor"), "floor", r.get("floor_us"), "p99", r["latency_ms"]["p99"], "bench_cpu/deliv", r.get("bench_cpu_us_per_delivery"))
PY
    kill $pid; wait $pid 2>/dev/null
  done
done
cat $out/results.txt
