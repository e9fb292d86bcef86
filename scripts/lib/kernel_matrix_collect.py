#!/usr/bin/env python3
"""Collect scripts/kernel-matrix guest output into kernels.md, kernels.svg and
kernels.json (standard library only).

Input: a work dir with one sub-directory per kernel holding meta.json,
report.json (`addrprobe report --json`, normal TCG boot), bench.json
(`addrprobe bench --quick --json` under -icount shift=0) and
report-icount.json (a report from the -icount boot, fallback for costs).

Exit status: 0 ok; 1 when a kernel produced no parseable report or any backend
gave a false positive on any kernel.
"""
import argparse
import datetime
import html
import json
import math
import os
import re
import sys

MARK = {
    "ok": "✓",
    "false-positive": "✗ **FP**",
    "false-negative": "✗ FN",
    "wrong-result": "✗ wrong",
    "known-false-negative": "~ kFN",
    "unsound-yes": "~ uY",
    "unavailable": "–",
}


# the markers around the arm64 section that scripts/lib/kernel_matrix_arm64.py writes
ARM64_SECTION = ("<!-- arm64 matrix: scripts/kernel-matrix --arch arm64 -->",
                 "<!-- end of the arm64 matrix -->")


TEST_LEGEND = ("✓ N: the binary exited 0 after N passing tests (its libtest summaries; the "
               "`harness = false` binaries print a summary of the same form); \"skipped\" counts the "
               "tests that say why they cannot run here (`skipped: ...` lines, listed under the "
               "table); ✓ 0: every test of the binary is compiled for another architecture; "
               "· N s: the binary's wall seconds in the guest (emulated, so only comparable with "
               "each other).\n")


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
        secs = marker(text, f"TEST-{n}-SECONDS")
        r = {"rc": int(rc) if rc is not None and rc.isdigit() else None, "passed": 0, "failed": 0, "ignored": 0,
             "summaries": 0, "skipped": 0, "failures": [],
             "seconds": int(secs) if secs and secs.isdigit() else None}
        if body is not None:
            # one harness per binary, and its summary comes last: earlier ones are the
            # output of child processes that --show-output printed
            found = list(SUMMARY.finditer(body))
            r["summaries"] = len(found)
            if found:
                m = found[-1]
                r["passed"] = int(m.group(2))
                r["failed"] = int(m.group(3))
                r["ignored"] = int(m.group(4) or 0)
            # at the start of a line, or after a child's "test name ... " (a test that prints
            # what its child process wrote)
            r["skip_reasons"] = re.findall(r"^(?:test \S+ \.\.\. )?skipped: (.*)$", body, re.M)
            r["skipped"] = len(r["skip_reasons"])
            r["failures"] = re.findall(r"^test (\S+) \.\.\. FAILED$", body, re.M)
            r["failures"] += re.findall(r"^FAIL(?:ED)?:? (\S+)", body, re.M)
            r["tail"] = body.strip().splitlines()[-40:]
        out[n] = r
    return out


def tests_summary(tests):
    """'N/M pass' (+ skipped count) for a kernel's test binaries, 'not run' without any."""
    if not tests:
        return "not run"
    ok = sum(1 for t in tests.values() if t["rc"] == 0)
    skipped = sum(t.get("skipped", 0) for t in tests.values())
    return f"{ok}/{len(tests)} pass" + (f" ({skipped} tests skipped)" if skipped else "")


def test_cell(r):
    if r is None or r["rc"] is None:
        return "✗ no result"
    secs = f" · {r['seconds']} s" if r.get("seconds") is not None else ""
    return _test_verdict(r) + secs


def _test_verdict(r):
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



def skip_notes(per_kernel):
    """Markdown lines listing every reason a test gave for skipping, with the tests that gave it
    and the kernels they gave it on; per_kernel: [(kernel name, test_results(...))]. A reason
    of the form "<test>: <why>" is grouped by its why."""
    seen = {}
    for short, tests in per_kernel:
        for n, r in tests.items():
            for line in r.get("skip_reasons", []):
                test, sep, why = line.strip().partition(": ")
                if not sep or " " in test:
                    test, why = "", line.strip()
                tests_, kernels = seen.setdefault((n, why), ([], []))
                if test and test not in tests_:
                    tests_.append(test)
                if short not in kernels:
                    kernels.append(short)
    if not seen:
        return []
    lines = ["Skipped tests, in their own words:\n"]
    for (n, why), (tests_, ks) in seen.items():
        which = ""
        if tests_:
            shown = ", ".join(esc(t) for t in tests_[:3]) + (", …" if len(tests_) > 3 else "")
            which = f" ({len(tests_)} test{'s' if len(tests_) > 1 else ''}: {shown})"
        lines.append(f"- {esc(n)}{which}: {esc(why)} ({', '.join(f'`{esc(k)}`' for k in ks)})")
    lines.append("")
    return lines


