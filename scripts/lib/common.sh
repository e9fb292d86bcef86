# shellcheck shell=bash
# Shared helpers for addrprobe's real-kernel scripts. Source, don't execute.

ADDRPROBE_CACHE="${ADDRPROBE_CACHE:-$HOME/.cache/addrprobe}"
export ADDRPROBE_CACHE

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# repo root (the directory holding scripts/)
repo_root() { (cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd); }

# ensure_pkgs CMD:PKG ... — apt-get install PKG when CMD (a command name or an
# absolute path) is missing. Installs nothing when everything is present.
ensure_pkgs() {
    local want=() spec cmd pkg
    for spec in "$@"; do
        cmd=${spec%%:*}; pkg=${spec#*:}
        if [[ $cmd == /* ]]; then [[ -e $cmd ]] && continue
        else command -v "$cmd" >/dev/null 2>&1 && continue; fi
        want+=("$pkg")
    done
    ((${#want[@]})) || return 0
    log "installing missing packages: ${want[*]}"
    local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
    if ! $sudo apt-get install -y -qq "${want[@]}" >/dev/null 2>&1; then
        timeout 300 $sudo apt-get update -qq || die "apt-get update failed"
        timeout 900 $sudo apt-get install -y -qq "${want[@]}" >/dev/null \
            || die "apt-get install ${want[*]} failed"
    fi
}

# addrprobe_bin ROOT BUILD BIN : path of the static addrprobe binary to put in
# the guest. BIN non-empty: use it as is. BUILD=1: cargo build it (static,
# release, x86_64-unknown-linux-gnu). BUILD=0: reuse the last build.
addrprobe_bin() {
    local root=$1 build=$2 bin=$3
    local target_bin="$root/target/x86_64-unknown-linux-gnu/release/addrprobe"
    if [[ -n $bin ]]; then
        bin=$(readlink -f "$bin")
    elif [[ $build == 1 ]]; then
        command -v cargo >/dev/null || die "cargo not found (install Rust, or pass --bin PATH)"
        log "building static addrprobe (cargo build --release --target x86_64-unknown-linux-gnu)"
        (cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" timeout 1800 cargo build \
            --release --target x86_64-unknown-linux-gnu --bin addrprobe >&2) \
            || die "cargo build failed"
        bin=$target_bin
    else
        bin=$target_bin
    fi
    [[ -x $bin ]] || die "no addrprobe binary at $bin"
    echo "$bin"
}

# describe_tests ROOT : one line saying which sources the test binaries were built from (the
# last commit that touched the crate, its tests or the lab, and whether the tree differed)
describe_tests() {
    local root=$1 c dirty=""
    git -C "$root" rev-parse --git-dir >/dev/null 2>&1 || { echo "test binaries built outside git"; return 0; }
    c=$(git -C "$root" log -1 --format=%h -- src tests lab Cargo.toml Cargo.lock build.rs)
    [[ -z $(git -C "$root" status --porcelain -- src tests lab Cargo.toml Cargo.lock build.rs 2>/dev/null) ]] \
        || dirty=" + uncommitted changes"
    echo "test binaries built from the sources of commit $c$dirty"
}

# describe_bin ROOT BIN GIVEN : one line saying which addrprobe binary ran
# (git commit of ROOT when we built it, otherwise the path and a hash prefix)
describe_bin() {
    local root=$1 bin=$2 given=$3 sum
    sum=$(sha256sum "$bin" | cut -c1-12)
    if [[ -z $given ]] && git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
        local c dirty=""
        # the last commit that touched the crate's sources, so that commits of
        # generated docs do not change the answer
        c=$(git -C "$root" log -1 --format=%h -- src Cargo.toml Cargo.lock build.rs)
        git -C "$root" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || dirty=" + uncommitted changes"
        echo "addrprobe built from the sources of commit $c$dirty (sha256 $sum…)"
    else
        echo "addrprobe binary $(basename "$bin") given with --bin (sha256 $sum…)"
    fi
}
