#!/usr/bin/env python3
"""Prints the Markdown table of an `addrprobe msync-patch --json` file (as docs/msync-patch.md
shows it).

    scripts/msync-patch-table.py FILE.json [--io]

--io adds the minor-fault and dirtied-bytes columns.
"""
import json
import sys


def fmt(v, spec, none="–"):
    return none if v is None else format(v, spec)


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    io = "--io" in argv[1:]
    d = json.load(open(argv[0]))
    head = ["workload", "fs", "mode", "ns/probe (min–max)", "× stock", "throughput",
            "× stock", "per CPU-s × stock", "disk MB/s"]
    if io:
        head += ["dirtied MB/s", "minor faults"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|")
    for r in d["results"]:
        dev = r.get("device_bytes_per_s")
        cells = [
            r["workload"], r["fs"], r["mode"],
            f'{r["ns_per_probe"]:.0f} ({r["ns_per_probe_min"]:.0f}–{r["ns_per_probe_max"]:.0f})',
            fmt(r.get("probe_cost_vs_stock"), ".2f"),
            f'{r["throughput"]:.0f} {r["throughput_unit"]}',
            fmt(r.get("throughput_vs_stock"), ".2f"),
            fmt(r.get("cpu_throughput_vs_stock"), ".2f"),
            fmt(None if dev is None else dev / 1e6, ".1f"),
        ]
        if io:
            dr = r.get("dirtied_bytes_per_s")
            cells += [fmt(None if dr is None else dr / 1e6, ".1f"), str(r.get("minor_faults"))]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
