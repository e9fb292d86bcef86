#!/usr/bin/env bash
# shellcheck shell=bash
# Cross toolchain for aarch64-unknown-linux-gnu, set up from Debian packages only (rustup
# cannot download a target's std here). Source it, then call `aarch64_toolchain_setup`;
# afterwards `aarch64_cargo build|test|...` cross-builds with the right linker. Usable as a
# command too:
#
#   scripts/lib/aarch64_toolchain.sh [setup]        set up, print the cargo command line
#   scripts/lib/aarch64_toolchain.sh cargo ARGS...  set up, then run cargo ARGS for aarch64
#
# What it does, each step skipped when already done:
# 1. the linker: gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (a Recommends only, but the
#    linker needs its crt files and libc) from the host's apt (apt-get as root, else sudo);
# 2. the standard library's source: Debian's rust-src package of the SAME release as the
#    nightly compiler (1.97.x for the image's nightly 1.97), fetched with `apt-get download`
#    through the private apt state (apt_private.sh, arm64 lists; rust-src is
#    architecture-independent) and unpacked into $ADDRPROBE_CACHE/aarch64;
# 3. a toolchain `addrprobe-aarch64` (`rustup toolchain link`): a hard-linked copy of the
#    nightly toolchain (no extra disk space) plus lib/rustlib/src/rust = that source. A copy,
#    not symlinks: rustc finds its sysroot from the canonical path of its driver library, and
#    cargo's -Zbuild-std takes the library source from that sysroot;
# 4. the build: `cargo +addrprobe-aarch64 -Zbuild-std=std,panic_unwind,panic_abort ...
#    --target aarch64-unknown-linux-gnu`, linking with aarch64-linux-gnu-gcc. std is
#    compiled once per target directory (about two minutes cold on two cores).
#
# Environment: AARCH64_NIGHTLY (rustup toolchain to copy, default nightly), AARCH64_TOOLCHAIN
# (name of the linked toolchain, default addrprobe-aarch64).
# Requires common.sh (sourced here when run as a command).

AARCH64_TARGET=aarch64-unknown-linux-gnu
AARCH64_NIGHTLY="${AARCH64_NIGHTLY:-nightly}"
AARCH64_TOOLCHAIN="${AARCH64_TOOLCHAIN:-addrprobe-aarch64}"

# the linker packages (host apt)
aarch64_linker_setup() {
    ensure_pkgs aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu \
        /usr/aarch64-linux-gnu/lib/crt1.o:libc6-dev-arm64-cross
    [[ -e /usr/aarch64-linux-gnu/lib/libc.a ]] \
        || die "libc6-dev-arm64-cross is installed but /usr/aarch64-linux-gnu/lib/libc.a is missing"
}

# aarch64_toolchain_setup : steps 1-3; exports the variables aarch64_cargo uses
aarch64_toolchain_setup() {
    aarch64_linker_setup
    rust_src_toolchain_setup
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
    export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
}

