#!/usr/bin/env bash
# Fuzzing as part of CI (fuzz/README.md): builds the cargo-fuzz targets,
# seeds their corpora from real files and runs every target for
# FUZZ_SECONDS (default 30), two at a time on the CI's two cores. A crash,
# hang or over-allocation fails the run with the input in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
cargo build --quiet --locked -p treectl
fuzz/seed.sh
FUZZ_JOBS=${FUZZ_JOBS:-2} fuzz/run.sh "${FUZZ_SECONDS:-30}"
