#!/usr/bin/env bash
# Sets up the DRM lab (see README.md's Tests section): a virtme-ng VM running Debian's
# 6.12 kernel from bookworm-backports over the host's root file system, with
# vkms (built here out of tree, with the writeback possible_clones fix and
# its preferred mode as run-time parameters), vgem,
# udmabuf and Mesa's llvmpipe. scripts/lab/run.sh boots it.
# Idempotent: a re-run with nothing to do takes a few seconds and stays offline.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/apt.sh
source "$here/../lib/apt.sh"

VIRTME_NG_VERSION=1.42
# Bump when the vkms patch below changes: the stamp next to vkms.ko records it,
# so a module built without (this version of) the patch gets rebuilt.
VKMS_PATCH_ID=possible-clones-v1+preferred-mode-v1

# since T: seconds elapsed since the $EPOCHREALTIME value T.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
t_start=$EPOCHREALTIME
t_step=$t_start
# step NAME RESULT: one line per step, with the time it took.
step() {
    printf 'lab-setup: %-20s %-48s %5s s\n' "$1" "$2" "$(since "$t_step")"
    t_step=$EPOCHREALTIME
}

work=
trap '[[ -z $work ]] || rm -rf "$work"' EXIT

# --- Packages -----------------------------------------------------------------
ensure_backports
step backports "bookworm-backports configured"

# Kernel 6.12 (udmabuf built in, vgem as a module), QEMU 10 and Mesa 25 with
# llvmpipe; libdrm-tests (modetest) must come from backports too, since
# bookworm's pins an older libdrm2.
apt_install_from bookworm-backports \
    linux-image-amd64 libdrm-tests libegl-dev libgles-dev libdrm-dev libgbm-dev \
    libegl-mesa0 libgbm1 libgl1-mesa-dri mesa-libgallium libegl1 libgles2 \
    qemu-system-x86 qemu-system-modules-opengl
step packages/backports "kernel, Mesa, QEMU, libdrm"

# The VM runs the host's user space: busybox-static builds virtme-ng's
# initramfs, kmod and udev load modules and create /dev/dri nodes inside, make,
# gcc and xz-utils build vkms.
apt_install_from bookworm \
    dbus-daemon busybox-static kmscube python3-gi gir1.2-glib-2.0 \
    kmod udev make gcc xz-utils
step packages/bookworm "dbus, busybox, kmscube, kmod, udev, build tools"

# --- Kernel headers and the matching source (for vkms) -------------------------
kver=$(installed_kernel_release)
kpkg_ver=$(dpkg-query -W -f='${Version}' "linux-image-$kver")
[[ $kver =~ ^([0-9]+\.[0-9]+)\. ]] || { echo "lab-setup: cannot parse kernel release '$kver'" >&2; exit 1; }
src_pkg=linux-source-${BASH_REMATCH[1]}
# The source must be the image's exact version: bookworm-security carries newer
# linux-source-6.12 versions beside the backports image.
apt_install_from bookworm-backports "linux-headers-$kver" "$src_pkg=$kpkg_ver"
step kernel "$kver ($kpkg_ver)"

