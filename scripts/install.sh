#!/usr/bin/env bash
# scripts/install.sh [--binary PATH] [--prefix DIR] [--destdir DIR]:
# installs qemu-sink on this machine: the binary (built with
# `cargo build --release` unless --binary names one) as PREFIX/bin/qemu-sink
# (PREFIX /usr/local by default) with its man page and bash/zsh/fish
# completions under PREFIX/share, and the systemd units
# qemu-sink-display@.service (a VM by name) and qemu-sink-domain@.service
# (a libvirt domain) in /etc/systemd/system (their ExecStart pointing at
# that binary), with /etc/qemu-sink/ for per-VM settings. With
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
for name in qemu-sink-display@.service qemu-sink-domain@.service; do
    unit=$destdir/etc/systemd/system/$name
    install -D -m 0644 "$proj/packaging/$name" "$unit"
    sed -i "s#/usr/local/bin/qemu-sink#$prefix/bin/qemu-sink#" "$unit"
done
install -d -m 0755 "$destdir/etc/qemu-sink"
# The man page and the shells' completions, made by the binary from its
# own command line.
share=$destdir$prefix/share
generated() { # WHAT FILE: a completion script
    install -d -m 0755 "$(dirname "$2")"
    "$binary" generate "$1" >"$2"
    chmod 0644 "$2"
}
install -d -m 0755 "$share/man/man1"
"$binary" generate man --dir "$share/man/man1"
chmod 0644 "$share/man/man1"/*.1
generated bash "$share/bash-completion/completions/qemu-sink"
generated zsh "$share/zsh/site-functions/_qemu-sink"
generated fish "$share/fish/vendor_completions.d/qemu-sink.fish"
echo "installed $destdir$prefix/bin/qemu-sink, its man page and completions, and the units" \
    "qemu-sink-display@.service and qemu-sink-domain@.service in $destdir/etc/systemd/system"

if [[ -z $destdir && -d /run/systemd/system ]]; then
    systemctl daemon-reload
    echo "enable a VM's monitor with: systemctl enable --now qemu-sink-display@VMNAME"
    echo "(a libvirt domain's: systemctl enable --now qemu-sink-domain@DOMAIN)"
fi
