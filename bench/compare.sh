#!/usr/bin/env bash
# Herald versus nginx + nchan, side by side, on this machine. See bench/README.md.
#
#   bench/compare.sh [--quick] [--pin] [--tls]
#
#   --quick   smoke run: idle 1000 and one short fan-out (1000 subscribers x 100/s, 100 B)
#   --pin     pin the server under test to CPU 0 and the bench to CPU 1 (taskset), so each
#             server gets one core, as nginx with one worker has
#   --tls     both servers over HTTPS with the same certificate (P-256, made with openssl),
#             TLS 1.3; the bench's subscribers speak HTTP/1.1 over TLS, one connection each,
#             plus an idle and a fan-out scenario over HTTP/2 (100 subscription streams per
#             connection)
#
# Environment:
#   HERALD_BIN   herald binary to use (skips `cargo build --release -p herald`)
#   NGINX_BIN    nginx binary (default: the one on PATH, else /usr/sbin/nginx)
#   RUN_DIR      where logs, configs and results go (default: a new mktemp dir)
#
# Each scenario runs against herald, then against nchan, never both at once, each on a freshly
# started server process (so memory figures start from a fresh process and no run inherits
# another's channels, buffers or allocator state). The results: $RUN_DIR/results.jsonl (one
# bench --json object per line, with "scenario" added) and $RUN_DIR/results.md (the table).
set -euo pipefail

QUICK=0
PIN=0
TLS=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --pin) PIN=1 ;;
        --tls) TLS=1 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"
cd "$REPO_ROOT"

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- nginx + nchan -------------------------------------------------------------------------
NCHAN_SO=/usr/lib/nginx/modules/ngx_nchan_module.so
find_nginx() {
    if [[ -n "${NGINX_BIN:-}" ]]; then echo "$NGINX_BIN"; return; fi
    command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true
}
NGINX="$(find_nginx)"
if [[ -z "$NGINX" || ! -f "$NCHAN_SO" ]]; then
    log "installing nginx and libnginx-mod-nchan (apt-get)"
    SUDO=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "not root and no sudo: install nginx and libnginx-mod-nchan"
        SUDO=(sudo)
    fi
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends nginx libnginx-mod-nchan >&2
    # Debian's package may start a system nginx on port 80; this script runs its own.
    if command -v service >/dev/null; then "${SUDO[@]}" service nginx stop >/dev/null 2>&1 || true; fi
    NGINX="$(find_nginx)"
fi
[[ -n "$NGINX" && -x "$NGINX" ]] || die "no nginx binary (${NGINX:-none found}); set NGINX_BIN or install nginx"
[[ -f "$NCHAN_SO" ]] || die "$NCHAN_SO not found (libnginx-mod-nchan)"

# --- herald --------------------------------------------------------------------------------
if [[ -n "${HERALD_BIN:-}" ]]; then
    HERALD="$HERALD_BIN"
else
    log "building herald (cargo build --release -p herald)"
    cargo build --release -p herald >&2
    HERALD="${CARGO_TARGET_DIR:-target}/release/herald"
fi
[[ -x "$HERALD" ]] || die "herald binary $HERALD is not executable"
HERALD="$(cd "$(dirname "$HERALD")" && pwd)/$(basename "$HERALD")"

# --- run dir, limits, ports ----------------------------------------------------------------
ulimit -n "$(ulimit -Hn)"
NOFILE="$(ulimit -n)"
RUN_DIR="${RUN_DIR:-$(mktemp -d -t herald-compare.XXXXXX)}"
mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
# nginx started as root runs its worker as `nobody`, which must reach its temp dirs in here.
chmod 755 "$RUN_DIR"
RESULTS="$RUN_DIR/results.jsonl"
: >"$RESULTS"
log "run dir: $RUN_DIR (open files limit $NOFILE)"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
HERALD_PORT="$(free_port)"
NCHAN_PORT="$(free_port)"
while [[ "$NCHAN_PORT" == "$HERALD_PORT" ]]; do NCHAN_PORT="$(free_port)"; done
JWT_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
SCHEME=http
HERALD_TLS=()
NGINX_SSL=""
NGINX_TLS=""
if [[ "$TLS" == 1 ]]; then
    command -v openssl >/dev/null || die "--tls needs openssl"
    SCHEME=https
    mkdir -p "$RUN_DIR/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$RUN_DIR/tls/key.pem" -out "$RUN_DIR/tls/cert.pem" 2>/dev/null \
        || die "openssl could not make a certificate"
    chmod 644 "$RUN_DIR/tls/key.pem"
    HERALD_TLS=(--tls-cert "$RUN_DIR/tls/cert.pem" --tls-key "$RUN_DIR/tls/key.pem")
    NGINX_SSL=" ssl http2"
    NGINX_TLS="ssl_certificate $RUN_DIR/tls/cert.pem; ssl_certificate_key $RUN_DIR/tls/key.pem; ssl_protocols TLSv1.3; ssl_session_cache off;"
