#!/usr/bin/env bash
# The checks every change must pass: formatting, lints, tests. Run from the
# repository root; .ci/run calls this after installing what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

# As the CI gate, no test may skip for a missing tool or corpus: it fails
# instead (treectl_e2e::require). A developer's run without CI=true keeps
# the skips, each printed with its reason.
if [[ "${CI:-}" == true ]]; then
  export TREECTL_NO_SKIP=1
fi

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
