#!/usr/bin/env bash
# scripts/soak.sh: the soak of `qemu-sink display` in the lab (not in CI in
# this form; the test command runs the same tests short). Runs the lab tests
# of tests/tests/lab_soak.rs with full counts and prints their figures as a
# table:
#
#   - SOAK_FRAMES (default 100000) full 640x480 frames each of 2D `Update`,
#     `Unix.Map` and udmabuf DMA-BUF from the fake QEMU, as fast as the sink
#     takes them, into one `qemu-sink display` on vkms;
#   - SOAK_CYCLES (default 50) cycles of a real QEMU (2D and gl=on in turn)
#     SIGKILLed and started again under `display`, re-lit each time;
#
# with the sink's fds, threads and RSS sampled before, during and after. A
# test fails when fds or threads end anywhere but at the warmed-up baseline,
# or RSS grew more than 5 % from it. Exit status: scripts/lab/test.sh's.
#
# Each flood has a sink of its own (one test each), and scripts/lab/test.sh
# runs the four tests in its two lanes. Time: the lab is TCG-emulated; at
# the rates seen there (2D Update about 22 frames/s, Unix.Map 45/s, DMA-BUF
# 50/s, one restart about 5 s) the default counts take about 2.5 hours of
# lab time, about 80 minutes in two lanes (the 2D flood alone in one).
# LAB_TIMEOUT (per lane) defaults to 6 hours.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
proj=$(cd "$here/.." && pwd)
cd "$proj"

export SOAK_FRAMES=${SOAK_FRAMES:-100000}
export SOAK_CYCLES=${SOAK_CYCLES:-50}
export LAB_TIMEOUT=${LAB_TIMEOUT:-21600}

# scripts/lab/test.sh builds the tests but not the binary they run.
cargo build -p sink

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
bash "$here/lab/test.sh" soak_display_ 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

echo
echo "Soak: SOAK_FRAMES=$SOAK_FRAMES SOAK_CYCLES=$SOAK_CYCLES ($(date -u +%Y-%m-%d))"
printf '| %-16s | %12s | %8s | %7s | %-8s | %-7s | %-30s | %7s | %-7s |\n' \
    scenario count seconds "rate/s" "fds" threads "RSS KiB base → end" growth checked
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------------ -------------- ---------- --------- \
    ---------- --------- -------------------------------- --------- ---------
# soak-figure: scenario=S frames|cycles=N seconds=T rate=R/s baseline_after=B
#   fds=a/b/c threads=a/b/c rss_kib=a/b/c growth=G% peak_kib=P rss_checked=yes|no
# (lines from a lane come prefixed with its number: "[2] soak-figure: …")
sed -n 's/^\(\[[0-9]*\] \)\{0,1\}soak-figure: //p' "$log" | while read -r fields; do
    declare -A f=()
    for kv in $fields; do f[${kv%%=*}]=${kv#*=}; done
    count=${f[frames]:-${f[cycles]:-?}}
    unit=frames
    [[ -n ${f[cycles]:-} ]] && unit=cycles
    IFS=/ read -r _ fb fe <<<"${f[fds]}"
    IFS=/ read -r _ tb te <<<"${f[threads]}"
    IFS=/ read -r _ rb re <<<"${f[rss_kib]}"
    printf '| %-16s | %12s | %8s | %7s | %-8s | %-7s | %-30s | %7s | %-7s |\n' \
        "${f[scenario]}" "$count $unit" "${f[seconds]}" "${f[rate]%/s}" \
        "$fb → $fe" "$tb → $te" "$rb → $re (peak ${f[peak_kib]})" "${f[growth]}" "${f[rss_checked]}"
    unset f
done
exit "$status"