# --- vkms, out of tree -----------------------------------------------------------
# Debian's kernel does not set CONFIG_DRM_VKMS. Build drivers/gpu/drm/vkms/ from
# the matching linux-source against linux-headers, install it as updates/vkms.ko.
# patch_vkms DIR: the writeback fix. This kernel's drm_atomic_check_valid_clones()
# rejects every commit that attaches the writeback connector (EINVAL), because
# vkms 6.12 leaves the output encoder and the writeback encoder unable to clone
# each other. After the writeback connector is set up, give both encoders the
# mask of both. A no-op where the source already sets possible_clones.
patch_vkms() {
    python3 - "$1" <<'EOF'
import pathlib, re, sys

d = pathlib.Path(sys.argv[1])
out = d / "vkms_output.c"
src = out.read_text()

def need(ok, what):
    if not ok:
        sys.exit(f"lab-setup: vkms patch: {what} not found; the vkms source changed, revisit the fix")

# Second patch: the monitor's preferred mode as module parameters
# (preferred_width, preferred_height; 0: vkms's 1024x768), writable at run
# time, so that a test can plug "another monitor" back in: the next probe of
# the connector prefers that size.
pmark = "qemu-sink lab: preferred mode parameters"
if pmark not in src:
    call = "drm_set_preferred_mode(connector, XRES_DEF, YRES_DEF);"
    need(src.count(call) == 1, f"'{call}' in vkms_output.c (exactly once)")
    params = (
        f"/* {pmark} */\n"
        "static unsigned int preferred_width;\n"
        "module_param(preferred_width, uint, 0644);\n"
        "MODULE_PARM_DESC(preferred_width, \"The connector's preferred width (0: 1024)\");\n"
        "static unsigned int preferred_height;\n"
        "module_param(preferred_height, uint, 0644);\n"
        "MODULE_PARM_DESC(preferred_height, \"The connector's preferred height (0: 768)\");\n\n"
    )
    first_fn = src.index("static ")
    src = src[:first_fn] + params + src[first_fn:]
    src = src.replace(call, "drm_set_preferred_mode(connector,\n"
                      "\t\t\t       READ_ONCE(preferred_width) ?: XRES_DEF,\n"
                      "\t\t\t       READ_ONCE(preferred_height) ?: YRES_DEF);")
    if "#include <linux/module.h>" not in src:
        src = "#include <linux/module.h>\n" + src
    out.write_text(src)
    print("preferred mode parameters added;", end=" ")

mark = "qemu-sink lab: possible_clones fix"
if mark in src:
    print("writeback fix already applied")
    sys.exit(0)
if any("possible_clones" in (d / f).read_text() for f in ("vkms_output.c", "vkms_writeback.c")):
    print("writeback clones already set upstream, not patched")
    sys.exit(0)

need(re.search(r"struct drm_encoder \*encoder = &output->encoder;", src),
     "'struct drm_encoder *encoder = &output->encoder;' in vkms_output.c")
need(re.search(r"struct drm_writeback_connector wb_connector;", (d / "vkms_drv.h").read_text()),
     "'struct drm_writeback_connector wb_connector;' in vkms_drv.h")
anchor = re.compile(
    r'^(?P<ind>[ \t]*)(?P<var>\w+) = vkms_enable_writeback_connector\((?P<args>[^;]*)\);\n'
    r'[ \t]*if \((?P=var)\)\n'
    r'[ \t]*DRM_ERROR\("Failed to init writeback connector\\n"\);\n', re.M)
matches = list(anchor.finditer(src))
need(len(matches) == 1, "the vkms_enable_writeback_connector() call and its error check (exactly once)")
m = matches[0]
i, v = m["ind"], m["var"]
fix = (
    f"{i}{v} = vkms_enable_writeback_connector({m['args']});\n"
    f"{i}if ({v}) {{\n"
    f'{i}\tDRM_ERROR("Failed to init writeback connector\\n");\n'
    f"{i}}} else {{\n"
    f"{i}\t/* {mark}: the core rejects a commit\n"
    f"{i}\t * that uses both encoders unless each lists the other. */\n"
    f"{i}\tu32 clones = drm_encoder_mask(encoder) |\n"
    f"{i}\t\t     drm_encoder_mask(&output->wb_connector.encoder);\n\n"
    f"{i}\tencoder->possible_clones = clones;\n"
    f"{i}\toutput->wb_connector.encoder.possible_clones = clones;\n"
    f"{i}}}\n"
)
out.write_text(src[:m.start()] + fix + src[m.end():])
print("writeback fix patched")
EOF
}

ko=/lib/modules/$kver/updates/vkms.ko
stamp=$ko.stamp
want_stamp="$src_pkg=$kpkg_ver $VKMS_PATCH_ID"
if [[ -f $ko && -f $stamp && $(<"$stamp") == "$want_stamp" ]]; then
    step vkms "up to date"
