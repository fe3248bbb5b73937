#!/usr/bin/env bash
# Benchmarks: each figure on one line beside its reference measured in the
# same run, all of them in bench-results/<date>-<host>.json.
#   scripts/bench.sh           full run (release build, 1080p and 4K)
#   scripts/bench.sh --quick   seconds, small frames: proves every line is
#                              produced and the JSON parses (CI runs this)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p target
out=target/bench.txt
if [[ ${1:-} == --quick ]]; then
    # The test build's profile: nothing more to compile after the tests.
    cargo run -q -p tests --bin qemu-sink-bench -- --quick | tee "$out"
else
    cargo run -q --release -p tests --bin qemu-sink-bench -- "$@" | tee "$out"
fi
json=$(sed -n 's/^wrote //p' "$out" | tail -1)
jq -e '.figures | length > 0' "$json" >/dev/null
echo "bench: $(jq '.figures | length' "$json") figures in $json"