def load_json(path):
    """Parse the first JSON object in a file; None when absent or invalid."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    # tolerate stray lines around the object (e.g. warnings on stdout)
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
            return obj
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None


def fmt_num(v):
    if v is None:
        return "–"
    if isinstance(v, (int, float)):
        if v >= 100:
            return f"{v:,.0f}"
        return f"{v:.1f}"
    return str(v)


def esc(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


class Kernel:
    def __init__(self, d, work=None, test_names=()):
        self.dir = d
        self.work = work
        self.meta = load_json(os.path.join(d, "meta.json")) or {}
        self.id = self.meta.get("id", os.path.basename(d))
        self.label = self.meta.get("label", self.id)
        self.report = load_json(os.path.join(d, "report.json"))
        self.bench = load_json(os.path.join(d, "bench.json"))
        self.report_icount = load_json(os.path.join(d, "report-icount.json"))
        # the test binaries boot 1 ran (its steps say whether it ran them)
        self.tests = {}
        if "tests" in (self.meta.get("steps") or ""):
            try:
                text = open(os.path.join(d, "report.out"), encoding="utf-8", errors="replace").read()
            except OSError:
                text = ""
            self.tests = test_results(text, test_names)

    def merge(self, later):
        """Take a later run's results of this kernel: its report and bench where it has them,
        and its test binaries' results over these."""
        for attr in ("report", "bench", "report_icount"):
            if getattr(later, attr) is not None:
                setattr(self, attr, getattr(later, attr))
        if later.bench is not None:
            self.meta = dict(self.meta, **{x: later.meta.get(x) for x in ("boot_bench", "bench_rc")})
        if later.report is not None:
            self.meta = dict(self.meta, **{x: later.meta.get(x) for x in ("uname", "boot_report", "report_rc")})
        self.tests.update(later.tests)
        self.rerun = getattr(self, "rerun", set()) | set(later.tests)
        self.works = getattr(self, "works", [self.work]) + [later.work]

    @property
    def short(self):
        return self.meta.get("uname") or self.id

    def false_positives(self):
        n = 0
        if self.report:
            fp = self.report.get("false_positives")
            if isinstance(fp, int):
                n = max(n, fp)
            rows = [r for r in self.report.get("matrix", []) if r.get("verdict") == "false-positive"]
            n = max(n, len(rows))
        return n

    def backends(self):
        return (self.report or {}).get("backends", []) or []

    def costs(self):
        """{(backend, case, len): instructions} from the icount boot."""
        out = {}
        src = None
        if self.bench and isinstance(self.bench.get("probe_costs"), list):
            src = "bench"
            for r in self.bench["probe_costs"]:
                key = (r.get("backend"), str(r.get("case")), r.get("len"))
                out[key] = r.get("ns")
        elif self.report_icount and isinstance(self.report_icount.get("costs"), list):
            src = "report"
            for r in self.report_icount["costs"]:
                out[(r.get("backend"), "valid", None)] = r.get("valid_ns")
                out[(r.get("backend"), "invalid", None)] = r.get("invalid_ns")
        return out, src

    def getppid(self):
        for obj in (self.bench, self.report_icount):
            if obj and isinstance(obj.get("getppid_ns"), (int, float)):
                return obj["getppid_ns"]
        return None


CASE_ORDER = ["valid-resident", "valid", "valid-untouched", "unmapped", "invalid", "prot-none", "kernel"]


def case_rank(c):
    return (CASE_ORDER.index(c) if c in CASE_ORDER else len(CASE_ORDER), str(c))


