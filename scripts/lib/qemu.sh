# shellcheck shell=bash
# Guest plumbing shared by scripts/kernel-matrix and kernels/run.sh:
# initramfs creation, booting under QEMU/TCG, and result extraction.
# Requires common.sh.
#
# Channel: the guest writes results to its second serial port (ttyS1), which
# QEMU writes to a host file; the console (ttyS0) only carries kernel messages
# and progress, so printk noise can never end up inside a JSON block.
#
# Which steps the guest runs is chosen on the kernel command line:
#   addrprobe_run=report,bench,msync   (comma separated, run in order)
# Steps and markers (each block ends with an RC line carrying the exit status):
#   report : addrprobe report --json          ===ADDRPROBE-REPORT-BEGIN/END===
#   bench  : addrprobe bench --quick --json   ===ADDRPROBE-BENCH-BEGIN/END===
#   msync  : mounts /dev/vda on /mnt, prints /sys/block/vda/stat before/after,
#            addrprobe msync-patch --json --guest --dir /mnt
#                                             ===ADDRPROBE-MSYNC-BEGIN/END===

QEMU_TIMEOUT="${QEMU_TIMEOUT:-120}"

ensure_guest_tools() {
    ensure_pkgs qemu-system-x86_64:qemu-system-x86 /bin/busybox:busybox-static \
        cpio:cpio gzip:gzip mkfs.ext4:e2fsprogs
    # busybox-static provides /bin/busybox; make sure it is the static one
    file_is_static /bin/busybox || ensure_pkgs /usr/share/doc/busybox-static:busybox-static
    file_is_static /bin/busybox || die "/bin/busybox is not statically linked (apt-get install busybox-static)"
}

file_is_static() {
    # true when the ELF file has no PT_INTERP (no dynamic loader)
    [[ -r $1 ]] || return 1
    ! LC_ALL=C readelf -lW "$1" 2>/dev/null | grep -q 'INTERP'
}

# make_initramfs BINARY OUT.cpio.gz : busybox + BINARY (as /addrprobe) + /init
make_initramfs() {
    local bin=$1 out=$2 root
    [[ -x $bin ]] || die "addrprobe binary $bin missing or not executable"
    file_is_static "$bin" || die "$bin is dynamically linked; the guest has no libc (build with -C target-feature=+crt-static)"
    root=$(mktemp -d)
    mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,mnt,etc}
    cp /bin/busybox "$root/bin/busybox"
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
    esac
done
# let boot-time background work (deferred initcalls, kworkers, RCU) finish
# before measuring: under -icount an idle guest's clock warps, so this costs
# almost no wall time
[ "$SETTLE" -gt 0 ] 2>/dev/null && sleep "$SETTLE"
OUT=/dev/ttyS1
[ -c $OUT ] || OUT=/dev/console
stty -F $OUT raw -echo 2>/dev/null
emit() { echo "$@" > $OUT; }
block() { # block NAME CMD... : run CMD, its stdout between markers on $OUT
    name=$1; shift
    emit "===ADDRPROBE-$name-BEGIN==="
    "$@" > $OUT 2>/tmp/stderr
    rc=$?
    emit ""
    emit "===ADDRPROBE-$name-END==="
    emit "===ADDRPROBE-$name-RC=$rc==="
    if [ -s /tmp/stderr ]; then
        emit "===ADDRPROBE-$name-STDERR-BEGIN==="
        tail -c 4000 /tmp/stderr > $OUT
        emit ""
        emit "===ADDRPROBE-$name-STDERR-END==="
    fi
    echo "addrprobe step $name: exit status $rc"
}
emit "===ADDRPROBE-GUEST-BEGIN==="
emit "===ADDRPROBE-UNAME=$(uname -r)==="
for step in $(echo "$RUN" | tr , ' '); do
    case $step in
    report) block REPORT /addrprobe report --json ;;
    bench)  block BENCH /addrprobe bench --quick --json ;;
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
    [[ ${ICOUNT:-0} == 1 ]] && icount=(-icount shift=0,sleep=off)
    : > "$out"
    timeout --kill-after=10 "$QEMU_TIMEOUT" qemu-system-x86_64 -accel tcg \
        "${icount[@]}" -m "${QEMU_MEM:-512}" -nodefaults -no-reboot -display none \
        -serial stdio -serial "file:$out" \
        -kernel "$kernel" -initrd "$initrd" \
        -append "console=ttyS0 quiet panic=-1 addrprobe_run=$steps addrprobe_settle=${SETTLE:-0}" \
        "$@" < /dev/null > "$logf" 2>&1 || rc=$?
    tr -d '\r' < "$out" > "$out.tmp" && mv "$out.tmp" "$out"
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
