#!/usr/bin/env bash
# Installs everything qemu-sink needs to build and test on Debian 12 (bookworm),
# idempotently: QEMU 10 from bookworm-backports (with the D-Bus display module),
# dbus-daemon, the libraries the sink links against, and then the lab
# (scripts/lab/setup.sh). A re-run with nothing to do takes a few seconds.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/apt.sh
source "$here/lib/apt.sh"

ensure_backports

# QEMU 10 (bookworm's 7.2 has no Unix.Map and no Interfaces property); its
# -display dbus lives in ui-dbus.so, shipped by qemu-system-modules-opengl.
apt_install_from bookworm-backports \
    qemu-system-x86 qemu-system-modules-opengl libgbm-dev libgbm1 libegl1 libgles2 \
    libegl-mesa0 mesa-libgallium libgl1-mesa-dri
# jq: scripts/lab/test.sh reads cargo's JSON to find the test executables.
apt_install_from bookworm dbus-daemon pkg-config jq
# seatd and libseat (loaded at run time): `display --seat`, and its lab test;
# systemd-analyze checks the service unit.
apt_install_from bookworm seatd libseat1 systemd
# libvirt from bookworm-backports (11.3, built for QEMU 10): `--domain`
# loads libvirt.so.0 at run time; the libvirt tests start its daemons
# (scripts/libvirtd.sh) and domains of their own.
apt_install_from bookworm-backports libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients

if [[ "${QEMU_SINK_SKIP_LAB_SETUP:-0}" != 1 ]]; then
    "$here/lab/setup.sh"
fi
