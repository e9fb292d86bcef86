#!/usr/bin/env bash
# shellcheck shell=bash
# Builds for x86_64-unknown-linux-musl or aarch64-unknown-linux-musl from Debian packages
# only: there is no prebuilt musl std here. Source it, then call `musl_toolchain_setup`;
# afterwards `musl_cargo build|test|...` builds with std from source. Usable as a command:
#
#   scripts/lib/musl_toolchain.sh [setup]        set up, print the cargo command line
#   scripts/lib/musl_toolchain.sh cargo ARGS...  set up, then run cargo ARGS for musl
#
# What it does for x86_64, each step skipped when already done:
# 1. musl-gcc (musl-tools) from the host's apt, and Debian's LLVM libunwind static library
#    (libunwind-16-dev): std's unwinder on musl links `libunwind.a`, which rustup's musl
#    target would ship and which the nightly here lacks;
# 2. that libunwind was built against glibc and calls `__fprintf_chk` (its debug logging);
#    a one-function shim (the plain `vfprintf`) is compiled with musl-gcc and added to a copy
#    of the archive in $ADDRPROBE_CACHE/musl/lib, which is all the link needs;
# 3. the nightly with Debian's rust-src, linked as a toolchain (rust_src_toolchain_setup,
#    shared with the aarch64 build);
# 4. the build: `cargo +<that toolchain> -Zbuild-std=std,panic_unwind,panic_abort --target
#    x86_64-unknown-linux-musl`, linked by musl-gcc with `-C link-self-contained=no`
#    (statically: no shared library is needed at run time; musl-gcc asks for musl's loader
#    as the interpreter of the static PIE, which `musl-tools` installs).
#
# For aarch64 there is no musl-gcc on an x86_64 host, so one is put together in
# $ADDRPROBE_CACHE/musl-aarch64 (musl_aarch64_setup):
# 1. Debian bookworm's musl-dev:arm64 (libc.a, crt files, headers) and libunwind-16-dev:arm64
#    (the same LLVM libunwind as above, for arm64), fetched through the arm64 private apt
#    state (apt_private.sh) and unpacked under root/; no arm64 package is installed;
# 2. a gcc specs file like the host's musl-gcc.specs, pointing at root/, and a wrapper
#    `aarch64-linux-musl-gcc` (the cross gcc of aarch64_toolchain.sh with those specs). The
#    binaries must not ask for an arm64 musl loader, which no host has: rustc links this
#    target `-static` (not PIE; no PT_INTERP), and should it ask for `-static-pie`, the specs
#    link that with musl's self-relocating rcrt1.o and no dynamic linker, unlike musl-gcc's;
# 3. the same __fprintf_chk shim, compiled with that wrapper, in a copy of the arm64
#    libunwind.a (lib/);
# 4. the build as for x86_64, plus `-Z branch-protection=pac-ret` as aarch64_cargo does.
#
# Environment: MUSL_TARGET (x86_64-unknown-linux-musl, the default, or
# aarch64-unknown-linux-musl). Requires common.sh (sourced here when run as a command).

MUSL_TARGET="${MUSL_TARGET:-x86_64-unknown-linux-musl}"

musl_toolchain_setup() {
    local here_m
    here_m=$(dirname "${BASH_SOURCE[0]}")
    # shellcheck source=aarch64_toolchain.sh
    source "$here_m/aarch64_toolchain.sh"
    case $MUSL_TARGET in
        x86_64-unknown-linux-musl) musl_x86_64_setup ;;
        aarch64-unknown-linux-musl) musl_aarch64_setup "$here_m" ;;
        *) die "MUSL_TARGET=$MUSL_TARGET: only x86_64-unknown-linux-musl and aarch64-unknown-linux-musl are set up" ;;
    esac
    rust_src_toolchain_setup
    local t=${MUSL_TARGET//-/_}
    export "CARGO_TARGET_${t^^}_LINKER=$MUSL_CC"
    export "CC_${t}=$MUSL_CC"
}