else
    tarball=/usr/src/$src_pkg.tar.xz
    [[ -f $tarball ]] || { echo "lab-setup: $tarball missing" >&2; exit 1; }
    work=$(mktemp -d /tmp/qemu-sink-vkms.XXXXXX)
    tar -xJf "$tarball" -C "$work" --wildcards '*/drivers/gpu/drm/vkms/*'
    vkms_src=$(find "$work" -type d -path '*/drivers/gpu/drm/vkms' -print -quit)
    [[ -n $vkms_src ]] || { echo "lab-setup: no drivers/gpu/drm/vkms in $tarball" >&2; exit 1; }
    patch_result=$(patch_vkms "$vkms_src")
    make -s -C "/lib/modules/$kver/build" M="$vkms_src" CONFIG_DRM_VKMS=m -j"$(nproc)" modules >/dev/null
    # Debug info only bloats what the VM loads over 9p.
    strip --strip-debug "$vkms_src/vkms.ko"
    install -D -m 0644 "$vkms_src/vkms.ko" "$ko"
    echo "$want_stamp" >"$stamp"
    depmod -a "$kver"
    step vkms "built, $patch_result"
fi

# --- vdmabuf_loopback, out of tree ------------------------------------------------
# The Vdmabuf RFC's user ABI (/dev/virtio-vdmabuf, /dev/vhost-vdmabuf) looped
# back in one kernel, from tests/vdmabuf-loopback/; built in a copy of that
# directory (so the tree stays clean), installed as updates/vdmabuf_loopback.ko.
# The stamp records the kernel and a hash of the sources: a change rebuilds.
vdl_src=$(cd "$here/../../tests/vdmabuf-loopback" && pwd)
vdl_ko=/lib/modules/$kver/updates/vdmabuf_loopback.ko
vdl_stamp=$vdl_ko.stamp
vdl_want="$kver $kpkg_ver $(cd "$vdl_src" && sha256sum Kbuild Makefile ./*.c | sha256sum | cut -d' ' -f1)"
if [[ -f $vdl_ko && -f $vdl_stamp && $(<"$vdl_stamp") == "$vdl_want" ]]; then
    step vdmabuf_loopback "up to date"
else
    work=${work:-$(mktemp -d /tmp/qemu-sink-lab.XXXXXX)}
    vdl_build=$work/vdmabuf-loopback
    mkdir -p "$vdl_build"
    cp "$vdl_src"/Kbuild "$vdl_src"/Makefile "$vdl_src"/*.c "$vdl_build"/
    make -s -C "/lib/modules/$kver/build" M="$vdl_build" -j"$(nproc)" modules >/dev/null
    strip --strip-debug "$vdl_build/vdmabuf_loopback.ko"
    install -D -m 0644 "$vdl_build/vdmabuf_loopback.ko" "$vdl_ko"
    echo "$vdl_want" >"$vdl_stamp"
    depmod -a "$kver"
    step vdmabuf_loopback "built"
fi

# --- virtme-ng ----------------------------------------------------------------------
# The system Python is externally managed (PEP 668): install with the user-level
# Python first on PATH (pyenv here), never with --break-system-packages.
if vng --version 2>/dev/null | grep -qw "$VIRTME_NG_VERSION"; then
    step virtme-ng "$VIRTME_NG_VERSION, up to date"
else
    if python3 -c 'import os, sys, sysconfig; sys.exit(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        python3 -m pip install -q --root-user-action=ignore "virtme-ng==$VIRTME_NG_VERSION"
    else
        echo "lab-setup: python3 on PATH ($(command -v python3)) is the externally managed system one;" \
            "put a user-level Python (e.g. pyenv) first on PATH" >&2
        exit 1
    fi
    # pyenv exposes new console scripts only after a rehash.
    if command -v pyenv >/dev/null; then pyenv rehash; fi
    hash -r
    vng --version | grep -qw "$VIRTME_NG_VERSION" || {
        echo "lab-setup: vng $VIRTME_NG_VERSION installed but 'vng --version' does not report it" >&2
        exit 1
    }
    step virtme-ng "$VIRTME_NG_VERSION installed"
fi

echo "lab-setup: done in $(since "$t_start") s"
