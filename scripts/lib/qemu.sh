# shellcheck shell=bash
# Guest plumbing shared by scripts/kernel-matrix and kernels/run.sh:
# initramfs creation, booting under QEMU/TCG, and result extraction.
# Requires common.sh (and apt_private.sh for an arm64 guest's busybox).
#
# GUEST_ARCH selects the guest: x86_64 (default; qemu-system-x86_64, the host's
# static busybox) or aarch64 (qemu-system-aarch64 -M virt,mte=on -cpu
# max,pauth-impdef=on; the static busybox of Debian's busybox-static:arm64).
#
# Channel: an x86_64 guest writes results to its second serial port (ttyS1),
# which QEMU writes to a host file; the console (ttyS0) only carries kernel
# messages and progress, so printk noise can never end up inside a JSON block.
# The arm64 virt board has one UART (ttyAMA0) and Debian's cloud-arm64 kernels
# build virtio-console as a module, so an arm64 guest writes results to its
# console: the kernel runs with loglevel=1 and printk at 1, so only emergency
# messages could interleave (a JSON block broken that way fails the collector,
# it is never misread).
#
# Which steps the guest runs is chosen on the kernel command line:
#   addrprobe_run=report,bench,msync   (comma separated, run in order)
# Steps and markers (each block ends with an RC line carrying the exit status):
#   report : addrprobe report --json          ===ADDRPROBE-REPORT-BEGIN/END===
#   bench  : addrprobe bench --quick --json   ===ADDRPROBE-BENCH-BEGIN/END===
#   tests  : every test binary in /tests (make_initramfs TESTDIR), one after
#            the other from /tmp, each killed after addrprobe_test_timeout s
#            (default 1200; TEST_TIMEOUT), with ADDRPROBE_TIMEOUT_SCALE=30
#            (TIMEOUT_SCALE: the tests' hang timeouts for their children are
#            stretched that much on the emulated CPU) and --show-output (libtest
#            prints what passing tests wrote, so that their "skipped: ..." lines
#            reach the collector; harness = false binaries ignore it); stdout and
#            stderr together
#                                             ===ADDRPROBE-TEST-<name>-BEGIN/END===
#                                             ===ADDRPROBE-TEST-<name>-RC=<rc>===
#            (rc 137: killed by the timeout)
#                                             ===ADDRPROBE-TEST-<name>-SECONDS=<s>===
#            (wall seconds in the guest, for people reading the raw output)
#   guarded: /bench/guarded_load --paired N (make_initramfs BENCHDIR; N from
#            addrprobe_guarded_rounds, default 21: GUARDED_ROUNDS)
#                                             ===ADDRPROBE-GUARDED-BEGIN/END===
#   msync  : mounts /dev/vda on /mnt, prints /sys/block/vda/stat before/after,
#            addrprobe msync-patch --json --guest --dir /mnt
#                                             ===ADDRPROBE-MSYNC-BEGIN/END===

QEMU_TIMEOUT="${QEMU_TIMEOUT:-120}"
GUEST_ARCH="${GUEST_ARCH:-x86_64}"
# the static busybox that goes into the initramfs (ensure_guest_tools sets it)
GUEST_BUSYBOX="${GUEST_BUSYBOX:-/bin/busybox}"

ensure_guest_tools() {
    if [[ $GUEST_ARCH == aarch64 ]]; then
        ensure_pkgs qemu-system-aarch64:qemu-system-arm cpio:cpio gzip:gzip
        GUEST_BUSYBOX=$(arm64_busybox)
        return 0
    fi
    ensure_pkgs qemu-system-x86_64:qemu-system-x86 /bin/busybox:busybox-static \
        cpio:cpio gzip:gzip mkfs.ext4:e2fsprogs
    # busybox-static provides /bin/busybox; make sure it is the static one
    file_is_static /bin/busybox || ensure_pkgs /usr/share/doc/busybox-static:busybox-static
    file_is_static /bin/busybox || die "/bin/busybox is not statically linked (apt-get install busybox-static)"
    GUEST_BUSYBOX=/bin/busybox
}

