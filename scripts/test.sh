#!/usr/bin/env bash
# Every check CI runs: formatting, lints, unit, property and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The cluster tests start nats-server; pip may have put it off the PATH.
if ! command -v nats-server >/dev/null 2>&1; then
  for d in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
           "$(python3 -m site --user-base)/bin"; do
    if [ -x "$d/nats-server" ]; then export NATS_SERVER="$d/nats-server"; fi
  done
fi

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
