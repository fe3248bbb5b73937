# Shared apt/dpkg helpers for the set-up scripts (sourced, not run).

# Adds Debian's bookworm-backports suite with the same URIs and Signed-By as
# the existing bookworm stanza, once. Refreshes the package lists only when the
# suite is new or its lists are missing: apt_install_from refreshes them anyway
# before it installs anything, so a re-run with nothing to do stays offline.
ensure_backports() {
    local list=/etc/apt/sources.list.d/bookworm-backports.sources
    if [[ ! -f $list ]]; then
        local src=/etc/apt/sources.list.d/debian.sources uri keyring
        uri=$(awk '/^URIs:/ {print $2; exit}' "$src")
        keyring=$(awk '/^Signed-By:/ {print $2; exit}' "$src")
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
            "${uri:-http://deb.debian.org/debian}" "${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}" >"$list"
        APT_UPDATED=0
    fi
    if [[ ${APT_UPDATED:-0} != 1 ]] && ! compgen -G '/var/lib/apt/lists/*bookworm-backports_main_binary-*_Packages*' >/dev/null; then
        APT_UPDATED=0
        apt_update_once
    fi
}

# Waits (up to 10 min) while another apt/dpkg run holds one of its locks:
# scripts/setup.sh and scripts/lab/setup.sh may well run at the same time.
# apt-get's own DPkg::Lock::Timeout covers the dpkg lock only, not the lists.
apt_wait_locks() {
    command -v fuser >/dev/null || return 0
    local locks=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock)
    local waited=0
    while fuser "${locks[@]}" >/dev/null 2>&1; do
        ((waited)) || echo "setup: waiting for another apt/dpkg run to release its lock"
        if ((waited >= 600)); then
            echo "setup: apt/dpkg still locked after ${waited} s" >&2
            return 1
        fi
        sleep 2
        ((waited += 2))
    done
}

# Exported so that a set-up script run by another one does not update again.
apt_update_once() {
    if [[ ${APT_UPDATED:-0} != 1 ]]; then
        apt_wait_locks
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        export APT_UPDATED=1
    fi
}

# apt_install_from SUITE PKG[=VERSION]...: installs the packages that are
# missing (or not at the exact VERSION given).
apt_install_from() {
    local suite=$1
    shift
    local missing=()
    local spec pkg want have
    for spec in "$@"; do
        pkg=${spec%%=*}
        want=${spec#"$pkg"}
        want=${want#=}
        have=$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null || true)
        if [[ $have == 'install ok installed '* && (-z $want || ${have##* } == "$want") ]]; then
            continue
        fi
        missing+=("$spec")
    done
    ((${#missing[@]})) || return 0
    apt_update_once
    echo "setup: installing ${missing[*]} (from $suite)"
    apt_wait_locks
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 -t "$suite" "${missing[@]}" >/dev/null
}

# Prints the release (uname -r form, e.g. 6.12.95+deb12-amd64) of the kernel
# that the installed linux-image-amd64 points to, else of the newest installed
# linux-image-<release>-amd64. Derived, never hard-coded: backports moves.
installed_kernel_release() {
    local dep rel
    dep=$(dpkg-query -W -f='${Status}|${Depends}' linux-image-amd64 2>/dev/null || true)
    if [[ $dep == 'install ok installed|'* && $dep =~ linux-image-([0-9][^ ,|]*-amd64) ]]; then
        rel=${BASH_REMATCH[1]}
    else
        rel=$(dpkg-query -W -f='${Status}|${Package}\n' 'linux-image-[0-9]*-amd64' 2>/dev/null |
            sed -n 's/^install ok installed|linux-image-//p' | sort -V | tail -n1)
    fi
    if [[ -z $rel || ! -e /boot/vmlinuz-$rel ]]; then
        echo "no installed linux-image-*-amd64 kernel found (run scripts/lab/setup.sh)" >&2
        return 1
    fi
    echo "$rel"
}
