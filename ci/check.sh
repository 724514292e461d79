#!/usr/bin/env bash
# The checks every change must pass: formatting, lints, tests. Run from the
# repository root; .ci/run calls this after installing what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
