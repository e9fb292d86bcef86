#!/usr/bin/env bash
# Runs `addrprobe msync-patch` with its files on a private ext4 file system on a loop
# device, so that the device's write counters (/sys/block/loopN/stat) count only the
# study's own I/O (on a shared machine the root disk's counters also count everybody
# else's writes). Needs root (losetup, mount).
#
#   scripts/msync-patch-loop.sh [--bin PATH] [--mib N] [-- addrprobe msync-patch options]
#
# Example: scripts/msync-patch-loop.sh -- --json > docs/msync-patch-emulation.json
# The image lives in ${TMPDIR:-/tmp} and is removed afterwards.
set -euo pipefail
bin=target/release/addrprobe mib=256
while (($#)); do
    case $1 in
        --bin) bin=${2:?}; shift 2 ;;
        --mib) mib=${2:?}; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (addrprobe options go after --)" >&2; exit 2 ;;
    esac
done
[[ -x $bin ]] || { echo "no addrprobe binary at $bin (cargo build --release)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/addrprobe-msync-loop.XXXXXX")
img=$work/disk.img mnt=$work/mnt dev=""
cleanup() {
    mountpoint -q "$mnt" && umount "$mnt"
    [[ -n $dev ]] && losetup -d "$dev"
    rm -rf "$work"
}
trap cleanup EXIT
truncate -s "${mib}M" "$img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
dev=$(losetup --find --show "$img")
mkdir -p "$mnt"
mount -t ext4 "$dev" "$mnt"
echo "msync-patch-loop: $dev (${mib} MiB ext4) mounted on $mnt" >&2
"$bin" msync-patch --dir "$mnt" "$@"