fi
HERALD_URL="$SCHEME://127.0.0.1:$HERALD_PORT"
NCHAN_URL="$SCHEME://127.0.0.1:$NCHAN_PORT"

SERVER_CPU=()
BENCH_CPU=()
if [[ "$PIN" == 1 ]]; then
    command -v taskset >/dev/null || die "--pin needs taskset (util-linux)"
    [[ "$(nproc)" -ge 2 ]] || die "--pin needs 2 CPUs"
    SERVER_CPU=(taskset -c 0)
    BENCH_CPU=(taskset -c 1)
fi

NGINX_DIR="$RUN_DIR/nginx"
mkdir -p "$NGINX_DIR"
chmod 755 "$NGINX_DIR"
sed -e "s|@PORT@|$NCHAN_PORT|g" -e "s|@RUNDIR@|$NGINX_DIR|g" -e "s|@SSL@|$NGINX_SSL|g" \
    -e "s|# @TLS@|$NGINX_TLS|g" "$BENCH_DIR/nchan/nginx.conf" >"$NGINX_DIR/nginx.conf"
"$NGINX" -t -q -p "$NGINX_DIR/" -e "$NGINX_DIR/error.log" -c "$NGINX_DIR/nginx.conf" \
    || die "nginx rejects $NGINX_DIR/nginx.conf"

# --- starting and stopping the servers ----------------------------------------------------
SERVER_PID=""     # the running server (herald serve, or nginx's master); at most one at a time
SERVER_PIDS=()    # the PIDs the bench observes
SERVER_NAME=""

stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    local pid="$SERVER_PID" children
    children="$(pgrep -P "$pid" 2>/dev/null || true)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$SERVER_NAME (pid $pid) ignored SIGTERM for 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # nginx workers exit with their master; make sure of it.
    for child in $children; do kill -KILL "$child" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
    SERVER_PID=""
    SERVER_PIDS=()
    SERVER_NAME=""
}
BENCH_PID=""      # the bench client while it runs
on_exit() {
    if [[ -n "$BENCH_PID" ]]; then kill -TERM "$BENCH_PID" 2>/dev/null || true; fi
    stop_server
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_http URL PID: until URL answers 200, while PID lives (10 s at most).
wait_http() {
    local url="$1" pid="$2"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        if curl -kfs -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    return 1
}

start_herald() {
    local logf="$RUN_DIR/herald-$1.log"
    # HERALD_CONFIG would add a config file's settings to the flags below.
    env -u HERALD_CONFIG "${SERVER_CPU[@]}" "$HERALD" serve --store memory \
        --listen "127.0.0.1:$HERALD_PORT" --jwt-key "$JWT_KEY" "${HERALD_TLS[@]}" >"$logf" 2>&1 &
    SERVER_PID=$!
    SERVER_NAME=herald
    SERVER_PIDS=("$SERVER_PID")
    wait_http "$HERALD_URL/healthz" "$SERVER_PID" || { tail -20 "$logf" >&2; die "herald did not start"; }
}

start_nchan() {
    local logf="$NGINX_DIR/stdout-$1.log" workers=""
    rm -f "$NGINX_DIR/nginx.pid"
    "${SERVER_CPU[@]}" "$NGINX" -p "$NGINX_DIR/" -e "$NGINX_DIR/error.log" \
        -c "$NGINX_DIR/nginx.conf" >"$logf" 2>&1 &
    SERVER_PID=$!
    SERVER_NAME=nchan
    wait_http "$NCHAN_URL/health" "$SERVER_PID" \
        || { tail -20 "$logf" "$NGINX_DIR/error.log" >&2; die "nginx did not start"; }
    for _ in $(seq 1 50); do
        workers="$(pgrep -P "$SERVER_PID" || true)"
        [[ -n "$workers" ]] && break
        sleep 0.1
    done
    [[ -n "$workers" ]] || die "nginx has no worker process"
    # shellcheck disable=SC2206
    SERVER_PIDS=("$SERVER_PID" $workers)
}

# --- running one scenario ------------------------------------------------------------------
# run_one SCENARIO TARGET MODE ARGS...: a fresh server, the bench, the server stopped; the bench's
# JSON (its last stdout line) goes to results.jsonl with "scenario" added.
run_one() {
    local scenario="$1" target="$2" mode="$3"
    shift 3
    local slug out err url pid_args=() auth=() rc=0
    slug="$(echo "$scenario-$target" | tr -c 'a-zA-Z0-9\n' '_')"
    out="$RUN_DIR/$slug.out"
    err="$RUN_DIR/$slug.err"
    case "$target" in
        herald) start_herald "$slug"; url="$HERALD_URL"; auth=(--jwt-key "$JWT_KEY") ;;
        nchan) start_nchan "$slug"; url="$NCHAN_URL" ;;
    esac
    for pid in "${SERVER_PIDS[@]}"; do pid_args+=(--server-pid "$pid"); done
    log "$scenario: $target (pids ${SERVER_PIDS[*]})"
    # In the background and waited for, so that a signal to this script is acted on at once.
    "${BENCH_CPU[@]}" "$HERALD" bench "$mode" --target "$target" --url "$url" "${auth[@]}" \
        "${pid_args[@]}" "$@" --json >"$out" 2>"$err" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    stop_server
    python3 - "$scenario" "$target" "$mode" "$rc" "$out" "$err" >>"$RESULTS" <<'EOF'