# arm64_busybox : the static arm64 busybox of Debian bookworm's busybox-static,
# fetched through the private apt state (APT_PRIVATE_ARCH=arm64, which the
# caller set up) into $ADDRPROBE_CACHE/aarch64/busybox (cached). Prints its path.
arm64_busybox() {
    local dest=$ADDRPROBE_CACHE/aarch64/busybox tmp deb ver
    if [[ -s $dest ]]; then echo "$dest"; return 0; fi
    [[ $APT_PRIVATE_ARCH == arm64 ]] || die "arm64_busybox needs the arm64 private apt state"
    apt_private_setup
    ver=$(apt_private_cache madison busybox-static | awk -F'|' '$3 ~ / bookworm\// {gsub(/ /,"",$2); print $2; exit}')
    [[ -n $ver ]] || die "no busybox-static for arm64 in bookworm"
    tmp=$(mktemp -d)
    deb=$(apt_private_download "busybox-static=$ver" "$tmp")
    dpkg-deb -x "$deb" "$tmp/x"
    file_is_static "$tmp/x/bin/busybox" || die "busybox-static:arm64 $ver is not static"
    mkdir -p "$(dirname "$dest")"
    mv "$tmp/x/bin/busybox" "$dest.tmp" && mv "$dest.tmp" "$dest"
    rm -rf "$tmp"
    echo "$dest"
}

file_is_static() {
    # true when the ELF file has no PT_INTERP (no dynamic loader)
    [[ -r $1 ]] || return 1
    ! LC_ALL=C readelf -lW "$1" 2>/dev/null | grep -q 'INTERP'
}