# musl_x86_64_setup : steps 1-2 for x86_64; sets MUSL_LIB, MUSL_CC, MUSL_AR
musl_x86_64_setup() {
    ensure_pkgs musl-gcc:musl-tools /usr/lib/llvm-16/lib/libunwind.a:libunwind-16-dev
    MUSL_CC=musl-gcc MUSL_AR=ar
    MUSL_LIB="$ADDRPROBE_CACHE/musl/lib"
    musl_unwind_archive /usr/lib/llvm-16/lib/libunwind.a "$ADDRPROBE_CACHE/musl"
}

# musl_aarch64_setup DIR_OF_THIS_FILE : steps 1-3 for aarch64; sets MUSL_LIB, MUSL_CC, MUSL_AR
musl_aarch64_setup() {
    local here_m=$1 dir=$ADDRPROBE_CACHE/musl-aarch64
    aarch64_linker_setup
    MUSL_CC=$dir/aarch64-linux-musl-gcc MUSL_AR=aarch64-linux-gnu-ar
    MUSL_LIB=$dir/lib
    # for the cc crate, should a dependency compile C (its default, the host's ar, may not
    # index arm64 objects)
    export AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
    if [[ ! -e $dir/root/usr/lib/aarch64-linux-musl/libc.a \
        || ! -e $dir/root/usr/lib/llvm-16/lib/libunwind.a ]]; then
        # a subshell: the arm64 private state's variables stay out of the caller's
        (
            APT_PRIVATE_ARCH=arm64 APT_PRIVATE_DIR="$ADDRPROBE_CACHE/apt-arm64"
            # shellcheck source=apt_private.sh
            source "$here_m/apt_private.sh"
            apt_private_setup
            tmp=$(mktemp -d)
            mkdir -p "$tmp/root"
            # bookworm's, the release of the host's musl-tools and libunwind-16-dev (x86_64)
            for pkg in musl-dev libunwind-16-dev; do
                ver=$(apt_private_cache madison "$pkg" \
                    | awk -F'|' '$3 ~ / bookworm\// {gsub(/ /,"",$2); print $2; exit}')
                [[ -n $ver ]] || die "no $pkg for arm64 in bookworm"
                log "musl for aarch64: $pkg:arm64 $ver"
                deb=$(apt_private_download "$pkg=$ver" "$tmp")
                dpkg-deb -x "$deb" "$tmp/root"
            done
            [[ -e $tmp/root/usr/lib/aarch64-linux-musl/rcrt1.o ]] || die "musl-dev:arm64 has no rcrt1.o"
            [[ -e $tmp/root/usr/lib/llvm-16/lib/libunwind.a ]] \
                || die "libunwind-16-dev:arm64 has no usr/lib/llvm-16/lib/libunwind.a"
            mkdir -p "$dir"
            rm -rf "$dir/root" && mv "$tmp/root" "$dir/root"
            rm -rf "$tmp"
        ) || exit 1
    fi
    local r=$dir/root/usr/lib/aarch64-linux-musl inc=$dir/root/usr/include/aarch64-linux-musl
    # Debian's musl-gcc.specs with the unpacked paths. The startfile and link specs also cover
    # -static-pie (rustc's choice for x86_64 musl, not for aarch64 today): rcrt1.o and no
    # dynamic linker; musl's own specs keep the dynamic linker, which the x86_64 build gets
    # away with because the host has /lib/ld-musl-x86_64.so.1.
    cat > "$dir/musl-gcc.specs.tmp" <<SPECS
%rename cpp_options old_cpp_options

*cpp_options:
-nostdinc -isystem $inc -isystem include%s %(old_cpp_options)

*cc1:
%(cc1_cpu) -nostdinc -isystem $inc -isystem include%s

*link_libgcc:
-L$r -L .%s

*libgcc:
libgcc.a%s %:if-exists(libgcc_eh.a%s)

*startfile:
%{static-pie:$r/rcrt1.o;!shared:$r/Scrt1.o} $r/crti.o crtbeginS.o%s

*endfile:
crtendS.o%s $r/crtn.o

*link:
%{static-pie:-static -pie --no-dynamic-linker -z text;:-dynamic-linker /lib/ld-musl-aarch64.so.1} -nostdlib %{shared:-shared} %{static:-static} %{rdynamic:-export-dynamic}

SPECS
    mv "$dir/musl-gcc.specs.tmp" "$dir/musl-gcc.specs"
    printf '#!/bin/sh\n# aarch64 musl-gcc: the cross gcc with musl-dev:arm64 (scripts/lib/musl_toolchain.sh)\nexec aarch64-linux-gnu-gcc -specs=%s "$@"\n' \
        "$dir/musl-gcc.specs" > "$MUSL_CC.tmp"
    chmod +x "$MUSL_CC.tmp" && mv "$MUSL_CC.tmp" "$MUSL_CC"
    musl_unwind_archive "$dir/root/usr/lib/llvm-16/lib/libunwind.a" "$dir"
}

