#!/usr/bin/env python3
"""Draws docs/msync-patch.svg from `addrprobe msync-patch --json` output.

    scripts/msync-patch-chart.py EMULATION.json [--kernels KERNELS.json] [--out FILE.svg]
                                 [--title TEXT]

Two panels, one row per (workload, file system):
  left:  probe cost of each patched mode relative to stock (log scale);
  right: the application's throughput relative to stock.
The emulation's modes are `a-alone` and `a+b`. With --kernels (the colleague's
docs/msync-patch-kernels.json), the real patched kernels' ratios are drawn as
extra bars when that file has rows of the shape
  {"workload": ..., "fs": ..., "variant": ..., "probe_cost_vs_stock": x, "throughput_vs_stock": y}
(any other shape is ignored, and the chart says so).
Plain SVG, no dependencies.
"""
import json
import math
import statistics
import sys
from html import escape

COLORS = {"a-alone": "#d62728", "a+b": "#ff7f0e"}
# Real-kernel variants next to the emulated mode they correspond to.
KNOWN = {"file-none": (0, "#7f1010", "A alone, WB_SYNC_NONE"),
         "wb-none": (1, "#a65300", "A + B, WB_SYNC_NONE"),
         "wb-all": (2, "#6a3d9a", "A + B, WB_SYNC_ALL")}
KCOLORS = ["#1f77b4", "#17becf", "#2ca02c"]


def load_rows(path):
    with open(path) as f:
        doc = json.load(f)
    return doc, doc.get("results", [])


def kernel_rows(path):
    """Rows {workload, fs, variant, probe_cost_vs_stock, throughput_vs_stock} from the
    real-kernel JSON: either a flat `ratios` list, or kernels/run.sh's `ratio_to_stock`
    ({variant: {"workload (fs)": ratio}}) with throughputs taken from `runs` (medians)."""
    if not path:
        return [], None
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        return [], f"kernels file unreadable: {e}"
    if not isinstance(doc, dict):
        return [], "kernels file is not an object: not drawn"
    rows = doc.get("ratios")
    if isinstance(rows, list):
        ok = [r for r in rows if isinstance(r, dict) and {"workload", "fs", "variant"} <= r.keys()]
        return ok, None
    ratios = doc.get("ratio_to_stock")
    if not isinstance(ratios, dict):
        return [], "kernels file has neither 'ratios' nor 'ratio_to_stock': not drawn"
    tput = {}
    for run in doc.get("runs", []):
        for key, w in (run.get("workloads") or {}).items():
            if isinstance(w, dict) and isinstance(w.get("throughput"), (int, float)):
                tput.setdefault((run.get("variant"), key), []).append(w["throughput"])
    out = []
    for variant, per in ratios.items():
        if variant == "stock" or not isinstance(per, dict):
            continue
        for key, ratio in per.items():
            name, _, fs = key.partition(" (")
            fs = fs.rstrip(")")
            t, t0 = tput.get((variant, key)), tput.get(("stock", key))
            out.append({
                "workload": name, "fs": fs, "variant": variant,
                "probe_cost_vs_stock": ratio,
                "throughput_vs_stock": (statistics.median(t) / statistics.median(t0))
                if t and t0 else None,
            })
    return out, None


