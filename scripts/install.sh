#!/usr/bin/env bash
# scripts/install.sh [--binary PATH] [--prefix DIR] [--destdir DIR]:
# installs qemu-sink on this machine: the binary (built with
# `cargo build --release` unless --binary names one) as PREFIX/bin/qemu-sink
# (PREFIX /usr/local by default), and the systemd unit
# qemu-sink-display@.service in /etc/systemd/system (its ExecStart pointing
# at that binary), with /etc/qemu-sink/ for per-VM settings. With
# --destdir, everything goes under that directory instead of / (for
# packaging, and for the tests); without it, systemd reloads its units.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
proj=$(cd "$here/.." && pwd)

binary= prefix=/usr/local destdir=
while (($#)); do
    case $1 in
    --binary) binary=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --destdir) destdir=$2; shift 2 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [[ -z $binary ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    (cd "$proj" && cargo build --release -p sink)
    binary=$proj/target/release/qemu-sink
fi
[[ -x $binary ]] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }

install -D -m 0755 "$binary" "$destdir$prefix/bin/qemu-sink"
unit=$destdir/etc/systemd/system/qemu-sink-display@.service
install -D -m 0644 "$proj/packaging/qemu-sink-display@.service" "$unit"
sed -i "s#/usr/local/bin/qemu-sink#$prefix/bin/qemu-sink#" "$unit"
install -d -m 0755 "$destdir/etc/qemu-sink"
echo "installed $destdir$prefix/bin/qemu-sink and $unit"

if [[ -z $destdir && -d /run/systemd/system ]]; then
    systemctl daemon-reload
    echo "enable a VM's monitor with: systemctl enable --now qemu-sink-display@VMNAME"
fi
