#!/usr/bin/env bash
# shellcheck shell=bash
# Builds for x86_64-unknown-linux-musl (and aarch64-unknown-linux-musl) from Debian packages
# only: there is no prebuilt musl std here. Source it, then call `musl_toolchain_setup`;
# afterwards `musl_cargo build|test|...` builds with std from source. Usable as a command:
#
#   scripts/lib/musl_toolchain.sh [setup]        set up, print the cargo command line
#   scripts/lib/musl_toolchain.sh cargo ARGS...  set up, then run cargo ARGS for musl
#
# What it does, each step skipped when already done:
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
# Environment: MUSL_TARGET (default x86_64-unknown-linux-musl). Requires common.sh (sourced
# here when run as a command).

MUSL_TARGET="${MUSL_TARGET:-x86_64-unknown-linux-musl}"

musl_toolchain_setup() {
    local here_m dir
    here_m=$(dirname "${BASH_SOURCE[0]}")
    # shellcheck source=aarch64_toolchain.sh
    source "$here_m/aarch64_toolchain.sh"
    ensure_pkgs musl-gcc:musl-tools /usr/lib/llvm-16/lib/libunwind.a:libunwind-16-dev
    dir="$ADDRPROBE_CACHE/musl"
    if [[ ! -e $dir/lib/libunwind.a ]]; then
        log "libunwind for musl: Debian's LLVM libunwind.a plus a __fprintf_chk shim"
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
        musl-gcc -O2 -c "$dir/fprintf_chk.c" -o "$dir/fprintf_chk.o"
        cp /usr/lib/llvm-16/lib/libunwind.a "$dir/lib/libunwind.a.tmp"
        chmod u+w "$dir/lib/libunwind.a.tmp"
        ar r "$dir/lib/libunwind.a.tmp" "$dir/fprintf_chk.o" 2>/dev/null
        mv "$dir/lib/libunwind.a.tmp" "$dir/lib/libunwind.a"
    fi
    rust_src_toolchain_setup
    MUSL_LIB="$dir/lib"
    local t=${MUSL_TARGET//-/_}
    export "CARGO_TARGET_${t^^}_LINKER=musl-gcc"
    export "CC_${t}=musl-gcc"
}

# musl_cargo SUBCOMMAND ARGS... : cargo SUBCOMMAND for $MUSL_TARGET with std built from
# source, into target/musl. RUSTFLAGS replaces .cargo/config.toml's rustflags, so it carries
# the repository's force-frame-pointers too.
musl_cargo() {
    local sub=$1; shift
    RUSTFLAGS="-C force-frame-pointers=yes -C link-self-contained=no -L $MUSL_LIB ${RUSTFLAGS:-}" \
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
            echo "RUSTFLAGS='-C link-self-contained=no -L $MUSL_LIB' cargo +$AARCH64_TOOLCHAIN" \
                "<build|test|...> -Zbuild-std=std,panic_unwind,panic_abort --target $MUSL_TARGET" ;;
        cargo) shift; musl_cargo "$@" ;;
        *) die "usage: $0 [setup | cargo SUBCOMMAND ARGS...]" ;;
    esac
fi
