#!/usr/bin/env bash
# Benchmarks: each figure on one line beside its reference measured in the
# same run, all of them in bench-results/<date>-<host>.json.
#   scripts/bench.sh           full run (release build, 1080p and 4K), with
#                              2D Update ingest against the qemu-display
#                              crate (bench/qemu-display-baseline)
#   scripts/bench.sh --quick   seconds, small frames, no baseline: proves
#                              every line is produced and the JSON parses
#                              (CI runs this)
# Both end with the lab's figures (KMS direct path on vkms, DMA-BUF
# composition; tests/src/bin/qemu-sink-lab-bench.rs), measured inside one
# lab boot (scripts/lab/run.sh) and merged into the same JSON.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p target
out=target/bench.txt
if [[ ${1:-} == --quick ]]; then
    # The test build's profile: nothing more to compile after the tests.
    cargo run -q -p tests --bin qemu-sink-bench -- --quick | tee "$out"
else
    cargo build -q --release -p tests --bin qemu-sink-bench
    # The baseline: the same 2D Update flood into a listener built on the
    # qemu-display crate, a cargo project of its own (own lock file and
    # target dir, never in the workspace's build). qemu-display links
    # libusbredirhost and libusb.
    # shellcheck source=scripts/lib/apt.sh
    source scripts/lib/apt.sh
    apt_install_from bookworm libusbredirhost-dev libusbredirparser-dev libusb-1.0-0-dev
    cargo build -q --release --manifest-path bench/qemu-display-baseline/Cargo.toml \
        --target-dir target/baseline
    baseline=target/baseline/qemu-display.json
    target/baseline/release/qemu-display-baseline | tee target/baseline/qemu-display.txt
    tail -n1 target/baseline/qemu-display.txt >"$baseline"
    jq -e '.update_ingest_mb_s | length > 0' "$baseline" >/dev/null
    cargo run -q --release -p tests --bin qemu-sink-bench -- --baseline "$baseline" "$@" | tee "$out"
fi
json=$(sed -n 's/^wrote //p' "$out" | tail -1)
jq -e '.figures | length > 0' "$json" >/dev/null

# --- The lab's figures -------------------------------------------------------
if [[ ${1:-} == --quick ]]; then
    profile=debug lab_args=(--quick)
    cargo build -q -p sink -p tests --bins
else
    profile=release
    lab_args=(--plot "$(dirname "$json")/$(basename "$json" .json)-direct-vkms.svg")
    cargo build -q --release -p sink -p tests --bins
fi
lab_json=target/bench-lab.json
rm -f "$lab_json"
if scripts/lab/run.sh "target/$profile/qemu-sink-lab-bench" "${lab_args[@]}" --out "$lab_json"; then
    jq -e 'length > 0' "$lab_json" >/dev/null
    jq --slurpfile lab "$lab_json" '.figures += $lab[0]' "$json" >"$json.tmp"
    mv "$json.tmp" "$json"
else
    status=$?
    echo "bench: the lab's figures failed (status $status)" >&2
    exit "$status"
fi
echo "bench: $(jq '.figures | length' "$json") figures in $json"
