//! The stack-bounds fast path's section of `addrprobe bench` (and `addrprobe bench
//! fast-path` alone): the fast path's targets, each reported as a ratio measured in the same run
//! (see `addrprobe_lab::fast_path_bench`).
//!
//! - a 64-frame walk of the own stack with `Prober::auto()` + fast path, against the same walk
//!   with no validation (target ≤ 1.5×);
//! - the SIGPROF profiler at 10 kHz: the fast-path profiler's slowdown against SignalGuard's
//!   (target ≤ 1.2×);
//! - batch windows for the syscall backends on a 64-frame coroutine stack (does it pay off?).

use std::fmt::Write;

use addrprobe_lab::bench::profiler::Walker;
use addrprobe_lab::fast_path_bench::{self as fb, ProfRow, WalkRow};

use crate::context;
use crate::json::Json;

/// The section's Markdown and JSON.
pub struct Section {
    /// Markdown tables with the ratios.
    pub markdown: String,
    /// The same content, machine-readable.
    pub json: Json,
}

/// The own-stack walk target: (ratio, met).
pub type WalkTarget = Option<(f64, bool)>;

/// Runs the measurements (about 10 s, `quick` about 4 s). With `profiler` false the 10 kHz
/// profiler comparison is left out (`addrprobe bench` has it in its own profiler table).
pub fn section(quick: bool, profiler: bool) -> (Section, WalkTarget) {
    let walks = fb::own_stack_walks(quick, true);
    let batched = fb::batched_walks(quick, 160);
    let threads = context::nproc().max(2);
    let prof = if profiler {
        fb::profiler(quick, threads, 10_000)
    } else {
        Vec::new()
    };

    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Stack-bounds fast path\n\n### {}-frame walk of the calling thread's own stack\n",
        fb::FRAMES
    );
    let _ = writeln!(
        md,
        "Each ratio is the median over repetitions of (this walk / the unvalidated walk), the two timed back to back.\n\n| walk | ns / walk | ns / frame | frames | probes / walk | × no validation |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &walks {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1} | {} | {} | {:.2} |",
            r.name,
            r.ns_per_walk,
            r.ns_per_walk / r.frames.max(1) as f64,
            r.frames,
            r.probes,
            r.vs_baseline
        );
    }
    let fast = walks
        .iter()
        .find(|r| r.name.starts_with("Prober::auto()") && r.name.ends_with("fast path"));
    let walk_ratio = fast.map(|r| r.vs_baseline);
    if let Some(ratio) = walk_ratio {
        let _ = writeln!(
            md,
            "\n**Target: `Prober::auto()` + fast path ≤ 1.5 × no validation: {ratio:.2} × ({})**",
            if ratio <= 1.5 { "met" } else { "missed" }
        );
    }

    let find = |m: &dyn Fn(Walker) -> bool| prof.iter().find(|r| m(r.walker));
    let fast_row = find(&|w| matches!(w, Walker::FastPath(_)));
    let guard_row = find(&|w| w == Walker::Backend(addrprobe::Backend::SignalGuard));
    let prof_ratio = match (fast_row, guard_row) {
        (Some(f), Some(g)) => Some((f, g)),
        _ => None,
    };
    if !prof.is_empty() {
        let _ = writeln!(
            md,
            "\n### Profiler workload at 10 kHz: {threads} CPU-bound threads, {}-frame stacks\n",
            fb::FRAMES
        );
        let _ = writeln!(
            md,
            "Slowdown: work per CPU second against the unprofiled run (medians of interleaved rounds).\n"
        );
        let _ = writeln!(
            md,
            "| walker | slowdown | samples / run | frames / sample | walk ns / sample |\n| --- | ---: | ---: | ---: | ---: |"
        );
        for r in &prof {
            let _ = writeln!(
                md,
                "| {} | {:+.2} % | {} | {:.1} | {:.0} |",
                r.walker.name(),
                r.slowdown_pct,
                r.samples,
                r.frames_per_sample,
                r.walk_ns_per_sample
            );
        }
        if let Some((f, g)) = prof_ratio {
            let (ratio, met) = prof_target(f, g);
            let _ = writeln!(
                md,
                "\n**Target: fast-path slowdown ≤ 1.2 × SignalGuard's: {ratio:.2} × ({}).** Walk cost per sample {:.2} × SignalGuard's.",
                if met { "met" } else { "missed" },
                f.walk_ns_per_sample / g.walk_ns_per_sample
            );
        }
    }

    let _ = writeln!(
        md,
        "\n### Batch windows: {}-frame coroutine stack (frames 160 B apart, off the thread's stack)\n",
        fb::FRAMES
    );
    let _ = writeln!(
        md,
        "| walk | ns / walk | probes / walk | × one probe per frame |\n| --- | ---: | ---: | ---: |"
    );
    for r in &batched {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {:.2} |",
            r.name, r.ns_per_walk, r.probes, r.vs_baseline
        );
    }

    let walk_json = |r: &WalkRow| {
        Json::obj([
            ("name", Json::str(r.name.clone())),
            ("ns_per_walk", Json::num(r.ns_per_walk)),
            ("frames", Json::num(r.frames as f64)),
            ("probes_per_walk", Json::num(r.probes as f64)),
            ("vs_baseline", Json::num(r.vs_baseline)),
        ])
    };
    let prof_json = |r: &ProfRow| {
        Json::obj([
            ("walker", Json::str(r.walker.name())),
            ("slowdown_pct", Json::num(r.slowdown_pct)),
            ("samples_per_run", Json::num(r.samples as f64)),
            ("frames_per_sample", Json::num(r.frames_per_sample)),
            ("walk_ns_per_sample", Json::num(r.walk_ns_per_sample)),
        ])
    };
    let json = Json::obj([
        (
            "own_stack_walks",
            Json::Arr(walks.iter().map(walk_json).collect()),
        ),
        (
            "own_stack_ratio_auto_fast_vs_none",
            Json::opt(walk_ratio, Json::num),
        ),
        ("profiler_threads", Json::num(threads as f64)),
        ("profiler_hz", Json::num(10_000.0)),
        ("profiler", Json::Arr(prof.iter().map(prof_json).collect())),
        (
            "profiler_ratio_fast_vs_signal_guard_slowdown",
            Json::opt(prof_ratio, |(f, g)| Json::num(prof_target(f, g).0)),
        ),
        (
            "batched_walks",
            Json::Arr(batched.iter().map(walk_json).collect()),
        ),
    ]);
    (
        Section { markdown: md, json },
        walk_ratio.map(|r| (r, r <= 1.5)),
    )
}

