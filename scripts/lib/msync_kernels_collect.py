#!/usr/bin/env python3
"""Collect kernels/run.sh output into msync-patch-kernels.md / .json and print
the Markdown table (standard library only).

Input: WORK/runs.tsv (variant, run, boot status, seconds, rc, vda stat
before / after / after sync) and WORK/<variant>-<run>/msync.json, the output
of `addrprobe msync-patch --json --guest --dir /mnt` run under
-icount shift=0 (its "ns" are guest instructions).

The workload JSON's exact shape is owned by the crate; this collector looks
for every object carrying "ns_per_probe" and names it by its "workload" or
"name" key (or the key it sits under).
"""
import argparse
import datetime
import json
import os
import statistics
import sys

VARIANT_DOC = {
    "stock": "Debian linux-source-6.1, unpatched",
    "wb-all": "MS_ASYNC starts writeback of the msync range, WB_SYNC_ALL (filemap_fdatawrite_range)",
    "wb-none": "MS_ASYNC starts writeback of the msync range, WB_SYNC_NONE (__filemap_fdatawrite_range)",
    "file-none": "MS_ASYNC starts writeback of the whole file, WB_SYNC_NONE (filemap_flush)",
}
STAT_FIELDS = ["read_ios", "read_merges", "read_sectors", "read_ticks", "write_ios",
               "write_merges", "write_sectors", "write_ticks", "in_flight", "io_ticks",
               "time_in_queue"]


def load_json(path):
    try:
        text = open(path, encoding="utf-8", errors="replace").read().strip()
    except OSError:
        return None
    if not text:
        return None
    start = text.find("{")
    while start != -1:
        try:
            return json.JSONDecoder().raw_decode(text[start:])[0]
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None


def workloads(obj, parent=None, out=None):
    """[(name, dict)] for every dict with an "ns_per_probe" key."""
    if out is None:
        out = []
    if isinstance(obj, dict):
        if "ns_per_probe" in obj:
            name = str(obj.get("workload") or obj.get("name") or parent or f"workload {len(out) + 1}")
            if obj.get("fs"):
                name += f" ({obj['fs']})"
            if obj.get("mode") not in (None, "stock"):
                name += f" [{obj['mode']}]"
            out.append((name, obj))
        for k, v in obj.items():
            if isinstance(v, (dict, list)):
                workloads(v, k, out)
    elif isinstance(obj, list):
        for v in obj:
            workloads(v, parent, out)
    return out


def parse_stat(s):
    try:
        nums = [int(x) for x in s.split()]
    except ValueError:
        return None
    return dict(zip(STAT_FIELDS, nums)) if len(nums) >= 7 else None


