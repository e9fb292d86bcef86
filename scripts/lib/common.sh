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
