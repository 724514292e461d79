#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one after the
# other, from the seed corpora (fuzz/seed.sh), and prints executions and
# coverage per target. A crash, hang (-timeout) or over-allocation
# (-rss_limit_mb, -malloc_limit_mb) stops that target with its input in
# fuzz/artifacts/<target>/; the script then exits 1 after the others ran.
# Usage: [FUZZ_JOBS=N] fuzz/run.sh SECONDS [TARGET...]
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
# Targets run FUZZ_JOBS at a time (default 1: each has a core to itself).
jobs=${FUZZ_JOBS:-1}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
run_one() {
  local t=$1 log rc execs cov ft
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$results/$t.log
  cargo fuzz run -s none "$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -max_len=1048576 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1)
  {
    printf '%-20s exit %d  %s execs  %s  %s\n' "$t" "$rc" "${execs:-?}" "${cov:-cov: ?}" "${ft:-ft: ?}"
    if ((rc != 0)); then
      grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -5 | sed 's/^/    /'
    fi
  } >"$results/$t.out"
  echo "$rc" >"$results/$t.rc"
}
running=0
for t in "${targets[@]}"; do
  if ((running >= jobs)); then
    wait -n
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait
failed=()
for t in "${targets[@]}"; do
  cat "$results/$t.out"
  [[ $(cat "$results/$t.rc") == 0 ]] || failed+=("$t")
done
((${#failed[@]} == 0)) || { echo "failed: ${failed[*]}"; exit 1; }
