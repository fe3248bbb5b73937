#!/usr/bin/env bash
# The README's test command (and all that .ci/run does): set-up, build, and
# every test: formatting, clippy, the host tests (real QEMU and dbus-daemon),
# then the lab tests inside one virtme-ng boot (real KMS, udmabuf, EGL).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
started=$SECONDS

scripts/setup.sh

echo "== cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== build"
# Builds the qemu-sink binary too: the end-to-end tests run it as a user would.
cargo build --workspace --all-targets

echo "== host tests"
cargo test --workspace --all-features

echo "== benchmarks (quick: every line produced, not the numbers)"
bash scripts/bench.sh --quick

echo "== fuzz (short: every target builds and runs its corpus and a few seconds more)"
bash scripts/fuzz.sh 5

echo "== lab tests"
bash scripts/lab/test.sh

echo "scripts/test.sh: all green in $((SECONDS - started)) s"
