#!/usr/bin/env bash
# The one entry point for every test tier (README's test command; .ci/run calls it too).
#
#   scripts/test.sh            all tiers
#   scripts/test.sh lint unit  only the named tiers
#
# Tiers: lint (fmt, clippy -D warnings), unit (cargo tests over the whole workspace: unit,
# integration over real sockets, property tests, doc tests). Tiers that need an external program
# (services: redis-server/nats-server; browser: chromium) are added here as they appear: with
# CI=true a missing program fails the run, otherwise the tier is skipped with a notice.
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

tiers=("$@")
[ ${#tiers[@]} -gt 0 ] || tiers=(lint unit)
for tier in "${tiers[@]}"; do
  case "$tier" in
    lint) require cargo lint && run_tier lint tier_lint ;;
    unit) require cargo unit && run_tier unit tier_unit ;;
    *) echo "unknown tier '$tier' (known: lint unit)" >&2; exit 2 ;;
  esac
done

[ ${#skipped[@]} -eq 0 ] || echo "skipped tiers: ${skipped[*]}" >&2
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED tiers: ${failed[*]}" >&2
  exit 1
fi
echo "all tiers passed: ${tiers[*]}" >&2
