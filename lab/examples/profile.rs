//! A SIGPROF sampling profiler built on addrprobe: folded stacks, and a flame graph.
//!
//! ```text
//! cargo run --release -p addrprobe-lab --features bench --example profile -- [BACKEND] [--hz N] [--ms N] [--svg FILE]
//! ```
//!
//! Runs the benchmark workload (`addrprobe_lab::bench::profiler`: CPU-bound threads 64 frames
//! deep, one `timer_create` + `SIGEV_THREAD_ID` timer per thread), walking each interrupted
//! thread's frame-pointer chain from the signal's ucontext with BACKEND (default: auto). The
//! handler only fills preallocated buffers; symbols are resolved afterwards, outside the
//! handler. Folded stacks (`outer;...;inner count`) go to stdout; `--svg FILE` also writes a
//! flame graph with `inferno`.

use std::collections::BTreeMap;
use std::time::Duration;

use addrprobe::{Backend, Prober};
use addrprobe_lab::bench::profiler::{self, Config, Walker};

fn symbol(pc: usize, first: bool) -> String {
    // Return addresses point after the call: look up pc - 1, except for the interrupted pc.
    let addr = if first { pc } else { pc.saturating_sub(1) };
    let mut name = None;
    backtrace::resolve(addr as *mut std::ffi::c_void, |s| {
        if name.is_none() {
            name = s.name().map(|n| format!("{n:#}"));
        }
    });
    name.unwrap_or_else(|| format!("{pc:#x}"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut backend, mut hz, mut ms, mut svg) = (None, 1000u32, 500u64, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--hz" => hz = args.next().and_then(|v| v.parse().ok()).expect("--hz N"),
            "--ms" => ms = args.next().and_then(|v| v.parse().ok()).expect("--ms N"),
            "--svg" => svg = Some(args.next().expect("--svg FILE")),
            b => backend = Some(b.parse::<Backend>().unwrap_or_else(|e| panic!("{e}"))),
        }
    }
    let prober = match backend {
        Some(b) => Prober::new(b),
        None => Prober::auto(),
    }
    .unwrap_or_else(|e| panic!("cannot create the prober: {e}"));
    let report = profiler::run(
        Config {
            walker: Walker::Backend(prober.backend()),
            hz,
            threads: 2,
            depth: 64,
            duration: Duration::from_millis(ms),
            churn: false,
            keep_samples: 4096,
        },
        Some(&prober),
    );
    eprintln!(
        "{}: {} samples, {:.1} frames/sample, {:.0} ns walk/sample",
        prober.backend(),
        report.samples,
        report.frames_per_sample(),
        report.walk_ns_per_sample()
    );
    let mut cache: BTreeMap<(usize, bool), String> = BTreeMap::new();
    let mut folded: BTreeMap<String, usize> = BTreeMap::new();
    for stack in &report.stacks {
        let names: Vec<String> = stack
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &pc)| {
                cache
                    .entry((pc, i == 0))
                    .or_insert_with(|| symbol(pc, i == 0).replace(';', ":"))
                    .clone()
            })
            .collect();
        *folded.entry(names.join(";")).or_default() += 1;
    }
    let lines: Vec<String> = folded.iter().map(|(k, v)| format!("{k} {v}")).collect();
    for l in &lines {
        println!("{l}");
    }
    if let Some(path) = svg {
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = format!("addrprobe profile ({} at {hz} Hz)", prober.backend());
        let file = std::fs::File::create(&path).expect("create the SVG file");
        inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), file)
            .expect("write the flame graph");
        eprintln!("wrote {path}");
    }
}
