#!/usr/bin/env bash
# Build the addrprobe test kernels from Debian's linux-source-6.1:
#   kernels/build.sh [VARIANT...]       (default: all variants)
# Variants (each in its own `make O=` directory):
#   stock      : tinyconfig + kernels/msync.config, no patch
#   wb-all     : + patches/msync-async-wb-all.patch   (A+B, WB_SYNC_ALL)
#   wb-none    : + patches/msync-async-wb-none.patch  (A+B, WB_SYNC_NONE)
#   file-none  : + patches/msync-async-file-none.patch (A alone, whole file)
# Prints "VARIANT PATH-TO-bzImage" lines on stdout. Cached: a variant is only
# rebuilt when the config fragment, its patch or the source changed.
# Cache: ${ADDRPROBE_CACHE:-~/.cache/addrprobe}/linux-6.1/{src,pristine,out-VARIANT}
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib/common.sh
source "$here/../scripts/lib/common.sh"
# shellcheck source=../scripts/lib/apt_private.sh
source "$here/../scripts/lib/apt_private.sh"

ALL_VARIANTS=(stock wb-all wb-none file-none)
JOBS=${JOBS:-2}
base="$ADDRPROBE_CACHE/linux-6.1"
[[ $base != *[[:space:]]* ]] || die "Kbuild cannot work in a path with spaces ($base): point ADDRPROBE_CACHE elsewhere"

variant_patch() {
    case $1 in
        stock) echo "" ;;
        wb-all) echo "$here/patches/msync-async-wb-all.patch" ;;
        wb-none) echo "$here/patches/msync-async-wb-none.patch" ;;
        file-none) echo "$here/patches/msync-async-file-none.patch" ;;
        *) die "unknown kernel variant '$1' (known: ${ALL_VARIANTS[*]})" ;;
    esac
}

ensure_source() {
    # unpacked, pristine Debian linux-source-6.1 in $base/src
    if [[ -f $base/src/.addrprobe-unpacked ]]; then return 0; fi
    ensure_pkgs xz:xz-utils make:make gcc:build-essential bc:bc flex:flex \
        bison:bison /usr/include/libelf.h:libelf-dev /usr/include/openssl/ssl.h:libssl-dev \
        cpio:cpio
    apt_private_setup
    local dl deb
    dl=$(mktemp -d)
    log "downloading linux-source-6.1"
    deb=$(apt_private_download linux-source-6.1 "$dl")
    log "unpacking $(basename "$deb") into $base/src"
    rm -rf "$base/src.tmp"; mkdir -p "$base/src.tmp"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards './usr/src/linux-source-6.1.tar.xz' \
        | xz -dc -T2 | tar -x -C "$base/src.tmp" --strip-components=1
    [[ -f $base/src.tmp/mm/msync.c ]] || die "unpacked source lacks mm/msync.c"
    basename "$deb" > "$base/src.tmp/.addrprobe-unpacked"
    rm -rf "$base/src" "$dl"
    mv "$base/src.tmp" "$base/src"
}

