#!/usr/bin/env python3
"""Collect `scripts/kernel-matrix --arch arm64` guest output into the arm64
section of kernels.md and into kernels-arm64.json (standard library only).

Input: a work dir with kernels.tsv, tests.txt (the test binaries' names, absent
with --no-tests), binary.txt and one sub-directory per kernel holding meta.json,
report.json and guest.out (the guest's console: markers, report, test output).

The section sits between SECTION_BEGIN and SECTION_END in kernels.md; the rest of
the file (the x86_64 matrix, which scripts/lib/kernel_matrix_collect.py writes and
which keeps this section) is left as it is. A missing kernels.md gets a title.

Exit status: 0 ok; 1 when a kernel produced no parseable report, any backend gave
a false positive, or any test binary failed, was killed or did not report.
"""
import argparse
import datetime
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_matrix_collect import (  # noqa: E402
    ARM64_SECTION, MARK, availability_cell, esc, load_json, matrix_table)

SECTION_BEGIN, SECTION_END = ARM64_SECTION

SUMMARY = re.compile(r"test result: (\w+)\. (\d+) passed; (\d+) failed(?:; (\d+) ignored)?")


def extract(text, name):
    """Lines between ===ADDRPROBE-NAME-BEGIN=== and ===ADDRPROBE-NAME-END===, or None."""
    b, e = f"===ADDRPROBE-{name}-BEGIN===", f"===ADDRPROBE-{name}-END==="
    if b not in text:
        return None
    body = text.split(b, 1)[1]
    return body.split(e, 1)[0] if e in body else body


def marker(text, key):
    m = re.findall(r"^===ADDRPROBE-" + re.escape(key) + r"=(.*)===$", text, re.M)
    return m[-1] if m else None


def test_results(text, names):
    """{name: {rc, passed, failed, ignored, skipped, failures[]}} from the guest output."""
    out = {}
    for n in names:
        body = extract(text, f"TEST-{n}")
        rc = marker(text, f"TEST-{n}-RC")
        r = {"rc": None if rc is None else int(rc), "passed": 0, "failed": 0, "ignored": 0,
             "summaries": 0, "skipped": 0, "failures": []}
        if body is not None:
            for m in SUMMARY.finditer(body):
                r["summaries"] += 1
                r["passed"] += int(m.group(2))
                r["failed"] += int(m.group(3))
                r["ignored"] += int(m.group(4) or 0)
            r["skipped"] = len(re.findall(r"^skipped: ", body, re.M))
            r["failures"] = re.findall(r"^test (\S+) \.\.\. FAILED$", body, re.M)
            r["failures"] += re.findall(r"^FAIL(?:ED)?:? (\S+)", body, re.M)
            r["tail"] = body.strip().splitlines()[-40:]
        out[n] = r
    return out


ROW = re.compile(r"^\| (.+?) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) × (.+?) \|$", re.M)


def guarded_rows(text):
    """[(case, instructions median, fastest, ratio, baseline)] from a GUARDED block."""
    body = extract(text, "GUARDED")
    if body is None:
        return None
    return [(m.group(1), float(m.group(2)), float(m.group(3)), float(m.group(4)), m.group(5))
            for m in ROW.finditer(body)]