import json, sys
scenario, target, mode, rc, out, err = sys.argv[1:]
obj = None
lines = [l for l in open(out, errors="replace").read().splitlines() if l.strip()]
if lines:
    try:
        obj = json.loads(lines[-1])
    except ValueError:
        pass
if not isinstance(obj, dict):
    tail = open(err, errors="replace").read().strip().splitlines()[-3:]
    obj = {"mode": mode, "target": target, "error": f"exit {rc}: " + " | ".join(tail)}
elif rc != "0":
    obj["error"] = f"exit {rc}"
obj["scenario"] = scenario
obj.setdefault("target", target)
print(json.dumps(obj))
EOF
    if [[ "$rc" != 0 ]]; then log "$scenario: $target bench exited $rc (see $err)"; fi
}

# both SCENARIO MODE ARGS...: herald, then nchan.
both() {
    local scenario="$1" mode="$2"
    shift 2
    run_one "$scenario" herald "$mode" "$@"
    run_one "$scenario" nchan "$mode" "$@"
}

# --- the comparison ------------------------------------------------------------------------
log "checking that both servers start and answer"
start_herald preflight; stop_server
start_nchan preflight; stop_server

log "measuring the floor (herald bench floor)"
FLOOR_ARGS=()
if "${BENCH_CPU[@]}" "$HERALD" bench floor --json >"$RUN_DIR/floor.out" 2>"$RUN_DIR/floor.err"; then
    tail -n 1 "$RUN_DIR/floor.out" >"$RUN_DIR/floor.json"
    FLOOR_US="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cpu_us_per_write"])' \
        "$RUN_DIR/floor.json" 2>/dev/null || true)"
    if [[ -n "$FLOOR_US" ]]; then
        log "floor: $FLOOR_US CPU-us per write"
        # Not passed to fanout: each fanout run measures the floor itself with as many sockets
        # and as large writes as it delivers to, since the kernel's cost per write grows with
        # the number of sockets (5 us at 1,000, 7.5 us at 9,000 on this machine).
    fi
else
    log "herald bench floor failed (see $RUN_DIR/floor.err)"
fi

if [[ "$TLS" == 1 ]]; then
    # HTTP/2: 100 subscription streams per connection, as a page's EventSources share one.
    both "idle 1000 h2 x100/conn" idle --conns 1000 --h2-streams 100 --hold 5
    both "fanout 1000x100/s 100B h2 x100/conn" fanout --conns 1000 --rate 100 \
        --messages "$([[ "$QUICK" == 1 ]] && echo 200 || echo 1000)" --size 100 --h2-streams 100 \
        "${FLOOR_ARGS[@]}"
fi
if [[ "$QUICK" == 1 ]]; then
    both "idle 1000" idle --conns 1000 --hold 5
    both "fanout 1000x100/s 100B" fanout --conns 1000 --rate 100 --messages 200 --size 100 "${FLOOR_ARGS[@]}"
else
    for n in 1000 10000 18000; do
        both "idle $n" idle --conns "$n" --hold 5
    done
    for size in 100 1000; do
        both "fanout 1000x100/s ${size}B" fanout --conns 1000 --rate 100 --messages 1000 \
            --size "$size" "${FLOOR_ARGS[@]}"
        both "fanout 10000x10/s ${size}B" fanout --conns 10000 --rate 10 --messages 100 \
            --size "$size" "${FLOOR_ARGS[@]}"
    done
fi

# --- the table -----------------------------------------------------------------------------
{
    echo "herald: $("$HERALD" --version 2>/dev/null || echo '?')"
    echo "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), nchan: $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
    echo "machine: $(nproc) CPUs, $(uname -sr), open files $NOFILE, pinned: $([[ $PIN == 1 ]] && echo 'server CPU 0, bench CPU 1' || echo no), transport: $([[ $TLS == 1 ]] && echo 'TLS 1.3 (P-256 certificate), HTTP/1.1 subscribers' || echo 'plaintext HTTP/1.1')"
} >"$RUN_DIR/meta.txt"
python3 "$BENCH_DIR/report.py" --results "$RESULTS" --floor "$RUN_DIR/floor.json" \
    --meta "$RUN_DIR/meta.txt" --markdown "$RUN_DIR/results.md"
log "results: $RUN_DIR/results.md (raw: $RESULTS)"
