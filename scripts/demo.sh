#!/usr/bin/env bash
# The README's first command: installs what the demo needs, builds qemu-sink
# and runs `qemu-sink demo`, which starts its own dbus-daemon and QEMU
# (SeaBIOS, no disk), captures the VM's screen to qemu-sink-demo.png and
# stops everything it started. Arguments go to `qemu-sink demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The demo needs QEMU and dbus-daemon, not the DRM lab.
QEMU_SINK_SKIP_LAB_SETUP=1 scripts/setup.sh
cargo build --release -p sink
target/release/qemu-sink demo "$@"
