#!/usr/bin/env bash
# Every check CI runs: formatting, lints, unit, property and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

cargo fmt --all --check
# The browser console's pure modules (wire codec, jitter buffer, floor,
# receipts, drills), with Node's own test runner.
node --test gateway/console/test/
cargo clippy --workspace --all-targets --quiet -- -D warnings
# End-to-end tests start the real binaries: build them first.
cargo build --workspace --bins --quiet
if cargo nextest --version >/dev/null 2>&1; then
  # Doc tests first: nextest does not run them, and its summary should close the run.
  cargo test --workspace --doc --quiet
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