def spread(vals, fmt="{:,.0f}"):
    vals = [v for v in vals if isinstance(v, (int, float))]
    if not vals:
        return "–"
    med = statistics.median(vals)
    if len(vals) == 1 or min(vals) == max(vals):
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    runs = []
    with open(os.path.join(a.work, "runs.tsv")) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 8:
                p += [""] * (8 - len(p))
            v, i, ok, secs, rc, before, after, synced = p[:8]
            res = load_json(os.path.join(a.work, f"{v}-{i}", "msync.json"))
            b, af, sy = parse_stat(before), parse_stat(after), parse_stat(synced)
            wr = (af["write_sectors"] - b["write_sectors"]) if b and af else None
            wr_sync = (sy["write_sectors"] - b["write_sectors"]) if b and sy else None
            wios = (af["write_ios"] - b["write_ios"]) if b and af else None
            runs.append({"variant": v, "run": int(i), "boot": ok, "seconds": int(secs or 0),
                         "rc": rc, "sectors_written": wr, "sectors_written_after_sync": wr_sync,
                         "write_ios": wios, "vda_stat_before": before, "vda_stat_after": after,
                         "vda_stat_synced": synced, "result": res,
                         "workloads": {n: w for n, w in workloads(res)} if res else {}})
    variants = []
    for r in runs:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    names = []
    for r in runs:
        for n in r["workloads"]:
            if n not in names:
                names.append(n)

    def vals(v, n, key="ns_per_probe"):
        return [r["workloads"][n].get(key) for r in runs if r["variant"] == v and n in r["workloads"]]

    med = {(v, n): (statistics.median([x for x in vals(v, n) if isinstance(x, (int, float))])
                    if any(isinstance(x, (int, float)) for x in vals(v, n)) else None)
           for v in variants for n in names}

    md = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md.append("# msync workloads on stock and MS_ASYNC-patched Linux 6.1\n")
    md.append(f"Generated by `kernels/run.sh` on {now}; do not edit by hand. "
              "Kernels: Debian `linux-source-6.1`, `make tinyconfig` + `kernels/msync.config`, "
              "patches in `kernels/patches/` (see `kernels/README.md`).\n")
    try:
        md.append(open(os.path.join(a.work, "binary.txt")).read().strip() + ".\n")
    except OSError:
        pass
    md.append("Each boot runs under QEMU TCG with `-icount shift=0,sleep=off`: the guest clock advances "
              "1 ns per executed guest instruction, so **ns per probe ≈ guest instructions per probe** "
              "(user + kernel, including the writeback the patched kernels start inside msync). One "
              "exception: when the guest *blocks* (all tasks idle, e.g. msync waiting for a page that "
              "is under writeback with WB_SYNC_ALL, or for a disk request), QEMU with `sleep=off` jumps "
              "the virtual clock to the next timer deadline (the self-built kernels tick at HZ=250, so "
              "up to 4,000,000 ns per block). Blocking therefore shows up as large, run-to-run variable "
              "figures; pure CPU paths are exact and repeat to the instruction. The guest idles 5 s "
              "before the workloads so that boot-time kernel work is over. Every boot gets a fresh, "
              "byte-identical ext4 image on virtio-blk; sectors are the `write_sectors` delta of "
              "`/sys/block/vda/stat` (512-byte units) across `addrprobe msync-patch --json --guest "
              "--dir /mnt`.\n")
    md.append("| variant | what MS_ASYNC does |\n|---|---|")
    for v in variants:
        md.append(f"| {v} | {VARIANT_DOC.get(v, '')} |")
    md.append("")
    table = []
    if names:
        head = "| workload | " + " | ".join(
            f"{v} instr/probe" + (" | ratio" if v != "stock" and "stock" in variants else "")
            for v in variants) + " |"
        table.append(head)
        table.append("|---|" + "---:|" * (head.count("|") - 2))
        for n in names:
            cells = []
            for v in variants:
                cells.append(spread(vals(v, n)))
                if v != "stock" and "stock" in variants:
                    s, x = med.get(("stock", n)), med.get((v, n))
                    cells.append(f"{x / s:.2f}×" if s and x is not None else "–")
            table.append(f"| {n} | " + " | ".join(cells) + " |")
    else:
        table.append("_No workload results (the guest's `addrprobe msync-patch` printed no JSON with "
                     "`ns_per_probe`)._")
    # the one table kernels/run.sh prints: variant x workload
    one = []
    if names:
        one.append("| variant | workload | instructions per probe | ratio to stock | sectors written |")
        one.append("|---|---|---:|---:|---:|")
        for v in variants:
            for n in names:
                s_, x = med.get(("stock", n)), med.get((v, n))
                ratio = f"{x / s_:.2f}×" if s_ and x is not None else "–"
                secs = [b / 512 for b in vals(v, n, "device_bytes") if isinstance(b, (int, float))]
                one.append(f"| {v} | {n} | {spread(vals(v, n))} | {ratio} | {spread(secs)} |")
            rs = [r for r in runs if r["variant"] == v]
            one.append(f"| {v} | *whole boot (`/sys/block/vda/stat`)* | | | "
                       f"{spread([r['sectors_written'] for r in rs])} |")
    md.append("## Summary: variant × workload (median, min–max over runs)\n")
    md.append("Sectors (512 bytes) per workload are the `device_bytes` the workload itself measured; the "
              "whole-boot row is the `write_sectors` delta of `/sys/block/vda/stat` across all "
              "workloads, including filling the files.\n")
    md.extend(one)
    md.append("")
    md.append("## Instructions per probe, side by side\n")
    md.extend(table)
    md.append("")
    md.append("## Disk writes per boot (all workloads together)\n")
    md.append("| variant | runs | sectors written during workloads | after final sync | write I/Os |")
    md.append("|---|---:|---:|---:|---:|")
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        md.append(f"| {v} | {len(rs)} | {spread([r['sectors_written'] for r in rs])} | "
                  f"{spread([r['sectors_written_after_sync'] for r in rs])} | "
                  f"{spread([r['write_ios'] for r in rs])} |")
    md.append("")
    tput = [k for n in names for r in runs for k, x in r["workloads"].get(n, {}).items()
            if k in ("throughput", "device_bytes", "dirtied_bytes", "minor_faults")
            and isinstance(x, (int, float))]
    tput = list(dict.fromkeys(tput))
    if tput:
        md.append("## Other per-workload figures\n")
        md.append("`throughput` is per guest second, i.e. per 10⁹ guest instructions (unit as the "
                  "workload reports it); `device_bytes` is what the workload itself measured going "
                  "to the disk during its run; `dirtied_bytes` what it dirtied.\n")
        md.append("| workload | field | " + " | ".join(variants) + " |")
        md.append("|---|---|" + "---:|" * len(variants))
        for n in names:
            for k in tput:
                if not any(k in r["workloads"].get(n, {}) for r in runs):
                    continue
                unit = next((r["workloads"][n].get("throughput_unit") for r in runs
                             if n in r["workloads"] and k == "throughput"), None)
                label = f"{k} ({unit})" if unit else k
                md.append(f"| {n} | {label} | " + " | ".join(spread(vals(v, n, k), "{:,.0f}") for v in variants) + " |")
        md.append("")
    bad = [r for r in runs if r["boot"] != "ok" or r["rc"] not in ("0",) or r["result"] is None]
    if bad:
        md.append("Failed runs: " + "; ".join(
            f"{r['variant']} #{r['run']} (boot {r['boot']}, rc {r['rc'] or '–'})" for r in bad) + "\n")
    md.append("Reproduce: `kernels/run.sh` (builds everything it needs; `--repeats N` for more runs).\n")

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "msync-patch-kernels.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    summary = {
        "generated": now,
        "unit": "guest instructions per probe (QEMU -icount shift=0, 1 ns = 1 instruction)",
        "variants": {v: VARIANT_DOC.get(v, "") for v in variants},
        "median_instructions_per_probe": {v: {n: med[(v, n)] for n in names} for v in variants},
        "ratio_to_stock": {v: {n: (med[(v, n)] / med[("stock", n)]
                                   if med.get(("stock", n)) and med[(v, n)] is not None else None)
                               for n in names} for v in variants if "stock" in variants},
        "median_sectors_written_per_workload": {
            v: {n: (statistics.median(x) if (x := [b / 512 for b in vals(v, n, "device_bytes")
                                                   if isinstance(b, (int, float))]) else None)
                for n in names} for v in variants},
        "median_sectors_written_per_boot": {
            v: (statistics.median(x) if (x := [r["sectors_written"] for r in runs
                                               if r["variant"] == v and r["sectors_written"] is not None])
                else None) for v in variants},
        "binary": (open(os.path.join(a.work, "binary.txt")).read().strip()
                   if os.path.exists(os.path.join(a.work, "binary.txt")) else None),
        "runs": [{k: r[k] for k in ("variant", "run", "boot", "rc", "sectors_written",
                                    "sectors_written_after_sync", "write_ios", "workloads")}
                 for r in runs],
    }
    with open(os.path.join(a.out, "msync-patch-kernels.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    print("\n".join(one or table))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
