//! The stack-bounds fast path's targets, as a plain benchmark binary:
//! `cargo bench --bench fast_path` (full run, ~30 s) or `cargo bench --bench fast_path -- --test`
//! (a quick smoke run). The same measurements, formatted as Markdown with the targets, are in
//! `addrprobe bench`; both come from `addrprobe_lab::fast_path_bench`.
//!
//! Ratios are measured in the same run: the own-stack walk against the unvalidated walk
//! (paired, back to back), the profiler's fast-path slowdown against SignalGuard's.

use addrprobe_lab::bench::profiler::Walker;
use addrprobe_lab::fast_path_bench as fb;

fn main() {
    let quick = std::env::args().any(|a| a == "--test" || a == "--quick");
    println!("own-stack walk, {} frames:", fb::FRAMES);
    for r in fb::own_stack_walks(quick, true) {
        println!(
            "  {:<52} {:>10.0} ns/walk  {:>8.2} x no validation  ({} probes)",
            r.name, r.ns_per_walk, r.vs_baseline, r.probes
        );
    }
    println!("coroutine-stack walk, {} frames 160 B apart:", fb::FRAMES);
    for r in fb::batched_walks(quick, 160) {
        println!(
            "  {:<52} {:>10.0} ns/walk  {:>8.2} x one probe per frame  ({} probes)",
            r.name, r.ns_per_walk, r.vs_baseline, r.probes
        );
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    println!("profiler workload, {threads} threads at 10 kHz each:");
    let rows = fb::profiler(quick, threads, 10_000);
    for r in &rows {
        println!(
            "  {:<28} slowdown {:>+7.2} %  {:>6} samples  {:>5.1} frames/sample  walk {:>6.0} ns/sample",
            r.walker.name(),
            r.slowdown_pct,
            r.samples,
            r.frames_per_sample,
            r.walk_ns_per_sample
        );
    }
    let find = |m: &dyn Fn(Walker) -> bool| rows.iter().find(|r| m(r.walker));
    if let (Some(f), Some(g)) = (
        find(&|w| matches!(w, Walker::FastPath(_))),
        find(&|w| w == Walker::Backend(addrprobe::Backend::SignalGuard)),
    ) {
        println!(
            "  fast-path slowdown / SignalGuard slowdown = {:.2} (target <= 1.2)",
            f.slowdown_pct / g.slowdown_pct
        );
    }
}
