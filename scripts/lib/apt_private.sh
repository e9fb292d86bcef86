# shellcheck shell=bash
# A private apt state (own sources.list, lists, cache) used to `apt-get
# download` Debian kernels from suites the host does not have configured.
# Mirror URIs are read from the host's own apt configuration; no host name is
# written into the repository.
# Requires common.sh.

# APT_PRIVATE_ARCH: the one Debian architecture whose package lists the state holds (amd64
# for the x86_64 matrix; the arm64 scripts use their own state, $ADDRPROBE_CACHE/apt-arm64,
# so that neither refreshes the other's lists). Architecture-independent packages (rust-src)
# are in either.
APT_PRIVATE_ARCH="${APT_PRIVATE_ARCH:-amd64}"
if [[ $APT_PRIVATE_ARCH == amd64 ]]; then
    APT_PRIVATE_DIR="${APT_PRIVATE_DIR:-$ADDRPROBE_CACHE/apt}"
else
    APT_PRIVATE_DIR="${APT_PRIVATE_DIR:-$ADDRPROBE_CACHE/apt-$APT_PRIVATE_ARCH}"
fi
APT_KEYRING="${APT_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
# every user of the private state asks for the same suites, so that the lists
# are fetched once and shared (kernel-matrix kernels + linux-source-6.1)
APT_SUITES=(bullseye-security bookworm bookworm-security bookworm-backports
            trixie trixie-backports sid)

# system_debian_mirrors: prints two lines, the main mirror URI and the
# security mirror URI, taken from /etc/apt/sources.list.d/*.sources (deb822)
# or /etc/apt/sources.list. The security mirror falls back to
# "<main URI>-security" when the host has none configured.
system_debian_mirrors() {
    local main="" sec="" f uris suites line
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
        # walk deb822 stanzas: remember URIs and Suites, decide at blank line
        uris=""; suites=""
        while IFS= read -r line || [[ -n $line ]]; do
            case $line in
                URIs:*)   uris=${line#URIs:}; uris=${uris# } ;;
                Suites:*) suites=${line#Suites:} ;;
                "")       _apt_classify ;;
            esac
        done < "$f"
        _apt_classify
    done
    if [[ -r /etc/apt/sources.list ]]; then
        while read -r typ rest; do
            [[ $typ == deb ]] || continue
            rest=$(sed -E 's/\[[^]]*\] *//' <<<"$rest")
            read -r uris suites _ <<<"$rest"
            _apt_classify
        done < /etc/apt/sources.list
    fi
    shopt -u nullglob
    [[ -n $main ]] || die "no Debian mirror found in /etc/apt/sources.list{,.d/*.sources}"
    [[ -n $sec ]] || sec="${main%/}-security"
    printf '%s\n%s\n' "${main%/}" "${sec%/}"
}
_apt_classify() {
    local u=${uris%% *}
    [[ -n $u && -n $suites ]] || { uris=""; suites=""; return 0; }
    if [[ $suites == *-security* || $u == *security* ]]; then
        [[ -n $sec ]] || sec=$u
    elif [[ $u == *debian* || -z $main ]]; then
        [[ -n $main && $main == *debian* ]] || main=$u
    fi
    uris=""; suites=""
}

# apt options pointing every piece of state into $APT_PRIVATE_DIR
_apt_private_opts() {
    local d=$APT_PRIVATE_DIR
    printf '%s\n' \
        -o "Dir::State::Lists=$d/lists" \
        -o "Dir::Etc::SourceList=$d/sources.list" \
        -o "Dir::Etc::SourceParts=/nonexistent" \
        -o "Dir::Etc::TrustedParts=$d/trusted.gpg.d" \
        -o "Dir::Etc::Trusted=$d/trusted.gpg" \
        -o "Dir::Cache=$d/cache" \
        -o "Dir::Cache::archives=$d/cache/archives" \
        -o "Dir::Cache::pkgcache=$d/cache/pkgcache.bin" \
        -o "Dir::Cache::srcpkgcache=$d/cache/srcpkgcache.bin" \
        -o "Acquire::Check-Valid-Until=false" \
        -o "Acquire::Languages=none" \
        -o "APT::Architecture=$APT_PRIVATE_ARCH" \
        -o "APT::Architectures=$APT_PRIVATE_ARCH" \
        -o "Debug::NoLocking=true" \
        -o "APT::Sandbox::User=root" \
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false" \
        -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
}

