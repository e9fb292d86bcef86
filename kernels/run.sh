#!/usr/bin/env bash
# Measure the msync workloads on stock and MS_ASYNC-patched 6.1 kernels.
#
#   kernels/run.sh [--bin PATH] [--no-build] [--variants LIST] [--repeats N]
#                  [--disk-mib N] [--out DIR]
#
#   --bin PATH       static addrprobe binary to use (default: cargo build it)
#   --no-build       reuse target/x86_64-unknown-linux-gnu/release/addrprobe
#   --variants LIST  comma-separated (default stock,wb-all,wb-none,file-none;
#                    see kernels/build.sh)
#   --repeats N      boots per variant, each on a fresh identical disk (default 3)
#   --disk-mib N     ext4 image size (default 256)
#   --out DIR        where msync-patch-kernels.{md,json} go (default docs/)
#
# Each boot: -icount shift=0 (guest "ns" = guest instructions), a fresh copy of
# one ext4 image (made once per run with mkfs.ext4 -E lazy_itable_init=0,
# lazy_journal_init=0, fixed UUID/hash seed/time so every copy is identical)
# on virtio-blk, mounted at /mnt; /sys/block/vda/stat is read before and after
# `addrprobe msync-patch --json --guest --dir /mnt`, and after a final sync.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/lib/common.sh
source "$root/scripts/lib/common.sh"
# shellcheck source=../scripts/lib/qemu.sh
source "$root/scripts/lib/qemu.sh"

build=1 bin="" variants="stock,wb-all,wb-none,file-none" repeats=3 disk_mib=256 out="$root/docs"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
while (($#)); do
    case $1 in
        --bin) bin=${2:?}; shift ;;
        --no-build) build=0 ;;
        --variants) variants=${2:?}; shift ;;
        --repeats) repeats=${2:?}; shift ;;
        --disk-mib) disk_mib=${2:?}; shift ;;
        --out) out=${2:?}; shift ;;
        -h|--help) usage ;;
        *) echo "unknown option $1" >&2; usage ;;
    esac
    shift
done
[[ $repeats =~ ^[1-9][0-9]*$ ]] || die "--repeats wants a positive integer"

t_start=$SECONDS
ensure_guest_tools
given_bin=$bin
bin=$(addrprobe_bin "$root" "$build" "$bin")
file_is_static "$bin" || die "$bin is not statically linked"

IFS=, read -r -a vlist <<<"$variants"
work="$ADDRPROBE_CACHE/msync-runs/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$work"
log "work dir: $work"
"$here/build.sh" "${vlist[@]}" > "$work/kernels.txt" || die "kernels/build.sh failed"

describe_bin "$root" "$bin" "$given_bin" > "$work/binary.txt"
make_initramfs "$bin" "$work/initrd.gz"

# one template image; every boot gets a byte-identical copy
template="$work/template.img"
truncate -s "${disk_mib}M" "$template"
E2FSPROGS_FAKE_TIME=1000000000 mkfs.ext4 -q -F -L addrprobe \
    -U 6b1f0e5a-0d1e-4c2a-9a8e-6a6472707262 \
    -E lazy_itable_init=0,lazy_journal_init=0,hash_seed=2b7e1516-28ae-d2a6-abf7-158809cf4f3c \
    "$template" || die "mkfs.ext4 failed"
disk="$work/disk.img"

fail=0
: > "$work/runs.tsv"
while read -r v kernel; do
    for ((i = 1; i <= repeats; i++)); do
        d="$work/$v-$i"; mkdir -p "$d"
        cp --sparse=always "$template" "$disk"
        log "$v run $i/$repeats: boot under -icount shift=0"
        t0=$SECONDS
        ok=ok
        SETTLE=${ADDRPROBE_SETTLE:-5} ICOUNT=1 QEMU_TIMEOUT=${QEMU_MSYNC_TIMEOUT:-600} boot_guest "$kernel" "$work/initrd.gz" \
            "$d/out" "$d/console" msync \
            -drive "file=$disk,if=virtio,format=raw" || { ok=failed; fail=1; }
        extract_between_markers "$d/out" MSYNC > "$d/msync.json"
        extract_between_markers "$d/out" MSYNC-STDERR > "$d/msync.stderr"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$i" "$ok" "$((SECONDS - t0))" \
            "$(marker_value "$d/out" MSYNC-RC)" \
            "$(marker_value "$d/out" VDASTAT-BEFORE)" "$(marker_value "$d/out" VDASTAT-AFTER)" \
            "$(marker_value "$d/out" VDASTAT-SYNCED)" >> "$work/runs.tsv"
        log "$v run $i: boot $ok ($((SECONDS - t0)) s), msync-patch rc=$(marker_value "$d/out" MSYNC-RC)"
    done
done < "$work/kernels.txt"
rm -f "$disk" "$template"

mkdir -p "$out"
rc=0
python3 "$root/scripts/lib/msync_kernels_collect.py" --work "$work" --out "$out" || rc=$?
log "total $((SECONDS - t_start)) s; work dir $work"
((rc == 0 && fail == 0)) || exit 1
