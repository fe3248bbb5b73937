#!/usr/bin/env bash
# The README's first command: installs what the demo needs, builds qemu-sink
# and runs `qemu-sink demo`, which starts its own dbus-daemon and QEMU
# (SeaBIOS, no disk), captures the VM's screen to qemu-sink-demo.png and
# stops everything it started. Arguments go to `qemu-sink demo`.
#
#   scripts/demo.sh --display   the main job itself: the demo VM on a monitor
#                               of its own through KMS (run it on a text VT or
#                               a free seat; qemu-sink-demo.png is what the
#                               monitor showed)
#   scripts/demo.sh --lab       the same inside the DRM lab, on vkms, for
#                               machines without a GPU (writeback gives the
#                               picture the virtual monitor showed)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [[ ${1:-} == --lab ]]; then
    shift
    scripts/setup.sh
    cargo build --release -p sink
    # --device vkms: the card of that driver.
    scripts/lab/run.sh target/release/qemu-sink demo --display --device vkms --seconds 40 "$@"
    exit
fi
# The demo needs QEMU and dbus-daemon, not the DRM lab.
QEMU_SINK_SKIP_LAB_SETUP=1 scripts/setup.sh
cargo build --release -p sink
target/release/qemu-sink demo "$@"