# apt_private_setup [SUITE...] : (default: "${APT_SUITES[@]}") write the private sources.list for SUITEs
# (e.g. bullseye-security trixie-backports sid) and run `apt-get update`,
# verifying signatures with $APT_KEYRING. Refreshes at most every 12 h.
apt_private_setup() {
    local d=$APT_PRIVATE_DIR mirrors main sec s uri keyring
    (($#)) || set -- "${APT_SUITES[@]}"
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/trusted.gpg.d"
    mapfile -t mirrors < <(system_debian_mirrors)
    main=${mirrors[0]}; sec=${mirrors[1]}
    [[ -r $APT_KEYRING ]] || die "Debian archive keyring $APT_KEYRING missing (apt-get install debian-archive-keyring)"
    keyring=$APT_KEYRING
    # a newer keyring fetched by apt_private_upgrade_keyring (see below)
    [[ -s $d/debian-archive-keyring.gpg ]] && keyring=$d/debian-archive-keyring.gpg
    {
        for s in "$@"; do
            uri=$main; [[ $s == *-security ]] && uri=$sec
            echo "deb [signed-by=$keyring] $uri $s main"
        done
    } > "$d/sources.list.new"
    if cmp -s "$d/sources.list.new" "$d/sources.list" \
        && [[ -n $(find "$d/lists" -maxdepth 1 -name '*Packages*' -mmin -720 2>/dev/null | head -1) ]]; then
        rm -f "$d/sources.list.new"; return 0
    fi
    mv "$d/sources.list.new" "$d/sources.list"
    log "apt (private state in $d): update for $* from $main and $sec"
    local out opts
    mapfile -t opts < <(_apt_private_opts)
    if ! out=$(timeout 600 apt-get "${opts[@]}" update 2>&1); then
        printf '%s\n' "$out" >&2
        die "private apt-get update failed"
    fi
    if grep -qE '^(W|E):' <<<"$out"; then
        grep -E '^(W|E):' <<<"$out" >&2
        grep -q 'NO_PUBKEY\|not signed\|is not signed' <<<"$out" \
            && die "a suite's Release file could not be verified with $keyring"
    fi
}

apt_private_cache()  { local opts; mapfile -t opts < <(_apt_private_opts); apt-cache "${opts[@]}" "$@"; }
apt_private_get()    { local opts; mapfile -t opts < <(_apt_private_opts); apt-get "${opts[@]}" "$@"; }

# apt_private_download PKG[=VER] DESTDIR : apt-get download into DESTDIR,
# prints the .deb path.
apt_private_download() {
    local pkg=$1 dest=$2 opts
    mapfile -t opts < <(_apt_private_opts)
    mkdir -p "$dest"
    (cd "$dest" && timeout 900 apt-get "${opts[@]}" download -q "$pkg" >/dev/null) \
        || die "apt-get download $pkg failed"
    local name=${pkg%%=*}
    find "$dest" -maxdepth 1 -name "${name}_*.deb" -printf '%T@ %p\n' | sort -rn | head -n 1 | cut -d' ' -f2-
}

# debian_kernel SERIES : newest cloud-$APT_PRIVATE_ARCH kernel (cloud-amd64, cloud-arm64) of
# SERIES ("5.10", "6.1", "6.12", "6.18", "7" = newest 7.x) in the private state. Prints
# "PACKAGE VERSION ABI SUITE". Builds from an older release's backports
# (ABIs like 6.1.0-0.deb11.N) are skipped. For >= 6.16 the kernel lives in
# linux-binary-ABI (linux-image-ABI is a meta package).
debian_kernel() {
    local series=$1 re abi pkg ver suite
    re="^linux-(image|binary)-${series//./\\.}\\.[0-9]"
    abi=$(apt_private_cache search --names-only "$re" 2>/dev/null | awk '{print $1}' \
        | grep -E -- "-cloud-$APT_PRIVATE_ARCH\$" | grep -vE -- '-0\.deb[0-9]+\.' \
        | sed -E "s/^linux-(image|binary)-//; s/-cloud-$APT_PRIVATE_ARCH\$//" | sort -uV | tail -n 1)
    [[ -n $abi ]] || { log "no Debian cloud-$APT_PRIVATE_ARCH kernel found for series $series"; return 1; }
    for pkg in "linux-binary-$abi-cloud-$APT_PRIVATE_ARCH" "linux-image-$abi-cloud-$APT_PRIVATE_ARCH"; do
        ver=$(apt_private_cache policy "$pkg" 2>/dev/null | awk '/Candidate:/{print $2}')
        [[ -n $ver && $ver != "(none)" ]] || continue
        suite=$(apt_private_cache madison "$pkg" 2>/dev/null | awk -F'|' -v v="$ver" \
            '{gsub(/ /,"",$2)} $2==v {split($3,a," "); sub(/\/.*/,"",a[2]); print a[2]; exit}')
        echo "$pkg $ver $abi ${suite:-?}"; return 0
    done
    log "series $series: ABI $abi found but no installable package"; return 1
}

# fetch_debian_vmlinuz PACKAGE ABI : download PACKAGE, keep only its vmlinuz in
# $ADDRPROBE_CACHE/kernels/ABI/vmlinuz (amd64) or kernels/ABI-ARCH/vmlinuz (cached). Prints
# the path. (An arm64 vmlinuz is a gzip-compressed Image, which QEMU's -kernel unpacks.)
fetch_debian_vmlinuz() {
    local pkg=$1 abi=$2 dir=$ADDRPROBE_CACHE/kernels/$2 tmp deb
    [[ $APT_PRIVATE_ARCH == amd64 ]] || dir=$dir-$APT_PRIVATE_ARCH
    if [[ -s $dir/vmlinuz ]]; then echo "$dir/vmlinuz"; return 0; fi
    tmp=$(mktemp -d)
    log "downloading $pkg"
    deb=$(apt_private_download "$pkg" "$tmp")
    mkdir -p "$dir"
    dpkg-deb --fsys-tarfile "$deb" \
        | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*' './usr/lib/modules/*/vmlinuz' 2>/dev/null || true
    local k; k=$(find "$tmp/boot" "$tmp/usr/lib/modules" -name 'vmlinuz*' -type f 2>/dev/null | head -n 1)
    [[ -n $k ]] || { rm -rf "$tmp"; die "$pkg contains no vmlinuz"; }
    mv "$k" "$dir/vmlinuz.tmp" && mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
    basename "$deb" > "$dir/package"
    rm -rf "$tmp"
    echo "$dir/vmlinuz"
}