# make_initramfs BINARY OUT.cpio.gz [TESTDIR [BENCHDIR [FIXDIR]]] : busybox + BINARY (as
# /addrprobe) + /init, the static test binaries of TESTDIR as /tests/* and those of
# BENCHDIR as /bench/*; FIXDIR (scripts/kernel-matrix's prebuilt test fixtures, dynamically
# linked) as /fixtures, with every shared library its ELF files need (`ldd` on the host)
# at the path the host has it, the dynamic loader included
make_initramfs() {
    local bin=$1 out=$2 tests=${3:-} benches=${4:-} fixtures=${5:-} root t
    [[ -x $bin ]] || die "addrprobe binary $bin missing or not executable"
    file_is_static "$bin" || die "$bin is dynamically linked; the guest has no libc (build with -C target-feature=+crt-static)"
    root=$(mktemp -d)
    mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,mnt,etc}
    cp "$GUEST_BUSYBOX" "$root/bin/busybox"
    local pair dir dest
    for pair in "$tests:tests" "$benches:bench"; do
        dir=${pair%:*} dest=${pair##*:}
        [[ -n $dir ]] || continue
        mkdir -p "$root/$dest"
        for t in "$dir"/*; do
            file_is_static "$t" || die "$t (for /$dest) is dynamically linked"
            cp "$t" "$root/$dest/"
        done
    done
    if [[ -n $fixtures ]]; then
        cp -r "$fixtures" "$root/fixtures"
        local lib
        while read -r lib; do
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib" || die "copying $lib into the initramfs failed"
        done < <(find "$fixtures" -type f -exec sh -c 'head -c4 "$1" | grep -q ELF' _ {} \; \
                     -exec ldd {} \; 2>/dev/null \
                 | grep -v "not found" | grep -o '/[^ ]*' | sort -u)
    fi
    cp "$bin" "$root/addrprobe"
    chmod 755 "$root/addrprobe"
    _write_init > "$root/init"
    chmod 755 "$root/init"
    (cd "$root" && find . -print0 | LC_ALL=C sort -z \
        | cpio --null -o -H newc --owner=0:0 --quiet) | gzip -n -6 > "$out.tmp"
    mv "$out.tmp" "$out"
    rm -rf "$root"
}

_write_init() {
    cat <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
# keep printk off the console while measuring
echo 1 > /proc/sys/kernel/printk 2>/dev/null
RUN=report
SETTLE=0
for w in $(cat /proc/cmdline); do
    case $w in
    addrprobe_run=*) RUN=${w#addrprobe_run=} ;;
    addrprobe_settle=*) SETTLE=${w#addrprobe_settle=} ;;
    addrprobe_test_timeout=*) TEST_TIMEOUT=${w#addrprobe_test_timeout=} ;;
    addrprobe_timeout_scale=*) TIMEOUT_SCALE=${w#addrprobe_timeout_scale=} ;;
    addrprobe_guarded_rounds=*) GUARDED_ROUNDS=${w#addrprobe_guarded_rounds=} ;;
    esac
done
# let boot-time background work (deferred initcalls, kworkers, RCU) finish
# before measuring: under -icount an idle guest's clock warps, so this costs
# almost no wall time
[ "$SETTLE" -gt 0 ] 2>/dev/null && sleep "$SETTLE"
# results go to descriptor 3: the second serial port where there is one (x86_64),
# else the console this shell got from the kernel (arm64 virt: its one UART).
# An arm64 kernel has /dev/ttyS1 too, without a port behind it (stty fails).
if [ -c /dev/ttyS1 ] && stty -F /dev/ttyS1 raw -echo 2>/dev/null; then
    exec 3>/dev/ttyS1
else
    exec 3>&1
fi
emit() { echo "$@" >&3; }
block() { # block NAME CMD... : run CMD, its stdout between markers on $OUT
    name=$1; shift
    emit "===ADDRPROBE-$name-BEGIN==="
    "$@" >&3 2>/tmp/stderr 3>&-
    rc=$?
    emit ""
    emit "===ADDRPROBE-$name-END==="
    emit "===ADDRPROBE-$name-RC=$rc==="
    if [ -s /tmp/stderr ]; then
        emit "===ADDRPROBE-$name-STDERR-BEGIN==="
        tail -c 4000 /tmp/stderr >&3
        emit ""
        emit "===ADDRPROBE-$name-STDERR-END==="
    fi
    echo "addrprobe step $name: exit status $rc"
}
# fixtures the tests would build with cargo (tests/support: cargo_fixture)
[ -d /fixtures ] && export ADDRPROBE_PREBUILT_FIXTURES=/fixtures
emit "===ADDRPROBE-GUEST-BEGIN==="
emit "===ADDRPROBE-UNAME=$(uname -r)==="
for step in $(echo "$RUN" | tr , ' '); do
    case $step in
    report) block REPORT /addrprobe report --json ;;
    bench)  block BENCH /addrprobe bench --quick --json ;;
    guarded) block GUARDED /bench/guarded_load --paired "${GUARDED_ROUNDS:-21}" ;;
    tests)
        for t in /tests/*; do
            [ -x "$t" ] || continue
            name=${t##*/}
            echo "test binary $name"
            emit "===ADDRPROBE-TEST-$name-BEGIN==="
            t0=$(date +%s)
            (cd /tmp && ADDRPROBE_TIMEOUT_SCALE=${TIMEOUT_SCALE:-1} timeout -s KILL "${TEST_TIMEOUT:-1200}" "$t" --show-output) >&3 2>&1 3>&-
            rc=$?
            emit ""
            emit "===ADDRPROBE-TEST-$name-END==="
            emit "===ADDRPROBE-TEST-$name-RC=$rc==="
            emit "===ADDRPROBE-TEST-$name-SECONDS=$(( $(date +%s) - t0 ))==="
        done ;;
    msync)
        if mount -t ext4 /dev/vda /mnt; then
            sync
            emit "===ADDRPROBE-VDASTAT-BEFORE=$(cat /sys/block/vda/stat)==="
            block MSYNC /addrprobe msync-patch --json --guest --dir /mnt
            emit "===ADDRPROBE-VDASTAT-AFTER=$(cat /sys/block/vda/stat)==="
            sync
            emit "===ADDRPROBE-VDASTAT-SYNCED=$(cat /sys/block/vda/stat)==="
            umount /mnt
        else
            emit "===ADDRPROBE-MSYNC-RC=mount-failed==="
        fi ;;
    *) emit "===ADDRPROBE-UNKNOWN-STEP=$step===" ;;
    esac
