#!/usr/bin/env bash
# Fan-out across a cluster on this machine: NODES `herald serve` nodes on one redis-server (or
# nats-server), `herald bench fanout` with its subscribers and publishes spread over the nodes.
#
#   bench/cluster.sh [--engine redis|nats] NODES -- FANOUT_ARGS...
#   bench/cluster.sh 3 -- --conns 1000 --rate 100 --messages 1000 --size 100
#
# Env: HERALD_BIN (default target/release/herald). The server CPU reported is the sum over the
# nodes and the engine (all given as --server-pid). Prints the bench's table; add --json to
# FANOUT_ARGS for JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=redis
if [ "${1:-}" = "--engine" ]; then engine=$2; shift 2; fi
nodes=${1:?usage: bench/cluster.sh [--engine redis|nats] NODES -- FANOUT_ARGS...}
shift
[ "${1:-}" = "--" ] && shift
bin=${HERALD_BIN:-target/release/herald}
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p herald (or set HERALD_BIN)" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"

run_dir=$(mktemp -d)
pids=()
cleanup() {
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
engine_port=$(free_port)
case "$engine" in
  redis)
    command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 2; }
    redis-server --port "$engine_port" --bind 127.0.0.1 --dir "$run_dir" --appendonly yes \
      --appendfsync everysec --save '' >"$run_dir/engine.log" 2>&1 &
    store="redis://127.0.0.1:$engine_port/0?stream=bench" ;;
  nats)
    command -v nats-server >/dev/null || { echo "needs nats-server (apt-get install nats-server)" >&2; exit 2; }
    nats-server -js -a 127.0.0.1 -p "$engine_port" -sd "$run_dir" >"$run_dir/engine.log" 2>&1 &
    store="nats://127.0.0.1:$engine_port?stream=BENCH" ;;
  *) echo "unknown engine $engine (redis or nats)" >&2; exit 2 ;;
esac
engine_pid=$!
pids+=("$engine_pid")
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$engine_port") 2>/dev/null && break; sleep 0.1; done

urls=()
observe=(--server-pid "$engine_pid")
for i in $(seq "$nodes"); do
  port=$(free_port)
  "$bin" serve --store "$store" --jwt-key bench-key --listen "127.0.0.1:$port" \
    >"$run_dir/node$i.log" 2>&1 &
  pids+=($!)
  urls+=(--url "http://127.0.0.1:$port")
  observe+=(--server-pid "$!")
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
echo "cluster: $nodes node(s) on $engine ($store)" >&2
"$bin" bench fanout "${urls[@]}" --jwt-key bench-key "${observe[@]}" "$@"