def test_cell(r):
    if r is None or r["rc"] is None:
        return "✗ no result"
    if r["rc"] == 137:
        return "✗ killed (timeout)"
    counts = f"{r['passed']}" if r["summaries"] else ""
    if r["rc"] == 0:
        extra = []
        if r["skipped"]:
            extra.append(f"{r['skipped']} skipped")
        if r["ignored"]:
            extra.append(f"{r['ignored']} ignored")
        return "✓" + (f" {counts}" if counts else "") + (f" ({', '.join(extra)})" if extra else "")
    failed = ", ".join(r["failures"][:4]) or f"exit {r['rc']}"
    return f"✗ {r['failed'] or ''} failed: {esc(failed)}".replace("✗  failed", "✗ failed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, action="append",
                    help="a work dir; repeat to collect several runs into one section")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()

    rows = []
    test_names = []  # every run's, for the table
    names_of = {}  # each run's own
    for w in a.work:
        with open(os.path.join(w, "kernels.tsv")) as f:
            rows += [[w] + line.rstrip("\n").split("\t") for line in f if line.strip()]
        try:
            with open(os.path.join(w, "tests.txt")) as f:
                names_of[w] = [n for n in (line.strip() for line in f) if n]
        except OSError:
            names_of[w] = []
        test_names += [n for n in names_of[w] if n not in test_names]
    kernels = []
    problems = []
    for w, *row in rows:
        kid = row[0]
        d = os.path.join(w, kid)
        meta = load_json(os.path.join(d, "meta.json")) or {}
        report = load_json(os.path.join(d, "report.json"))
        try:
            text = open(os.path.join(d, "guest.out"), encoding="utf-8", errors="replace").read()
        except OSError:
            text = ""
        ran = names_of[w] if "tests" in (meta.get("steps") or "") else []
        tests = test_results(text, ran)
        guarded = None
        if meta.get("icount_boot") not in (None, "", "skipped"):
            try:
                guarded = guarded_rows(open(os.path.join(d, "icount.out"), encoding="utf-8",
                                            errors="replace").read())
            except OSError:
                guarded = None
            if not guarded or meta.get("guarded_rc") != "0":
                problems.append(f"{kid}: the -icount boot gave no complete guarded_load table "
                                f"(boot {meta.get('icount_boot')}, rc {meta.get('guarded_rc')})")
        k = {"id": kid, "work": w, "label": row[1], "origin": row[3] if len(row) > 3 else "",
             "meta": meta, "report": report, "tests": tests, "guarded": guarded}
        kernels.append(k)
        if report is None:
            problems.append(f"{kid}: no parseable report (boot {meta.get('boot')}, rc {meta.get('report_rc')})")
        else:
            fp = max(int(report.get("false_positives") or 0),
                     sum(1 for r in report.get("matrix", []) if r.get("verdict") == "false-positive"))
            if fp:
                problems.append(f"{kid}: {fp} false positive(s)")
            k["false_positives"] = fp
        for n, r in tests.items():
            if r["rc"] != 0:
                why = "no result" if r["rc"] is None else ("killed by the timeout" if r["rc"] == 137 else f"exit {r['rc']}")
                problems.append(f"{kid}: test binary {n}: {why} {r['failures'][:6]}")

    md = [SECTION_BEGIN, "", "## arm64 (aarch64)", ""]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md.append(f"Generated by `scripts/kernel-matrix --arch arm64{' --quick' if a.quick else ''}` on "
              f"{now}; do not edit by hand.\n")
    for w in a.work:
        if not os.path.exists(os.path.join(w, "binary.txt")):
            continue
        line = open(os.path.join(w, "binary.txt")).read().strip()
        booted = [k["meta"].get("uname") or k["id"] for k in kernels if k["work"] == w]
        if len(a.work) > 1 and booted:
            line += " (" + ", ".join(f"`{esc(u)}`" for u in booted) + ")"
        md.append(line + ".\n")
    md.append("Every Debian cloud-arm64 kernel boots under QEMU with TCG (`qemu-system-aarch64 "
              "-accel tcg -M virt,mte=on -cpu max,pauth-impdef=on -smp 2 -m 2048`) from an initramfs "
              "holding Debian's static arm64 busybox, the static `addrprobe` binary and, unless "
              "`--no-tests`, every test binary of the workspace (`cargo test --no-run`, cross-built "
              "with `scripts/lib/aarch64_toolchain.sh`; doc tests do not cross-run). The guest runs "
              "`addrprobe report --json`, then each test binary from `/tmp`, one after the other, "
              "killed after `TEST_TIMEOUT` seconds (600). `-cpu max` gives the guest PAC (QEMU's "
              "implementation-defined algorithm), BTI, LVA/LPA2 and, with `mte=on`, MTE; the "
              "kernels are built with 48-bit virtual addresses, so user space ends at 2^48. "
              "Everything, std included, is built with `-Z branch-protection=pac-ret`, so the "
              "unwinder's tests walk frames whose return addresses are signed. A second boot under "
              "`-icount` counts the guarded loads' instructions (below).\n")
    for w in a.work:
        try:
            with open(os.path.join(w, "unavailable.tsv")) as f:
                for line in f:
                    if line.strip():
                        series, pkg = (line.rstrip("\n").split("\t") + [""])[:2]
                        md.append(f"Not booted: series {esc(series)}: its package ({esc(pkg)}) "
                                  f"could not be fetched.\n")
        except OSError:
            pass
    md.append("| kernel | uname -r | origin | CPU features | report | auto() | auto() with signal handler | false positives | test binaries |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for k in kernels:
        r = k["report"] or {}
        feats = ", ".join((r.get("context") or {}).get("cpu_features") or []) or "–"
        ok_tests = sum(1 for t in k["tests"].values() if t["rc"] == 0)
        tests_cell = f"{ok_tests}/{len(k['tests'])} pass" if k["tests"] else "not run"
        md.append(f"| {esc(k['label'])} | `{esc(k['meta'].get('uname') or '?')}` | {esc(k['origin'])} | "
                  f"{esc(feats)} | {'ok' if k['report'] else 'missing'} | {esc(r.get('auto'))} | "
                  f"{esc(r.get('auto_with_signal_handler'))} | {k.get('false_positives', '?')} | {tests_cell} |")
    md.append("")
    cpus = sorted({(k["report"] or {}).get("cpu") for k in kernels if k["report"]} - {None})
    if cpus:
        md.append("Guest CPU as the kernels see it: " + ", ".join(f"`{esc(c)}`" for c in cpus) + ".\n")

    if test_names:
        md.append("### Test binaries\n")
        md.append("✓ N: the binary exited 0 after N passing tests (its libtest summaries; the "
                  "`harness = false` binaries print a summary of the same form); \"skipped\" counts the "
                  "tests that say why they cannot run here (`skipped: ...` lines); ✓ 0: every test "
                  "of the binary is compiled for x86_64 only.\n")
        md.append("| test binary | " + " | ".join(esc(k["meta"].get("uname") or k["id"]) for k in kernels) + " |")
        md.append("|---|" + "---|" * len(kernels))
        for n in test_names:
            md.append(f"| {esc(n)} | " + " | ".join(
                (test_cell(k["tests"].get(n)) if n in k["tests"] else "not run") if k["tests"] else "not run"
                for k in kernels) + " |")
        md.append("")

    timed = [k for k in kernels if k.get("guarded")]
    if timed:
        md.append("### Guarded loads in guest instructions\n")
        md.append("A second boot per kernel under `-icount shift=0,sleep=off -smp 1`, where the "
                  "guest clock advances one nanosecond per guest instruction, runs the "
                  "`guarded_load` bench (`benches/guarded_load.rs`, release, static) as "
                  "`guarded_load --paired`: each round runs every case once over a batch of "
                  "iterations; a figure is guest instructions per iteration (the median over the "
                  "rounds; the signal deliveries of invalid probes include the kernel's), a ratio "
                  "the median of the per-round ratios to the baseline of the same round. \"A load "
                  "call\" is an `#[inline(never)]` function doing one volatile 8-byte load. "
                  "Target: a valid SignalGuard probe within 1.5 × a load call.\n")
        md.append("| case | " + " | ".join(esc(k["meta"].get("uname") or k["id"]) for k in timed) + " |")
        md.append("|---|" + "---|" * len(timed))
        cases = []
        for k in timed:
            for c in k["guarded"]:
                if c[0] not in cases:
                    cases.append(c[0])
        for c in cases:
            cells = []
            for k in timed:
                r = next((x for x in k["guarded"] if x[0] == c), None)
                cells.append("–" if r is None else f"{r[1]:.1f} ({r[3]:.2f} × {esc(r[4])})")
            md.append(f"| {esc(c)} | " + " | ".join(cells) + " |")
        md.append("")

    names = []
    for k in kernels:
        for b in (k["report"] or {}).get("backends", []) or []:
            if b.get("name") not in names:
                names.append(b.get("name"))
    if names:
        md.append("### Backend availability\n")
        md.append("| backend | " + " | ".join(esc(k["meta"].get("uname") or k["id"]) for k in kernels) + " |")
        md.append("|---|" + "---|" * len(kernels))
        for b in names:
            cells = []
            for k in kernels:
                bs = {x.get("name"): x for x in (k["report"] or {}).get("backends", []) or []}
                cells.append(availability_cell(bs.get(b)))
            md.append(f"| {esc(b)} | " + " | ".join(cells) + " |")
        md.append("")
        md.append("### Conformance matrix per kernel\n")
        md.append("Legend: " + ", ".join(f"{v} {k}" for k, v in MARK.items()) + ".\n")
        for k in kernels:
            if k["report"]:
                md.append(f"#### {esc(k['label'])}\n")
                md.append(matrix_table(k["report"], names))
                md.append("")
    md.append("Reproduce: `scripts/kernel-matrix --arch arm64` (all kernels) or "
              "`scripts/kernel-matrix --arch arm64 --quick` (Debian 6.12, report and tests).\n")
    md.append(SECTION_END)
    section = "\n".join(md) + "\n"

    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "kernels.md")
    try:
        old = open(path, encoding="utf-8").read()
    except OSError:
        old = "# addrprobe on real kernels\n"
    if SECTION_BEGIN in old and SECTION_END in old:
        head, rest = old.split(SECTION_BEGIN, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        new = head + section + (("\n" + tail) if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    summary = []
    for k in kernels:
        summary.append({"id": k["id"], "label": k["label"], "origin": k["origin"],
                        "uname": k["meta"].get("uname"), "boot": k["meta"].get("boot"),
                        "seconds": k["meta"].get("seconds"),
                        "cpu": (k["report"] or {}).get("cpu"),
                        "cpu_features": ((k["report"] or {}).get("context") or {}).get("cpu_features"),
                        "auto": (k["report"] or {}).get("auto"),
                        "false_positives": k.get("false_positives"),
                        "guarded_load_icount": None if k.get("guarded") is None else [
                            {"case": c, "instructions": i, "fastest": f, "ratio": r, "baseline": b}
                            for c, i, f, r, b in k["guarded"]],
                        "backends": (k["report"] or {}).get("backends"),
                        "tests": {n: {x: t[x] for x in ("rc", "passed", "failed", "ignored", "skipped", "failures")}
                                  for n, t in k["tests"].items()}})
    with open(os.path.join(a.out, "kernels-arm64.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=None, separators=(",", ":"))
        f.write("\n")
    for k in kernels:
        for n, t in k["tests"].items():
            if t["rc"] != 0 and t.get("tail"):
                print(f"--- {k['id']}: {n} (rc {t['rc']}), last lines:", file=sys.stderr)
                print("\n".join(t["tail"]), file=sys.stderr)
    for p in problems:
        print("collector:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
