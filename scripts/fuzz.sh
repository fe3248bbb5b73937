#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [TARGET...]: builds the fuzz targets of fuzz/ and
# runs each for SECONDS (600 unless given), one after the other, on the
# corpus committed in fuzz/corpus/TARGET/ (new inputs go to a scratch copy,
# so the tree stays clean). Prints per target: runs, execs/s, crashes.
#
# Engine: libFuzzer (the libfuzzer-sys crate) with LLVM's SanitizerCoverage
# and no sanitizer, which builds on the stable toolchain (the sanitizers need
# nightly). The targets are built with plain cargo and the flags `cargo fuzz
# build --sanitizer none -O` uses (so cargo-fuzz is not needed; with it,
# `cargo fuzz run --sanitizer none -O TARGET` in fuzz/ runs the same thing).
# A crash leaves its input under fuzz/artifacts/TARGET/.
#
# Exit status: 0 when no target crashed; 1 when one did or the build failed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
proj=$(cd "$here/.." && pwd)
seconds=${1:-600}
shift || true

cd "$proj/fuzz"
if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^qemu-sink-fuzz$')
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
coverage=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cllvm-args=-sanitizer-coverage-stack-depth
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0
    --cfg fuzzing
    # One codegen unit: the coverage pass otherwise stops ThinLTO inlining.
    -Ccodegen-units=1
)
# --target keeps these flags off build scripts.
RUSTFLAGS="${coverage[*]}" cargo build --release --target "$triple" \
    --config 'profile.release.debug="line-tables-only"' --bins >&2 || {
    echo "fuzz: the build failed" >&2
    exit 1
}
bin=$proj/fuzz/target/$triple/release

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
printf '%-18s %12s %10s %8s\n' target runs execs/s crashes
for target in "${targets[@]}"; do
    corpus=$work/$target
    found=$work/artifacts/$target
    mkdir -p "$corpus" "$found"
    cp -r "corpus/$target/." "$corpus/" 2>/dev/null || true
    log=$work/$target.log
    rc=0
    "$bin/$target" "$corpus" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$found/" >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    crashes=$(find "$found" -type f | wc -l)
    if ((crashes > 0)); then
        mkdir -p "artifacts/$target"
        cp "$found"/* "artifacts/$target/"
    fi
    printf '%-18s %12s %10s %8s\n' "$target" "${runs:-?}" "${speed:-?}" "$crashes"
    if ((rc != 0 || crashes > 0)); then
        failed=1
        echo "fuzz: $target failed (exit $rc); its log:" >&2
        tail -40 "$log" >&2
    fi
done
exit "$failed"