# rust_src_toolchain_setup : steps 2-3, the nightly with Debian's std sources, linked as
# $AARCH64_TOOLCHAIN; any target's std can be built with it (-Zbuild-std), musl's too
# (scripts/lib/musl_toolchain.sh)
rust_src_toolchain_setup() {
    local here_tc nightly_dir release src_dir deb tc_dir sysroot
    command -v rustup >/dev/null || die "rustup is needed to link the aarch64 toolchain"
    nightly_dir=$(rustc "+$AARCH64_NIGHTLY" --print sysroot 2>/dev/null) \
        || die "no $AARCH64_NIGHTLY toolchain (rustup toolchain list)"
    # 1.97.0-nightly -> 1.97: Debian's newest rust-src of that minor release
    release=$(rustc "+$AARCH64_NIGHTLY" -vV | sed -n 's/^release: \([0-9]*\.[0-9]*\)\..*/\1/p')
    [[ -n $release ]] || die "cannot read the release of $AARCH64_NIGHTLY"
    tc_dir="$ADDRPROBE_CACHE/aarch64/toolchain-$release"
    if [[ ! -d $tc_dir/lib/rustlib/src/rust/library/std ]]; then
        src_dir="$ADDRPROBE_CACHE/aarch64/rust-src-$release"
        if [[ ! -d $src_dir/library/std ]]; then
            here_tc=$(dirname "${BASH_SOURCE[0]}")
            # the private state of the arm64 lists (rust-src is Architecture: all)
            (
                APT_PRIVATE_ARCH=arm64 APT_PRIVATE_DIR="$ADDRPROBE_CACHE/apt-arm64"
                # shellcheck source=apt_private.sh
                source "$here_tc/apt_private.sh"
                apt_private_setup
                local ver
                ver=$(apt_private_cache madison rust-src | awk -F'|' '{gsub(/ /,"",$2); print $2}' \
                    | grep -E "^$release\\.[0-9]+\\+" | sort -V | tail -n 1)
                [[ -n $ver ]] || die "Debian has no rust-src $release.x (the nightly is $release)"
                log "rust-src $ver for the $AARCH64_NIGHTLY compiler ($release)"
                tmp=$(mktemp -d)
                deb=$(apt_private_download "rust-src=$ver" "$tmp")
                mkdir -p "$tmp/x"
                dpkg-deb -x "$deb" "$tmp/x"
                d=$(find "$tmp/x/usr/src" -maxdepth 1 -name 'rustc-*' -type d | head -n 1)
                [[ -d $d/library/std ]] || die "rust-src $ver has no library/std"
                rm -rf "$src_dir.tmp" && mkdir -p "$(dirname "$src_dir")"
                mv "$d" "$src_dir.tmp" && mv "$src_dir.tmp" "$src_dir"
                rm -rf "$tmp"
            ) || exit 1
        fi
        log "linking toolchain $AARCH64_TOOLCHAIN: hard-linked copy of $nightly_dir + rust-src $release"
        rm -rf "$tc_dir.tmp"
        cp -al "$nightly_dir" "$tc_dir.tmp" 2>/dev/null || cp -a "$nightly_dir" "$tc_dir.tmp"
        rm -rf "$tc_dir.tmp/lib/rustlib/src"
        mkdir -p "$tc_dir.tmp/lib/rustlib/src"
        ln -s "$src_dir" "$tc_dir.tmp/lib/rustlib/src/rust"
        rm -rf "$tc_dir" && mv "$tc_dir.tmp" "$tc_dir"
    fi
    if [[ $(rustc "+$AARCH64_TOOLCHAIN" --print sysroot 2>/dev/null) != "$tc_dir" ]]; then
        rustup toolchain link "$AARCH64_TOOLCHAIN" "$tc_dir" >/dev/null \
            || die "rustup toolchain link $AARCH64_TOOLCHAIN $tc_dir failed"
    fi
    sysroot=$(rustc "+$AARCH64_TOOLCHAIN" --print sysroot)
    [[ -d $sysroot/lib/rustlib/src/rust/library/std ]] \
        || die "toolchain $AARCH64_TOOLCHAIN ($sysroot) does not see the library source"
}

# aarch64_cargo SUBCOMMAND ARGS... : cargo SUBCOMMAND for aarch64 with std built from source.
# Everything, std included, is built with return-address signing (-Zbranch-protection=pac-ret,
# as distributions build arm64 code), so that the unwinder's tests meet signed return
# addresses on a CPU with pointer authentication (QEMU's -cpu max has it). RUSTFLAGS replaces
# .cargo/config.toml's rustflags, so it carries the repository's force-frame-pointers too.
# Set AARCH64_STATIC=1 for a statically linked binary (the initramfs has no libc).
aarch64_cargo() {
    local sub=$1; shift
    local flags="-C force-frame-pointers=yes -Z branch-protection=pac-ret"
    [[ ${AARCH64_STATIC:-0} == 1 ]] && flags+=" -C target-feature=+crt-static"
    RUSTFLAGS="$flags ${RUSTFLAGS:-}" \
        cargo "+$AARCH64_TOOLCHAIN" "$sub" -Zbuild-std=std,panic_unwind,panic_abort \
        --target "$AARCH64_TARGET" "$@"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    # shellcheck source=common.sh
    source "$(dirname "$0")/common.sh"
    aarch64_toolchain_setup
    case ${1:-setup} in
        setup)
            echo "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc" \
                "cargo +$AARCH64_TOOLCHAIN <build|test|...> -Zbuild-std=std,panic_unwind,panic_abort" \
                "--target $AARCH64_TARGET" ;;
        cargo) shift; aarch64_cargo "$@" ;;
        *) die "usage: $0 [setup | cargo SUBCOMMAND ARGS...]" ;;
    esac
fi
