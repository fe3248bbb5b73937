#!/usr/bin/env bash
# scripts/libvirtd.sh start|stop: libvirt's daemons for the libvirt tests
# (tests/tests/libvirt_domain.rs), on a machine without systemd as PID 1,
# as root, for qemu:///system. Debian's libvirt 11.3 (bookworm-backports,
# installed by scripts/setup.sh) has the monolithic libvirtd; it needs
# virtlogd running first (else a domain's start fails connecting to
# /run/libvirt/virtlogd-sock). Default configuration: QEMU runs as
# libvirt-qemu.
#
#   start: idempotent; a daemon whose socket answers is left alone, stale
#          pid files and sockets are cleaned first. Waits until
#          qemu:///system answers (the first start on a machine probes
#          QEMU's capabilities: about 8 s; inside the lab, where QEMU is
#          nested TCG and every boot is a first start, about 25 s).
#   stop:  stops both by their pid files (running domains are left to the
#          caller: libvirtd re-attaches to them at its next start).
# Logs: /var/log/libvirt/{virtlogd,libvirtd}.log
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "libvirtd.sh: must be root" >&2; exit 1; }

# live PIDFILE NAME: the pid in PIDFILE is a running process named NAME.
live() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ -r /proc/$pid/comm && $(</proc/$pid/comm) == "$2" ]]
}

# wait_for SECONDS CMD...: retries CMD every 0.1 s.
wait_for() {
    local tries=$(($1 * 10)) i
    shift
    for ((i = 0; i < tries; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

answers() { virsh -q -c qemu:///system version; }

start() {
    mkdir -p /run/libvirt /var/log/libvirt
    # Tests start it side by side: one start at a time (the daemons do not
    # inherit the lock's fd, else they would hold it for ever).
    exec 9>/run/qemu-sink-libvirtd.lock
    flock 9
    if ! { live /run/virtlogd.pid virtlogd && [[ -S /run/libvirt/virtlogd-sock ]]; }; then
        rm -f /run/virtlogd.pid /run/libvirt/virtlogd-sock /run/libvirt/virtlogd-admin-sock
        LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/virtlogd.log" virtlogd --daemon 9>&-
        wait_for 10 test -S /run/libvirt/virtlogd-sock ||
            { echo "libvirtd.sh: virtlogd did not start" >&2; exit 1; }
    fi
    if live /run/libvirtd.pid libvirtd && answers >/dev/null 2>&1; then
        return 0
    fi
    if live /run/libvirtd.pid libvirtd; then
        # Still probing after a start a moment ago: give it the time.
        wait_for 180 answers && return 0
        echo "libvirtd.sh: libvirtd (pid $(</run/libvirtd.pid)) does not answer" >&2
        exit 1
    fi
    rm -f /run/libvirtd.pid /run/libvirt/libvirt-sock /run/libvirt/libvirt-sock-ro \
        /run/libvirt/libvirt-admin-sock
    LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/libvirtd.log" libvirtd --daemon 9>&-
    wait_for 180 answers ||
        { echo "libvirtd.sh: qemu:///system did not answer within 180 s" >&2; exit 1; }
}

stop_one() {
    local pid i
    live "$1" "$2" || { rm -f "$1"; return 0; }
    pid=$(<"$1")
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do
        [[ -e /proc/$pid ]] || break
        sleep 0.1
    done
    rm -f "$1"
}

case ${1:-} in
start) start ;;
stop) stop_one /run/libvirtd.pid libvirtd && stop_one /run/virtlogd.pid virtlogd ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