def main(argv):
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    emu = argv[0]
    kpath = None
    out = "docs/msync-patch.svg"
    title = None
    i = 1
    while i < len(argv):
        if argv[i] == "--kernels":
            kpath = argv[i + 1]
            i += 2
        elif argv[i] == "--title":
            title = argv[i + 1]
            i += 2
        elif argv[i] == "--out":
            out = argv[i + 1]
            i += 2
        else:
            print(f"unknown argument {argv[i]}", file=sys.stderr)
            return 2
    doc, rows = load_rows(emu)
    krows, knote = kernel_rows(kpath)
    keys = []
    for r in rows:
        k = (r["workload"], r["fs"])
        if k not in keys:
            keys.append(k)
    variants = sorted({r["variant"] for r in krows}, key=lambda v: (KNOWN.get(v, (9,))[0], v))
    kser = []
    for j, v in enumerate(variants):
        _, color, what = KNOWN.get(v, (9, KCOLORS[j % len(KCOLORS)], ""))
        kser.append((v, color, f"real 6.1 kernel {v}" + (f" ({what})" if what else "")))
    series = [("a-alone", COLORS["a-alone"], "emulated A alone (6.18)")]
    series += [k for k in kser if k[0] == "file-none"]
    series += [("a+b", COLORS["a+b"], "emulated A + B (6.18)")]
    series += [k for k in kser if k[0] != "file-none"]

    def value(k, s, field):
        name = s[0]
        if name in COLORS:
            for r in rows:
                if (r["workload"], r["fs"]) == k and r["mode"] == name:
                    # the profiler's CPU-time throughput is the one this noisy host can measure
                    if field == "throughput_vs_stock" and r.get("cpu_throughput_vs_stock") is not None:
                        return r["cpu_throughput_vs_stock"]
                    return r.get(field)
        else:
            for r in krows:
                if (r["workload"], r["fs"]) == k and r["variant"] == name:
                    return r.get(field)
        return None

    bar_h, gap = 11, 10
    group_h = len(series) * bar_h + gap
    top, left_lab = 70, 250
    pw = 330
    width = left_lab + 2 * pw + 120
    height = top + len(keys) * group_h + 30 + 18 * len(series)
    o = []
    o.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">')
    o.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    title = title or (f"msync(MS_ASYNC) patch vs stock — emulation on {doc.get('kernel', '?')}"
             f" ({doc.get('dir', '?')}, {doc.get('config', {}).get('rounds', '?')} rounds)")
    o.append(f'<text x="10" y="18" font-size="13" font-weight="bold">{escape(title)}</text>')
    # panel 1: log scale 1x .. 10^4 x
    x1 = left_lab
    decades = 3
    o.append(f'<text x="{x1}" y="40" font-weight="bold">probe cost × stock (log)</text>')
    x2 = left_lab + pw + 60
    o.append(f'<text x="{x2}" y="40" font-weight="bold">application throughput × stock</text>')
    ybot = top + len(keys) * group_h
    for d in range(decades + 1):
        x = x1 + pw * d / decades
        o.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{ybot}" stroke="#ddd"/>')
        o.append(f'<text x="{x:.1f}" y="{top - 12}" text-anchor="middle">{10 ** d:g}×</text>')
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = x2 + pw * t / 1.25
        o.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{ybot}" '
                 f'stroke="{"#999" if t == 1.0 else "#ddd"}"/>')
        o.append(f'<text x="{x:.1f}" y="{top - 12}" text-anchor="middle">{t:g}</text>')
    for gi, k in enumerate(keys):
        y0 = top + gi * group_h
        o.append(f'<text x="{left_lab - 8}" y="{y0 + group_h / 2:.1f}" text-anchor="end">'
                 f'{escape(k[0])} ({escape(k[1])})</text>')
        for si, s in enumerate(series):
            y = y0 + si * bar_h
            v = value(k, s, "probe_cost_vs_stock")
            if isinstance(v, (int, float)) and v > 0:
                w = max(1.0, pw * min(math.log10(max(v, 1.0)), decades) / decades)
                o.append(f'<rect x="{x1}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{s[1]}"/>')
                o.append(f'<text x="{x1 + w + 3:.1f}" y="{y + bar_h - 3}" font-size="9">{v:.3g}×</text>')
            t = value(k, s, "throughput_vs_stock")
            if isinstance(t, (int, float)) and t >= 0:
                w = max(1.0, pw * min(t, 1.25) / 1.25)
                o.append(f'<rect x="{x2}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{s[1]}"/>')
                o.append(f'<text x="{x2 + w + 3:.1f}" y="{y + bar_h - 3}" font-size="9">{t:.2f}</text>')
    ly = ybot + 20
    for si, s in enumerate(series):
        o.append(f'<rect x="{x1}" y="{ly + si * 18 - 9}" width="12" height="10" fill="{s[1]}"/>')
        o.append(f'<text x="{x1 + 18}" y="{ly + si * 18}">{escape(s[2])}</text>')
    o.append(f'<text x="{x2}" y="{ly}">Throughput of the emulated profiler: per second of its CPU time;</text>')
    o.append(f'<text x="{x2}" y="{ly + 14}">of the kernels: per 10⁹ guest instructions (QEMU -icount).</text>')
    o.append(f'<text x="{x2}" y="{ly + 28}">Unwinders: whole rewrite + walk iterations per second.</text>')
    if knote:
        o.append(f'<text x="{x2}" y="{ly + 46}" fill="#a00">{escape(knote)}</text>')
    o.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(o) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
