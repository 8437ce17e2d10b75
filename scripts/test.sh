#!/usr/bin/env bash
# The one entry point for every test tier (README's test command; .ci/run calls it too).
#
#   scripts/test.sh            all tiers
#   scripts/test.sh lint unit  only the named tiers
#
# Tiers: lint (fmt, clippy -D warnings), unit (cargo tests over the whole workspace: unit,
# integration over real sockets, property tests, doc tests), abuse (the hardening review's
# attacks replayed against the built `herald`, asserting memory, latency and timeout bounds:
# crates/herald/tests/abuse.rs, one test at a time), browser (headless Chromium's native
# EventSource against the built `herald`, driven by playwright-core under node --test),
# services (several `herald serve` nodes on a real redis-server, and again on a real nats-server
# with JetStream, each started by the tests on a free loopback port with a temporary data
# directory, and deploy/nginx.conf in front of them: crates/herald/tests/cluster.rs),
# fuzz (a 30 s libFuzzer smoke of each target in fuzz/, on its committed corpus and regressions:
# fuzz/run.sh).
# A tier that needs an external program (node, npm, chromium, redis-server, nats-server, nginx)
# fails the run when the program is missing and CI=true, and is skipped with a notice otherwise.
# The fuzz tier needs a nightly toolchain and cargo-fuzz, which are optional: it is skipped
# with a notice when they are missing, CI or not.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=()
skipped=()

# require PROGRAM TIER: true if PROGRAM is on PATH; else fail (CI) or skip (local) the tier.
require() {
  if command -v "$1" >/dev/null 2>&1; then return 0; fi
  if [ "${CI:-}" = "true" ]; then
    echo "tier $2: FAILED, needs '$1', which is not installed (CI=true: no skipping)" >&2
    failed+=("$2")
  else
    echo "tier $2: skipped, needs '$1' (install it, or run .ci/run which does)" >&2
    skipped+=("$2")
  fi
  return 1
}

run_tier() {
  local tier=$1
  shift
  echo "=== tier $tier: $*" >&2
  if ! "$@"; then failed+=("$tier"); fi
}

tier_lint() {
  cargo fmt --all -- --check &&
    cargo clippy --workspace --all-targets --locked -- -D warnings
}

tier_unit() {
  if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast &&
      cargo test --workspace --locked --doc
  else
    cargo test --workspace --locked --no-fail-fast
  fi
}

tier_browser() {
  cargo build -p herald --locked &&
    cargo build -p herald-hub --examples --locked &&
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) &&
    HERALD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/herald" CHROMIUM="$(command -v chromium)" \
      node --test tests/browser/
}

tier_abuse() {
  # The hardening review's attacks against the built binary; each test loads the machine and
  # measures the hub process, so they run one at a time.
  if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run -p herald --locked --test abuse --run-ignored only --no-fail-fast \
      --test-threads 1
  else
    cargo test -p herald --locked --test abuse -- --ignored --test-threads 1
  fi
}

# require_fuzz: true if `cargo +nightly` and cargo-fuzz work; else skip the fuzz tier, also
# under CI=true (nightly is optional for this project).
require_fuzz() {
  if cargo +nightly --version >/dev/null 2>&1 && cargo +nightly fuzz --version >/dev/null 2>&1; then
    return 0
  fi
  echo "tier fuzz: skipped, needs a nightly toolchain and cargo-fuzz (rustup toolchain install nightly; cargo install --locked cargo-fuzz)" >&2
  skipped+=(fuzz)
  return 1
}

tier_fuzz() {
  local target ok=0
  for target in $(cd fuzz && cargo +nightly fuzz list); do
    echo "--- fuzz $target: 30 s" >&2
    fuzz/run.sh --scratch "$target" -max_total_time=30 || ok=1
  done
  return $ok
}

tier_services() {
  if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run -p herald --locked --test cluster --run-ignored only --no-fail-fast
  else
    cargo test -p herald --locked --test cluster -- --ignored
  fi
}

tiers=("$@")
[ ${#tiers[@]} -gt 0 ] || tiers=(lint unit abuse browser services fuzz)
for tier in "${tiers[@]}"; do
  case "$tier" in
    lint) require cargo lint && run_tier lint tier_lint ;;
    unit) require cargo unit && run_tier unit tier_unit ;;
    abuse) require cargo abuse && run_tier abuse tier_abuse ;;
    browser)
      require node browser && require npm browser && require chromium browser &&
        run_tier browser tier_browser ;;
    services)
      require redis-server services && require nats-server services && require nginx services &&
        run_tier services tier_services ;;
    fuzz) require_fuzz && run_tier fuzz tier_fuzz ;;
    *) echo "unknown tier '$tier' (known: lint unit abuse browser services fuzz)" >&2; exit 2 ;;
  esac
done

[ ${#skipped[@]} -eq 0 ] || echo "skipped tiers: ${skipped[*]}" >&2
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED tiers: ${failed[*]}" >&2
  exit 1
fi
echo "all tiers passed: ${tiers[*]}" >&2