/// The profiler target: (fast-path slowdown / SignalGuard slowdown, met). When SignalGuard's
/// slowdown is within noise of zero or below, the ratio means nothing and the target is met
/// only if the fast path's slowdown is no larger.
pub fn prof_target(f: &ProfRow, g: &ProfRow) -> (f64, bool) {
    let ratio = f.slowdown_pct / g.slowdown_pct;
    let met = if g.slowdown_pct > 0.0 {
        ratio <= 1.2
    } else {
        f.slowdown_pct <= g.slowdown_pct
    };
    (ratio, met)
}

/// `addrprobe bench fast-path [--quick] [--json]` (`args` are those after `fast-path`).
pub fn run(args: &[String]) -> i32 {
    let mut quick = false;
    let mut json = false;
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            "--json" => json = true,
            other => {
                eprintln!("addrprobe bench: unknown option {other:?} (expected --quick, --json)");
                return 2;
            }
        }
    }
    let (s, _) = section(quick, true);
    if json {
        let out = Json::obj([("context", context::json()), ("fast_path", s.json)]);
        println!("{out}");
    } else {
        println!(
            "# addrprobe bench: fast path\n\nkernel {}, {}, {} CPUs\n",
            context::kernel_release(),
            context::cpu_model(),
            context::nproc()
        );
        print!("{}", s.markdown);
    }
    0
}
