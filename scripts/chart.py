#!/usr/bin/env python3
"""Cost per backend, valid and invalid, log scale: an SVG from `addrprobe bench --json`.

usage: scripts/chart.py RESULTS.json OUT.svg

For each backend: the 8-byte probe cost on valid resident memory and on each invalid case
(PROT_NONE, unmapped, kernel address; the worst of them is drawn), plus the floors
(getppid syscall, plain volatile load) as reference lines. Standard library only.
"""
import json, math, sys

src, dst = sys.argv[1], sys.argv[2]
data = json.load(open(src))
rows = [r for r in data["probe_costs"] if r["len"] == 8]
def cost(b, case):
    for r in rows:
        if r["backend"] == b and r["case"] == case and r["ns"] is not None:
            return max(r["ns"], 0.1)
    return None

backends = []
for r in rows:
    b = r["backend"]
    if b not in backends and not b.startswith(("bare:", "floor:", "full-copy:")):
        backends.append(b)
bars = []
for b in backends:
    valid = cost(b, "valid-resident")
    inv = [c for c in (cost(b, k) for k in ("prot-none", "unmapped")) if c]
    bars.append((b, valid, max(inv) if inv else None))
bars.sort(key=lambda x: x[1] or 1e12)
getppid = cost("floor:getppid", "valid-resident")
load = cost("floor:volatile-load", "valid-resident")

W, H, left, top, rowh = 860, 70 + 34 * len(bars), 190, 50, 34
lo, hi = 0.1, 1e6
def x(ns):
    return left + (math.log10(ns) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (W - left - 30)
ctx = data.get("context", {})
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>',
       f'<text x="10" y="20" font-size="14" font-weight="bold">addrprobe: ns per 8-byte probe (log scale) — lower is better</text>',
       f'<text x="10" y="38" fill="#555">kernel {ctx.get("kernel","?")}, {ctx.get("cpu","?")}, nproc {ctx.get("nproc","?")}. Blue: valid resident; orange: worst of PROT_NONE / unmapped.</text>']
for d in range(-1, 7):
    xv = x(10 ** d)
    out.append(f'<line x1="{xv:.1f}" y1="{top}" x2="{xv:.1f}" y2="{H-20}" stroke="#ddd"/>')
    label = {-1: "0.1 ns", 0: "1 ns", 1: "10 ns", 2: "100 ns", 3: "1 µs", 4: "10 µs", 5: "100 µs", 6: "1 ms"}[d]
    out.append(f'<text x="{xv:.1f}" y="{H-6}" text-anchor="middle" fill="#555">{label}</text>')
for ref, name, col in ((getppid, "getppid syscall", "#999"), (load, "volatile load", "#999")):
    if ref:
        xv = x(ref)
        out.append(f'<line x1="{xv:.1f}" y1="{top}" x2="{xv:.1f}" y2="{H-20}" stroke="{col}" stroke-dasharray="4,3"/>')
        out.append(f'<text x="{xv+3:.1f}" y="{top-2}" fill="#555">{name} {ref:.1f} ns</text>')
for i, (b, v, inv) in enumerate(bars):
    y = top + 10 + i * rowh
    out.append(f'<text x="{left-8}" y="{y+14}" text-anchor="end">{b}</text>')
    if v:
        out.append(f'<rect x="{left}" y="{y}" width="{max(x(v)-left,1):.1f}" height="11" fill="#3b7dd8"/>')
        out.append(f'<text x="{x(v)+4:.1f}" y="{y+10}" fill="#234">{v:.1f}</text>')
    if inv:
        out.append(f'<rect x="{left}" y="{y+12}" width="{max(x(inv)-left,1):.1f}" height="11" fill="#e8862a"/>')
        out.append(f'<text x="{x(inv)+4:.1f}" y="{y+22}" fill="#642">{inv:.1f}</text>')
out.append("</svg>")
open(dst, "w").write("\n".join(out) + "\n")