# musl_unwind_archive LIBUNWIND_A DIR : DIR/lib/libunwind.a, a copy of LIBUNWIND_A with the
# __fprintf_chk shim (compiled with $MUSL_CC, archived with $MUSL_AR)
musl_unwind_archive() {
    local src=$1 dir=$2
    [[ -e $dir/lib/libunwind.a ]] && return 0
    log "libunwind for musl ($MUSL_TARGET): Debian's LLVM libunwind.a plus a __fprintf_chk shim"
    mkdir -p "$dir/lib"
    cat > "$dir/fprintf_chk.c" <<'SHIM'
/* glibc's checked fprintf, which Debian's LLVM libunwind (built against glibc) calls: the
   plain one, for musl. */
#include <stdarg.h>
#include <stdio.h>
int __fprintf_chk(FILE *f, int flag, const char *fmt, ...) {
    va_list ap;
    (void)flag;
    va_start(ap, fmt);
    int r = vfprintf(f, fmt, ap);
    va_end(ap);
    return r;
}
SHIM
    "$MUSL_CC" -O2 -c "$dir/fprintf_chk.c" -o "$dir/fprintf_chk.o"
    cp "$src" "$dir/lib/libunwind.a.tmp"
    chmod u+w "$dir/lib/libunwind.a.tmp"
    "$MUSL_AR" r "$dir/lib/libunwind.a.tmp" "$dir/fprintf_chk.o" 2>/dev/null
    mv "$dir/lib/libunwind.a.tmp" "$dir/lib/libunwind.a"
}

# musl_cargo SUBCOMMAND ARGS... : cargo SUBCOMMAND for $MUSL_TARGET with std built from
# source, into target/musl. RUSTFLAGS replaces .cargo/config.toml's rustflags, so it carries
# the repository's force-frame-pointers too; for aarch64 also return-address signing, as
# aarch64_cargo builds (see there why).
musl_cargo() {
    local sub=$1; shift
    local flags="-C force-frame-pointers=yes -C link-self-contained=no -L $MUSL_LIB"
    [[ $MUSL_TARGET == aarch64-* ]] && flags+=" -Z branch-protection=pac-ret"
    RUSTFLAGS="$flags ${RUSTFLAGS:-}" \
        CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/musl}" \
        cargo "+$AARCH64_TOOLCHAIN" "$sub" -Zbuild-std=std,panic_unwind,panic_abort \
        --target "$MUSL_TARGET" "$@"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    # shellcheck source=common.sh
    source "$(dirname "$0")/common.sh"
    musl_toolchain_setup
    case ${1:-setup} in
        setup)
            pac=""
            [[ $MUSL_TARGET == aarch64-* ]] && pac=" -Z branch-protection=pac-ret"
            linker_var=${MUSL_TARGET//-/_}
            echo "CARGO_TARGET_${linker_var^^}_LINKER=$MUSL_CC" \
                "RUSTFLAGS='-C force-frame-pointers=yes -C link-self-contained=no -L $MUSL_LIB$pac'" \
                "cargo +$AARCH64_TOOLCHAIN" \
                "<build|test|...> -Zbuild-std=std,panic_unwind,panic_abort --target $MUSL_TARGET" ;;
        cargo) shift; musl_cargo "$@" ;;
        *) die "usage: $0 [setup | cargo SUBCOMMAND ARGS...]" ;;
    esac
fi