# All variants share one source tree ($base/src). Before building a variant,
# every file that any patch touches is restored from $base/pristine (keeping
# its original mtime), then the variant's patch is applied (new mtime). A new
# variant's output dir starts as a copy of out-stock, so a patched build only
# recompiles the patched files and relinks (seconds, not minutes).
patched_files() {
    local p
    for p in "$here"/patches/*.patch; do
        [[ -f $p ]] && sed -n 's|^+++ b/||p' "$p"
    done | sort -u
}

restore_pristine() {
    local f
    for f in $(patched_files); do
        [[ -f $base/pristine/$f ]] || { mkdir -p "$(dirname "$base/pristine/$f")"; cp -p "$base/src/$f" "$base/pristine/$f"; }
        cmp -s "$base/pristine/$f" "$base/src/$f" || cp -p "$base/pristine/$f" "$base/src/$f"
    done
}

build_variant() {
    local v=$1
    local tree=$base/src out=$base/out-$1 stamp want patch
    patch=$(variant_patch "$v")
    [[ -z $patch || -f $patch ]] || die "patch $patch missing"
    want=$( { cat "$here/msync.config"; [[ -z $patch ]] || cat "$patch"; cat "$base/src/.addrprobe-unpacked"; } | sha256sum | cut -d' ' -f1)
    stamp="$out/.addrprobe-stamp"
    if [[ -f $stamp && $(cat "$stamp") == "$want" && -f $out/arch/x86/boot/bzImage ]]; then
        log "kernel $v: cached ($out/arch/x86/boot/bzImage)"
        echo "$v $out/arch/x86/boot/bzImage"; return 0
    fi
    restore_pristine
    if [[ -n $patch ]]; then
        patch -s -p1 -d "$tree" < "$patch" >&2 \
            || { restore_pristine; die "patch $(basename "$patch") does not apply to $(cat "$base/src/.addrprobe-unpacked")"; }
        if [[ ! -d $out && -f $base/out-stock/arch/x86/boot/bzImage ]]; then
            cp -a "$base/out-stock" "$out"; rm -f "$out/.addrprobe-stamp"
            # objtool's own build records the absolute output dir; point it at
            # the copy (keeping mtimes) or objtool relinks and, as every
            # object depends on objtool, the whole kernel rebuilds
            local f
            grep -rlF "$base/out-stock" "$out/tools" 2>/dev/null | while IFS= read -r f; do
                [[ $f == *.cmd || $f == *.d ]] || continue
                sed "s|$base/out-stock|$out|g" "$f" > "$f.tmp" && touch -r "$f" "$f.tmp" && mv "$f.tmp" "$f"
            done
        fi
    fi
    mkdir -p "$out"
    log "kernel $v: configuring (tinyconfig + msync.config) in $out"
    local mk=(make -s -C "$tree" O="$out" ARCH=x86_64 KBUILD_BUILD_USER=addrprobe
              KBUILD_BUILD_HOST=addrprobe KBUILD_BUILD_TIMESTAMP=@0 LOCALVERSION="-addrprobe-$v")
    "${mk[@]}" tinyconfig > "$out/config.log" 2>&1 || { cat "$out/config.log" >&2; die "kernel $v: make tinyconfig failed"; }
    (cd "$out" && KCONFIG_CONFIG=.config "$tree/scripts/kconfig/merge_config.sh" -m -O "$out" \
        .config "$here/msync.config" >> "$out/config.log" 2>&1) || die "kernel $v: merge_config.sh failed"
    "${mk[@]}" olddefconfig >> "$out/config.log" 2>&1 || { cat "$out/config.log" >&2; die "kernel $v: make olddefconfig failed"; }
    # every =y line of the fragment must have survived
    local line missing=()
    while IFS= read -r line; do
        [[ $line == CONFIG_*=y ]] || continue
        grep -qx "$line" "$out/.config" || missing+=("$line")
    done < "$here/msync.config"
    ((${#missing[@]} == 0)) || die "kernel $v: options dropped by kconfig: ${missing[*]}"
    log "kernel $v: building bzImage with -j$JOBS (a few minutes the first time)"
    local t0=$SECONDS
    timeout 3600 "${mk[@]}" -j"$JOBS" bzImage > "$out/build.log" 2>&1 \
        || { tail -n 30 "$out/build.log" >&2; die "kernel $v: build failed (log: $out/build.log)"; }
    restore_pristine
    log "kernel $v: built in $((SECONDS - t0)) s"
    echo "$want" > "$stamp"
    echo "$v $out/arch/x86/boot/bzImage"
}

main() {
    local variants=("$@")
    ((${#variants[@]})) || variants=("${ALL_VARIANTS[@]}")
    for v in "${variants[@]}"; do variant_patch "$v" >/dev/null; done
    ensure_source
    trap restore_pristine EXIT
    # build stock first when a patched variant is asked for: patched builds
    # start from a copy of its output
    if [[ " ${variants[*]} " != *" stock "* && ! -f $base/out-stock/arch/x86/boot/bzImage ]]; then
        build_variant stock >/dev/null
    fi
    for v in "${variants[@]}"; do build_variant "$v"; done
}
main "$@"