done
emit "===ADDRPROBE-GUEST-END==="
sync
poweroff -f
INIT
}

# boot_guest KERNEL INITRD OUTFILE LOGFILE STEPS [extra qemu args...]
# Boots under TCG; the guest's results channel (ttyS1) goes to OUTFILE, the
# console to LOGFILE. Returns non-zero on timeout / missing end marker.
# Set ICOUNT=1 for `-icount shift=0` (1 ns of guest time per instruction).
boot_guest() {
    local kernel=$1 initrd=$2 out=$3 logf=$4 steps=$5; shift 5
    local icount=() rc=0
    local args="quiet panic=-1 addrprobe_run=$steps addrprobe_settle=${SETTLE:-0} addrprobe_test_timeout=${TEST_TIMEOUT:-1200} addrprobe_timeout_scale=${TIMEOUT_SCALE:-30} addrprobe_guarded_rounds=${GUARDED_ROUNDS:-21}"
    [[ ${ICOUNT:-0} == 1 ]] && icount=(-icount shift=0,sleep=off)
    : > "$out"
    if [[ $GUEST_ARCH == aarch64 ]]; then
        # -cpu max: every feature TCG emulates, among them PAC (pauth-impdef: QEMU's
        # fast implementation-defined algorithm instead of QARMA5), BTI, LVA/LPA2 (52-bit
        # VAs; Debian's kernels are built for 48) and, with the board's mte=on, MTE.
        timeout --kill-after=10 "$QEMU_TIMEOUT" qemu-system-aarch64 -accel tcg \
            "${icount[@]}" -M virt,mte=on -cpu max,pauth-impdef=on -smp "${QEMU_SMP:-2}" \
            -m "${QEMU_MEM:-2048}" -nodefaults -no-reboot -display none \
            -serial stdio -kernel "$kernel" -initrd "$initrd" \
            -append "console=ttyAMA0 loglevel=1 $args" \
            "$@" < /dev/null > "$logf" 2>&1 || rc=$?
        tr -d '\r' < "$logf" > "$out"
    else
        timeout --kill-after=10 "$QEMU_TIMEOUT" qemu-system-x86_64 -accel tcg \
            "${icount[@]}" -smp "${QEMU_SMP:-1}" -m "${QEMU_MEM:-512}" -nodefaults -no-reboot -display none \
            -serial stdio -serial "file:$out" \
            -kernel "$kernel" -initrd "$initrd" \
            -append "console=ttyS0 $args" \
            "$@" < /dev/null > "$logf" 2>&1 || rc=$?
        tr -d '\r' < "$out" > "$out.tmp" && mv "$out.tmp" "$out"
    fi
    if ((rc == 124 || rc == 137)); then
        log "boot of $(basename "$kernel") timed out after ${QEMU_TIMEOUT}s (console log: $logf)"
        return 1
    fi
    if ! grep -q '===ADDRPROBE-GUEST-END===' "$out"; then
        log "boot of $(basename "$kernel") ended (qemu rc=$rc) without the guest end marker; console log tail:"
        tail -n 15 "$logf" >&2
        return 1
    fi
    return 0
}

# extract_between_markers FILE NAME : prints the lines between
# ===ADDRPROBE-NAME-BEGIN=== and ===ADDRPROBE-NAME-END===
extract_between_markers() {
    awk -v b="===ADDRPROBE-$2-BEGIN===" -v e="===ADDRPROBE-$2-END===" \
        '$0==e{f=0} f{print} $0==b{f=1}' "$1"
}

# marker_value FILE KEY : value of a ===ADDRPROBE-KEY=value=== line
marker_value() {
    sed -n "s/^===ADDRPROBE-$2=\\(.*\\)===\$/\\1/p" "$1" | tail -n 1
}
