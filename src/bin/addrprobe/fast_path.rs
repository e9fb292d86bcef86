//! The stack-bounds fast path's section of `addrprobe bench`: the issue-7 targets, each
//! reported as a ratio measured in the same run (see `addrprobe::fast_path_bench`).
//!
//! - a 64-frame walk of the own stack with `Prober::auto()` + fast path, against the same walk
//!   with no validation (target ≤ 1.5×);
//! - the SIGPROF profiler at 10 kHz: the fast-path profiler's slowdown against SignalGuard's
//!   (target ≤ 1.2×);
//! - batch windows for the syscall backends on a 64-frame coroutine stack (does it pay off?).

use std::fmt::Write;

use addrprobe::fast_path_bench::{self as fb, ProfMode, ProfRow, WalkRow};

use crate::context;
use crate::json::Json;

/// The section's Markdown and JSON.
pub struct Section {
    /// Markdown tables with the ratios.
    pub markdown: String,
    /// The same content, machine-readable.
    pub json: Json,
}

/// Runs the measurements (about 15 s, `quick` about 5 s).
pub fn section(quick: bool) -> Section {
    let walks = fb::own_stack_walks(quick, true);
    let batched = fb::batched_walks(quick, 160);
    let threads = context::nproc().clamp(1, 4);
    let prof = fb::profiler(quick, threads, 10_000);

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

    let _ = writeln!(
        md,
        "\n### Profiler, {threads} CPU-bound threads sampled at 10 kHz each, ≥ {} frames deep\n",
        fb::FRAMES
    );
    let _ = writeln!(
        md,
        "Slowdown: the workers' CPU time (handlers included) against the unprofiled run; median of the rounds, modes interleaved.\n"
    );
    let _ = writeln!(
        md,
        "| profiler | CPU s / thread | slowdown | samples / run | frames / sample | walk ns / sample, median | mean |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &prof {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:+.2} % | {} | {:.1} | {:.0} | {:.0} |",
            r.mode.name(),
            r.cpu_s,
            r.slowdown_pct,
            r.samples,
            r.frames_per_sample,
            r.walk_ns_median,
            r.walk_ns_per_sample
        );
    }
    let find = |m: ProfMode| prof.iter().find(|r| r.mode == m);
    let prof_ratio = match (find(ProfMode::AutoFastPath), find(ProfMode::SignalGuard)) {
        (Some(f), Some(g)) => Some((f, g)),
        _ => None,
    };
    if let Some((f, g)) = prof_ratio {
        let slow = f.slowdown_pct / g.slowdown_pct;
        let cost = (f.cpu_s) / (g.cpu_s);
        let walk = f.walk_ns_median / g.walk_ns_median;
        let _ = writeln!(
            md,
            "\n**Target: fast-path slowdown ≤ 1.2 × SignalGuard's: {slow:.2} × ({}).** Same run: CPU time {cost:.3} × SignalGuard's, median walk cost per sample {walk:.2} × SignalGuard's.",
            if slow <= 1.2 { "met" } else { "missed" }
        );
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
            ("mode", Json::str(r.mode.name())),
            ("cpu_s_per_thread", Json::num(r.cpu_s)),
            ("slowdown_pct", Json::num(r.slowdown_pct)),
            ("samples_per_run", Json::num(r.samples as f64)),
            ("frames_per_sample", Json::num(r.frames_per_sample)),
            ("walk_ns_per_sample_mean", Json::num(r.walk_ns_per_sample)),
            ("walk_ns_per_sample_median", Json::num(r.walk_ns_median)),
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
            Json::opt(prof_ratio, |(f, g)| {
                Json::num(f.slowdown_pct / g.slowdown_pct)
            }),
        ),
        (
            "batched_walks",
            Json::Arr(batched.iter().map(walk_json).collect()),
        ),
    ]);
    Section { markdown: md, json }
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
    let s = section(quick);
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