def summarize(k):
    """Compact per-kernel record for kernels.json (the raw guest output stays
    in the work dir)."""
    r = k.report or {}
    costs, src = k.costs()
    verdicts = {}
    for row in r.get("matrix", []) or []:
        verdicts.setdefault(row.get("backend"), {})[row.get("fixture")] = row.get("verdict")
    return {
        "id": k.id, "label": k.label, "origin": k.meta.get("origin"),
        "uname": k.meta.get("uname"), "boot_report": k.meta.get("boot_report"),
        "boot_bench": k.meta.get("boot_bench"), "report_rc": k.meta.get("report_rc"),
        "bench_rc": k.meta.get("bench_rc"),
        "cpu": r.get("cpu"), "auto": r.get("auto"),
        "auto_with_signal_handler": r.get("auto_with_signal_handler"),
        "false_positives": r.get("false_positives"), "failures": r.get("failures"),
        "backends": r.get("backends"),
        "vulnerabilities": (r.get("context") or {}).get("vulnerabilities"),
        "verdicts": verdicts,
        "instructions_source": src,
        "instructions_per_probe": [{"backend": b, "case": c, "len": ln, "instructions": v}
                                   for (b, c, ln), v in costs.items()],
        "getppid_instructions": k.getppid(),
        "tests": {n: {x: t.get(x) for x in ("rc", "passed", "failed", "ignored", "skipped",
                                            "skip_reasons", "failures", "seconds")}
                  for n, t in k.tests.items()},
    }


def backend_order(kernels):
    names = []
    for k in kernels:
        for b in k.backends():
            if b.get("name") not in names:
                names.append(b.get("name"))
    return names


def availability_cell(b):
    if b is None:
        return "?"
    if b.get("available"):
        st = b.get("self_test")
        return "✓" if st in (None, "pass", "passed", "ok") else f"✓ (self-test {esc(st)})"
    why = b.get("reason") or ""
    if "unavailable here: " in why:
        why = why.split("unavailable here: ", 1)[1]
    errno = b.get("errno")
    txt = esc(why) if why else "unavailable"
    if errno is not None and str(errno) not in txt:
        txt += f" (errno {errno})"
    return f"✗ {txt}"


def matrix_table(report, backends):
    fixtures = list(report.get("fixtures") or [])
    cells = {}
    truth = {}
    for r in report.get("matrix", []) or []:
        f = r.get("fixture")
        if f not in fixtures:
            fixtures.append(f)
        if r.get("truth") is not None:
            truth[f] = r.get("truth")
        v = r.get("verdict", "?")
        mark = MARK.get(v, esc(v))
        if v in ("false-positive", "false-negative", "wrong-result") and r.get("answer") is not None:
            mark += f" ({esc(r.get('answer'))})"
        if r.get("read_ok") is False:
            mark += " ✗ read bytes differ"
        cells[(f, r.get("backend"))] = mark
    used = [b for b in backends if any((f, b) in cells for f in fixtures)]
    tcol = bool(truth)
    lines = ["| fixture | " + ("truth | " if tcol else "") + " | ".join(used) + " |",
             "|---|" + ("---|" if tcol else "") + ":---:|" * len(used)]
    for f in fixtures:
        lines.append(f"| {esc(f)} | " + (f"{esc(truth.get(f, ''))} | " if tcol else "")
                     + " | ".join(cells.get((f, b), "") for b in used) + " |")
    return "\n".join(lines)


