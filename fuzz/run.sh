#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one after the
# other, from the seed corpora (fuzz/seed.sh), and prints executions and
# coverage per target. A crash, hang (-timeout) or over-allocation
# (-rss_limit_mb, -malloc_limit_mb) stops that target with its input in
# fuzz/artifacts/<target>/; the script then exits 1 after the others ran.
# Usage: fuzz/run.sh SECONDS [TARGET...]
# Builds with the stable toolchain through RUSTC_BOOTSTRAP=1 (cargo-fuzz
# passes nightly-only flags); `cargo install cargo-fuzz` first.
set -uo pipefail
cd "$(dirname "$0")" || exit 2
secs=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
export RUSTC_BOOTSTRAP=1
# No sanitizer: the workspace forbids unsafe code; debug assertions (and
# overflow checks) stay on.
build=(cargo fuzz build -s none)
"${build[@]}" || exit 2
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo fuzz list)
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  cargo fuzz run -s none "$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -max_len=1048576 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1)
  printf '%-20s exit %d  %s execs  %s  %s\n' "$t" "$rc" "${execs:-?}" "${cov:-cov: ?}" "${ft:-ft: ?}"
  if ((rc != 0)); then
    failed+=("$t")
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -5 | sed 's/^/    /'
  fi
  rm -f "$log"
done
((${#failed[@]} == 0)) || { echo "failed: ${failed[*]}"; exit 1; }
