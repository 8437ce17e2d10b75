#!/usr/bin/env bash
# Runs one fuzz target with its libFuzzer flags, on its corpus and its regressions.
#
#   fuzz/run.sh TARGET [LIBFUZZER_FLAG...]            new inputs are added to fuzz/corpus/TARGET
#   fuzz/run.sh --scratch TARGET [LIBFUZZER_FLAG...]  on a temporary copy of the corpus (the
#                                                     test tier's smoke: the tree stays clean)
#
# e.g. fuzz/run.sh selector -max_total_time=900. Needs nightly and cargo-fuzz (fuzz/README.md).
# A finding stops the run and lands in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"

scratch=false
if [ "${1:-}" = "--scratch" ]; then
  scratch=true
  shift
fi
target=${1:?usage: fuzz/run.sh [--scratch] TARGET [LIBFUZZER_FLAG...]}
shift

# The flags of each target (fuzz/README.md says why). -timeout: no single input may run 10 s.
flags=(-max_len=8192 -timeout=10)
case "$target" in
  decoder | head) ;;
  # Memory: a single allocation over 128 MiB, or the process over 1 GiB, is a finding (the
  # target also asserts each compile + match peaks under 64 MiB); -len_control=0: blow-ups
  # need long selectors and topics, so do not make the fuzzer work its way up to them.
  selector | url_pattern) flags+=(-rss_limit_mb=1024 -malloc_limit_mb=128 -len_control=0) ;;
  # One hub lives across executions and keeps what was published: that is state, not a leak.
  token | publish_form) flags+=(-detect_leaks=0) ;;
  *) echo "unknown fuzz target '$target' (known: decoder head selector url_pattern token publish_form)" >&2; exit 2 ;;
esac

corpus=corpus/$target
mkdir -p "$corpus" "regressions/$target"
if $scratch; then
  corpus=$(mktemp -d)
  trap 'rm -rf "$corpus"' EXIT
  cp -R "corpus/$target/." "$corpus/"
fi
# HERALD_FUZZ_SANITIZER=none drops AddressSanitizer (2 to 4 times more executions per second;
# the crates under test forbid unsafe code, and panics, debug assertions, the time and memory
# bounds are still findings). Default: address, cargo-fuzz's own default.
sanitizer=${HERALD_FUZZ_SANITIZER:-address}
# The regressions directory is read, never written: libFuzzer adds new inputs to the first.
cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "$corpus" "regressions/$target" -- "${flags[@]}" "$@"