def svg_chart(kernels, backends):
    """Grouped horizontal bars: instructions per probe, log scale, one panel
    per case (valid / invalid)."""
    series = []  # (kernel label, {(backend, case): value})
    cases = []
    for k in kernels:
        costs, _ = k.costs()
        vals = {}
        for (b, case, ln), v in sorted(costs.items(), key=lambda kv: (kv[0][2] if isinstance(kv[0][2], (int, float)) else -1)):
            if not isinstance(v, (int, float)) or v <= 0:
                continue
            # smallest len per (backend, case) is what the chart shows
            vals.setdefault((b, case), v)
            if case not in cases:
                cases.append(case)
        if vals:
            series.append((k.short, vals))
    if not series:
        return None
    cases = sorted(cases, key=case_rank)
    valid = [c for c in cases if str(c).startswith("valid")][:1]
    invalid = [c for c in cases if c in ("unmapped", "invalid")][:1]
    cases = (valid + invalid) or cases[:2]
    extra = ["auto"] if any(("auto", c) in s[1] for s in series for c in cases) else []
    rows = [b for b in backends + extra if any((b, c) in s[1] for s in series for c in cases)]
    palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
               "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
    shown = [v for _, vals in series for (b, c), v in vals.items() if b in rows and c in cases]
    if not shown:
        return None
    vmax, vmin = max(shown), min(shown)
    lo = 10 ** math.floor(math.log10(max(vmin, 1)))
    if vmin / lo < 3:
        lo /= 10  # keep the smallest bars visibly long on the log axis
    hi = 10 ** math.ceil(math.log10(vmax))
    if hi <= lo:
        hi = lo * 10
    bar_h, gap = 7, 8
    group_h = bar_h * len(series) + gap
    left, plot_w, right = 130, 520, 40
    panel_h = group_h * len(rows) + 40
    legend_h = 16 * len(series) + 10
    width = left + plot_w + right
    height = 40 + panel_h * len(cases) + legend_h

    def x(v):
        return left + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">'
           'addrprobe: guest instructions per probe (QEMU -icount shift=0, log scale)</text>']
    y0 = 40
    for case in cases:
        out.append(f'<text x="{left}" y="{y0 - 4}" font-weight="bold">case: {html.escape(str(case))}</text>')
        d = lo
        while d <= hi * 1.0001:
            xx = x(d)
            out.append(f'<line x1="{xx:.1f}" y1="{y0}" x2="{xx:.1f}" y2="{y0 + group_h * len(rows)}" stroke="#ddd"/>')
            out.append(f'<text x="{xx:.1f}" y="{y0 + group_h * len(rows) + 12}" text-anchor="middle" fill="#555">{int(d):,}</text>')
            d *= 10
        for i, b in enumerate(rows):
            gy = y0 + i * group_h
            out.append(f'<text x="{left - 6}" y="{gy + group_h / 2 + 3:.1f}" text-anchor="end">{html.escape(str(b))}</text>')
            for j, (_, vals) in enumerate(series):
                v = vals.get((b, case))
                if v is None:
                    continue
                yy = gy + j * bar_h
                out.append(f'<rect x="{left}" y="{yy}" width="{max(x(v) - left, 1):.1f}" height="{bar_h - 1}" '
                           f'fill="{palette[j % len(palette)]}"><title>{html.escape(str(b))} {html.escape(case)} '
                           f'{html.escape(series[j][0])}: {v:.0f}</title></rect>')
        y0 += panel_h
    for j, (name, _) in enumerate(series):
        yy = y0 + j * 16
        out.append(f'<rect x="{left}" y="{yy}" width="10" height="10" fill="{palette[j % len(palette)]}"/>')
        out.append(f'<text x="{left + 16}" y="{yy + 9}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, action="append",
                    help="a work dir; repeat to collect several runs (e.g. kernels booted in "
                         "different sessions) into one page, in the order given")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()

    kernels = []
    test_names = []  # every run's, in order, for the table
    for w in a.work:
        tsv = os.path.join(w, "kernels.tsv")
        order = []
        if os.path.exists(tsv):
            with open(tsv) as f:
                order = [line.split("\t")[0] for line in f if line.strip()]
        try:
            with open(os.path.join(w, "tests.txt")) as f:
                names = [n for n in (line.strip() for line in f) if n]
        except OSError:
            names = []
        test_names += [n for n in names if n not in test_names]
        for i in order:
            if not os.path.isdir(os.path.join(w, i)):
                continue
            k = Kernel(os.path.join(w, i), w, names)
            prev = next((x for x in kernels if x.id == i), None)
            if prev is None:
                kernels.append(k)
            else:
                # a later run of the same kernel (e.g. a rerun of some test binaries):
                # its results replace the earlier ones, test binary by test binary
                prev.merge(k)
    if not kernels:
        print("collector: no kernel results in", ", ".join(a.work), file=sys.stderr)
        return 1
    backends = backend_order(kernels)
    problems = []
    for k in kernels:
        if k.report is None:
            problems.append(f"{k.id}: no parseable report (boot {k.meta.get('boot_report')}, rc {k.meta.get('report_rc') or 'none'})")
        fp = k.false_positives()
        if fp:
            problems.append(f"{k.id}: {fp} false positive(s)")
        for n, r in k.tests.items():
            if r["rc"] != 0:
                why = "no result" if r["rc"] is None else ("killed by the timeout" if r["rc"] == 137 else f"exit {r['rc']}")
                problems.append(f"{k.id}: test binary {n}: {why} {r['failures'][:6]}")

    md = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md.append("# addrprobe on real kernels\n")
    md.append(f"Generated by `scripts/kernel-matrix{' --quick' if a.quick else ''}` on {now}; "
              "do not edit by hand.\n")
    for w in a.work:
        try:
            line = "; ".join(x.strip() for x in open(os.path.join(w, "binary.txt")) if x.strip())
        except OSError:
            continue
        booted = [k.short for k in kernels if w in getattr(k, "works", [k.work])]
        if len(a.work) > 1 and booted:
            line += " (" + ", ".join(f"`{esc(u)}`" for u in booted) + ")"
        md.append(line + ".\n")
    md.append("Every kernel boots under QEMU with TCG (`qemu-system-x86_64 -accel tcg -m 512`, "
              "default CPU model) from an initramfs (busybox-static, the static `addrprobe` "
              "binary and, for boot 1, the test binaries). Boot 1 runs `addrprobe report --json` and then, unless `--no-tests`, every test "
              "binary of the workspace (below); boot 2 runs "
              "`addrprobe bench --quick --json` and then `addrprobe report --json` under "
              "`-icount shift=0,sleep=off`.\n")
    md.append("**Units.** Under `-icount shift=0` the guest's virtual clock advances exactly 1 ns per "
              "executed guest instruction, so every \"ns\" figure measured in boot 2 *is a count of guest "
              "instructions* (user + kernel) per probe. These counts are deterministic and comparable "
              "across kernels; they are not wall time. Wall time under TCG is meaningless and is not "
              "reported. Instruction counts ignore cache misses, TLB refills and microcode costs (e.g. "
              "the real cost of a mitigated syscall entry is higher than its instruction count suggests).\n")
    md.append("**Settling.** Boot 2 runs `-icount shift=0,sleep=off` and the guest idles for "
              "`addrprobe_settle` seconds (default 5, `ADDRPROBE_SETTLE`) before measuring. Without "
              "that pause, background kernel work of the first seconds after boot lands inside the "
              "timed loops: on Debian 6.18 getppid() read 642–1,244 \"instructions\" right after boot "
              "but exactly 308 after a 2–10 s pause, run after run. Instructions executed by other "
              "tasks and interrupts during a timed loop always count, so keep the guest quiet.\n")
    if problems:
        md.append("**Problems:** " + "; ".join(esc(p) for p in problems) + "\n")

    md.append("## Kernels\n")
    md.append("| kernel | uname -r | origin | report | auto() | auto() with signal handler | false positives | failures | test binaries |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for k in kernels:
        r = k.report or {}
        status = "ok" if k.report else f"missing (boot {k.meta.get('boot_report')}, rc {k.meta.get('report_rc') or '–'})"
        md.append(f"| {esc(k.label)} | `{esc(k.meta.get('uname', '?'))}` | {esc(k.meta.get('origin', ''))} | "
                  f"{status} | {esc(r.get('auto', '–'))} | {esc(r.get('auto_with_signal_handler', '–'))} | "
                  f"{k.false_positives() if k.report else '–'} | {r.get('failures', '–') if k.report else '–'} | "
                  f"{tests_summary(k.tests)} |")
    md.append("")
    cpus = sorted({str((k.report or {}).get("cpu")) for k in kernels if k.report})
    if cpus:
        md.append("Guest CPU as the kernels see it: " + ", ".join(f"`{esc(c)}`" for c in cpus) + ".\n")
    mit = {}
    for k in kernels:
        vul = ((k.report or {}).get("context") or {}).get("vulnerabilities") or {}
        for name, val in vul.items():
            if not str(val).startswith("Not affected"):
                mit.setdefault(name, {})[k.id] = val
    if mit:
        md.append("Mitigations the kernels enabled on that CPU (`/sys/devices/system/cpu/vulnerabilities`, "
                  "entries other than \"Not affected\"); they explain much of the spread in syscall "
                  "instruction counts below:\n")
        md.append("| kernel | " + " | ".join(esc(n) for n in sorted(mit)) + " |")
        md.append("|---|" + "---|" * len(mit))
        for k in kernels:
            if not k.report:
                continue
            md.append(f"| {esc(k.short)} | " + " | ".join(esc(mit[n].get(k.id, "Not affected"))
                                                      for n in sorted(mit)) + " |")
        md.append("")
    rec = [(k.short, (k.report or {}).get("pipe_recovery")) for k in kernels if k.report]
    if any(isinstance(r, dict) for _, r in rec):
        md.append("Pipe backend recovery after 1,000 faulting probes: " + "; ".join(
            f"{esc(n)}: {'recovered' if r.get('recovered') else 'NOT recovered'}"
            for n, r in rec if isinstance(r, dict)) + ".\n")

    if any(k.id.startswith("self-") for k in kernels):
        md.append("The self-built 6.1 kernels (`kernels/build.sh`: `tinyconfig` + `kernels/msync.config`) "
                  "have no Spectre mitigations compiled in (no retpolines, no swapgs barriers) and far "
                  "fewer features than Debian's, so their syscalls take fewer instructions: compare them "
                  "with each other (stock vs MS_ASYNC-patched), not with the Debian kernels. The patches "
                  "only change `msync(MS_ASYNC)` on shared file mappings, so every cost here, including "
                  "msync's on anonymous memory, should be identical across the three.\n")
    if test_names:
        md.append("## Test binaries\n")
        md.append("Boot 1 (with `-smp 2 -m 2048` when it runs the tests) runs every test binary of the "
                  "workspace (`cargo test --workspace --no-run`, test profile, static with "
                  "`-C target-feature=+crt-static`, frame pointers on; doc tests do not run in a guest) "
                  "from `/tmp`, one after the other, each killed after `TEST_TIMEOUT` seconds (1200; 600 in "
                  "runs built before commit f020ae3), "
                  "with `ADDRPROBE_TIMEOUT_SCALE=30` stretching the tests' own hang timeouts for the "
                  "emulated CPU. The three fixture projects that tests build with cargo at run time "
                  "(`tests/two-copies`, `tests/extable-fixture`, `tests/dylib-fixture`) are built on the "
                  "host with the same command and carried in the initramfs with the shared libraries "
                  "they load (`ADDRPROBE_PREBUILT_FIXTURES`).\n")
        md.append(TEST_LEGEND)
        with_tests = [k for k in kernels if k.tests]
        md.append("| test binary | " + " | ".join(esc(k.short) for k in with_tests) + " |")
        md.append("|---|" + "---|" * len(with_tests))
        for n in sorted(test_names):
            md.append(f"| {esc(n)} | " + " | ".join(
                (test_cell(k.tests.get(n)) + (" ↻" if n in getattr(k, "rerun", ()) else ""))
                if n in k.tests else "not run" for k in with_tests) + " |")
        md.append("")
        if any(getattr(k, "rerun", None) for k in with_tests):
            md.append("↻: from a later run of that kernel, after a fix (its binary line above names "
                      "the commit; `git log` says what was fixed).\n")
        md += skip_notes([(k.short, k.tests) for k in with_tests])
    md.append("## Backend availability\n")
    md.append("✓ = available and self-test passed; ✗ = unavailable, with the reason the crate gives "
              "(e.g. `PROCMAP_QUERY` is ENOTTY before Linux 6.11, so `auto()` must fall back).\n")
    md.append("| backend | " + " | ".join(esc(k.short) for k in kernels) + " |")
    md.append("|---|" + "---|" * len(kernels))
    for b in backends:
        cells = []
        for k in kernels:
            hit = next((x for x in k.backends() if x.get("name") == b), None)
            cells.append(availability_cell(hit) if k.report else "?")
        md.append(f"| {esc(b)} | " + " | ".join(cells) + " |")
    md.append("")

    md.append("## Cost: guest instructions per probe\n")
    srcs = {k.id: k.costs()[1] for k in kernels}
    md.append("From boot 2 (`-icount shift=0`): instructions executed per probe, user + kernel, "
              "from `bench --quick --json` `probe_costs` (backend, case, len). `bare:X` rows are the "
              "backend's raw system call without the crate's wrapper; `auto` is what `auto()` picked. "
              "Where the bench failed, the `costs` of `report --json` run in the same boot are used "
              "(marked †; cases valid / invalid as the report defines them).\n")
    allcosts = {k.id: k.costs()[0] for k in kernels}
    cases = []
    for k in kernels:
        for (_, c, _) in allcosts[k.id]:
            if c not in cases:
                cases.append(c)
    cases.sort(key=case_rank)
    border = {b: i for i, b in enumerate(backends)}

    def cost_backends(case):
        names = []
        for k in kernels:
            for (b, c, _) in allcosts[k.id]:
                if c == case and b not in names:
                    names.append(b)
        return sorted(names, key=lambda b: (b.startswith("bare:"), border.get(b, 50), b))

    def smallest(k, b, case):
        hits = [(ln if isinstance(ln, (int, float)) else -1, v)
                for (bb, c, ln), v in allcosts[k.id].items() if bb == b and c == case]
        return min(hits) if hits else (None, None)

    if cases:
        lens = sorted({ln for k in kernels for (_, _, ln) in allcosts[k.id] if isinstance(ln, (int, float))})
        if lens:
            md.append(f"Tables show the smallest length measured ({int(lens[0])} bytes); all lengths "
                      "(" + ", ".join(str(int(x)) for x in lens) + ") are in `kernels.json` and below.\n")
        for case in cases:
            md.append(f"### {esc(case)}\n")
            md.append("| backend | " + " | ".join(esc(k.short) for k in kernels) + " |")
            md.append("|---|" + "---:|" * len(kernels))
            for b in cost_backends(case):
                cells = []
                row_lens = set()
                for k in kernels:
                    ln, v = smallest(k, b, case)
                    if v is not None and ln not in (-1, None):
                        row_lens.add(ln)
                    cells.append(fmt_num(v) + (" †" if v is not None and srcs[k.id] == "report" else ""))
                label = esc(b)
                if lens and row_lens and min(row_lens) != lens[0]:
                    label += f" (len {int(min(row_lens))})"
                md.append(f"| {label} | " + " | ".join(cells) + " |")
            md.append("")
        gp = [k.getppid() for k in kernels]
        if any(v is not None for v in gp):
            md.append("getppid() for reference (from the report in the same boot): " + "; ".join(
                f"{esc(k.short)} {fmt_num(v)}" for k, v in zip(kernels, gp)) + ".\n")
        md.append("![guest instructions per probe](kernels.svg)\n")
        if len(lens) > 1:
            md.append("<details><summary>Instructions per probe by length (valid, resident)</summary>\n")
            vcase = cases[0]
            for k in kernels:
                rows = {}
                for (b, c, ln), v in allcosts[k.id].items():
                    if c == vcase and isinstance(ln, (int, float)):
                        rows.setdefault(b, {})[ln] = v
                if not rows:
                    continue
                md.append(f"**{esc(k.short)}**, case `{esc(vcase)}`\n")
                md.append("| backend | " + " | ".join(str(int(x)) for x in lens) + " |")
                md.append("|---|" + "---:|" * len(lens))
                for b in sorted(rows, key=lambda b: (b.startswith("bare:"), border.get(b, 50), b)):
                    md.append(f"| {esc(b)} | " + " | ".join(fmt_num(rows[b].get(x)) for x in lens) + " |")
                md.append("")
            md.append("</details>\n")
    else:
        md.append("_No cost data: the bench boot did not produce `probe_costs`"
                  + (" (--quick skips it)" if a.quick else "") + "._\n")
    bench_notes = []
    for k in kernels:
        if a.quick:
            break
        if k.bench is None and k.meta.get("boot_bench") != "skipped":
            bench_notes.append(f"{k.short}: bench failed or printed no JSON (rc {k.meta.get('bench_rc') or '–'}, boot {k.meta.get('boot_bench')})")
    if bench_notes:
        md.append("Bench failures: " + "; ".join(esc(n) for n in bench_notes) + ".\n")

    md.append("## Conformance matrix\n")
    md.append("Per fixture and backend, as judged by the crate's own fixtures: ✓ correct answer; "
              "✗ **FP** false positive (said yes where a read would fault — fails the run); ✗ FN false "
              "negative; ✗ wrong: an error where an answer was due or vice versa; ~ kFN a documented "
              "false negative (e.g. process_vm_readv on PROT_WRITE-only pages); ~ uY a yes from the "
              "`unsound` dev-null backend, which proves nothing by design; – backend unavailable. "
              "Kernels with identical matrices share one table.\n")
    groups = []
    for k in kernels:
        if not k.report:
            continue
        t = matrix_table(k.report, backends)
        for g in groups:
            if g[0] == t:
                g[1].append(k)
                break
        else:
            groups.append([t, [k]])
    for t, ks in groups:
        md.append("### " + ", ".join(esc(k.short) for k in ks) + "\n")
        md.append(t + "\n")

    md.append("## Real hardware (nanoseconds, not instructions)\n")
    md.append("Beside the emulated matrix: `addrprobe bench --json` run directly on the machine, without emulation, "
              "committed as `docs/results/*.json`. These figures are **nanoseconds** of wall time "
              "(fastest repetition), not guest instructions, and are comparable only within one "
              "machine.\n")
    results_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "results")
    found = False
    for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        if not name.endswith(".json"):
            continue
        data = load_json(os.path.join(results_dir, name))
        if not isinstance(data, dict) or "probe_costs" not in data:
            continue
        found = True
        ctx = data.get("context", {})
        md.append(f"### `docs/results/{esc(name)}`: {esc(str(ctx.get('cpu', '?')))}, "
                  f"{esc(str(ctx.get('nproc', '?')))} CPUs, Linux {esc(str(ctx.get('kernel', '?')))}\n")
        rows = {}
        for r in data["probe_costs"]:
            if r.get("len") in (8, None) or r.get("backend", "").startswith("floor:"):
                rows.setdefault(r.get("backend"), {})[r.get("case")] = r.get("ns")
        md.append("| backend | valid, resident (ns) | unmapped (ns) |")
        md.append("|---|---:|---:|")
        for b in sorted(rows, key=lambda b: (b.startswith(("bare:", "peer:", "floor:")), b)):
            v = rows[b]
            valid = v.get("valid-resident", next(iter(v.values()), None))
            md.append(f"| {esc(b)} | {fmt_num(valid)} | {fmt_num(v.get('unmapped'))} |")
        md.append("")
    if not found:
        md.append("_No `docs/results/*.json` yet._\n")
    md.append("The 16-core machine's figures will appear here once `scripts/bench-16core` has run "
              "there (it writes `docs/results/16-core.json`).\n")

    md.append("## Guest environment\n")
    md.append("- 1 vCPU (QEMU default), 512 MiB RAM (boot 1 with the tests: 2 vCPUs, 2 GiB), default `qemu64` CPU model, no network, "
              "no modules loaded (Debian cloud kernels: only built-in drivers).\n"
              "- `/proc`, `/sys`, devtmpfs on `/dev` and a tmpfs on `/tmp` are mounted; the root "
              "file system is the initramfs (rootfs, tmpfs-like); there is no disk in these boots, "
              "no `/dev/shm`, no `/dev/pts`; stdout is a serial port, not a terminal.\n"
              "- The init is a busybox shell script running as root (pid 1 is the shell, "
              "the binary runs as its child).\n")
    md.append("Reproduce: `scripts/kernel-matrix` (all kernels) or `scripts/kernel-matrix --quick` "
              "(Debian 6.1, report only; `--quick --tests a,b` adds those test binaries); "
              "`--kernels 6.12 --no-self-built --tests fork_kinds --no-icount` reruns one binary on one "
              "kernel (a narrowed run writes its page to its work dir, never to `docs/`)"
              ", and `scripts/lib/kernel_matrix_collect.py --work DIR --work DIR... --out docs` "
              "puts several runs on one page (a later run's results of a kernel replace the earlier "
              "ones, test binary by test binary). See `kernels/README.md` for the self-built kernels.\n")

    os.makedirs(a.out, exist_ok=True)
    # The arm64 section (scripts/lib/kernel_matrix_arm64.py) and whatever follows it (sections
    # written by hand) stay as they were.
    arm64 = ""
    try:
        old = open(os.path.join(a.out, "kernels.md"), encoding="utf-8").read()
        b, e = ARM64_SECTION
        if b in old and e in old:
            arm64 = "\n" + b + old.split(b, 1)[1]
    except OSError:
        pass
    with open(os.path.join(a.out, "kernels.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + arm64)
    svg = svg_chart(kernels, backends)
    if svg:
        with open(os.path.join(a.out, "kernels.svg"), "w", encoding="utf-8") as f:
            f.write(svg)
    with open(os.path.join(a.out, "kernels.json"), "w", encoding="utf-8") as f:
        json.dump([summarize(k) for k in kernels], f, indent=None, separators=(",", ":"))
        f.write("\n")
    for p in problems:
        print("collector:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
