//! `addrprobe bench [--quick] [--json]`: probe costs, unwinder and profiler tables, scaling,
//! and every performance target of the crate as a ratio measured in this run.
//!
//! Full: under 60 s; `--quick`: under 15 s, with bounded iteration counts so that it also
//! finishes inside QEMU/TCG guests (`-icount shift=0`, where a nanosecond is an instruction).
//! Markdown tables on stdout; `--json` prints one JSON object instead, with the machine
//! context and a `probe_costs` array of `{backend, case, len, ns}` rows.

use std::hint::black_box;
use std::time::Duration;

use addrprobe::unwind::{Frame, Start, Unwinder, walk_chain};
use addrprobe::{AutoOptions, Backend, Guarantee, Prober};
use addrprobe_lab::bench::profiler::{self, Walker};
use addrprobe_lab::bench::{Arena, Budget, Case, Floors, len_label, lengths, ns_per_call};

use crate::context;
use crate::json::Json;

struct Opts {
    quick: bool,
    json: bool,
}

struct Cost {
    backend: String,
    case: &'static str,
    len: usize,
    ns: f64,
}

struct Target {
    what: String,
    target: &'static str,
    ratio: Option<f64>,
    pass: Option<bool>,
    note: String,
}

fn target(
    what: impl Into<String>,
    t: &'static str,
    ratio: f64,
    pass: bool,
    note: String,
) -> Target {
    Target {
        what: what.into(),
        target: t,
        ratio: Some(ratio),
        pass: Some(pass),
        note,
    }
}

fn cost_of(costs: &[Cost], backend: &str, case: Case, len: usize) -> Option<f64> {
    costs
        .iter()
        .find(|c| c.backend == backend && c.case == case.name() && c.len == len)
        .map(|c| c.ns)
}

fn probe_costs(b: Budget, probers: &[Prober], auto: &Prober) -> Vec<Cost> {
    let arena = Arena::new().expect("cannot map the benchmark arena");
    let floors = Floors::open().expect("cannot open the floors' descriptors");
    let mut rows = Vec::new();
    let mut push = |backend: String, case: Case, len: usize, ns: f64| {
        rows.push(Cost {
            backend,
            case: case.name(),
            len,
            ns,
        })
    };
    for len in lengths() {
        for case in Case::ALL {
            let addr = arena.addr(case);
            let reset_ns = if case == Case::Untouched {
                ns_per_call(b, || arena.reset_untouched(len))
            } else {
                0.0
            };
            let measure = |f: &dyn Fn() -> bool| {
                if case == Case::Untouched {
                    let t = ns_per_call(b, || {
                        arena.reset_untouched(len);
                        black_box(f());
                    });
                    (t - reset_ns).max(0.0)
                } else {
                    ns_per_call(b, || {
                        black_box(f());
                    })
                }
            };
            for p in probers.iter().chain(std::iter::once(auto)) {
                let name = if std::ptr::eq(p, auto) {
                    "auto".to_owned()
                } else {
                    p.backend().to_string()
                };
                let ns = measure(&|| p.check(black_box(addr), len) == Ok(true));
                push(name, case, len, ns);
            }
            if len == 8 {
                for bk in Backend::ALL.into_iter().filter(|&x| Floors::has_bare(x)) {
                    let ns = measure(&|| floors.bare(bk, black_box(addr)).is_some());
                    push(format!("bare:{bk}"), case, len, ns);
                }
                #[cfg(feature = "bench")]
                {
                    use addrprobe_lab::bench::peers;
                    let ns = measure(&|| peers::pprof_validate(black_box(addr), len));
                    push("peer:pprof-validate".into(), case, len, ns);
                }
            }
            #[cfg(feature = "bench")]
            {
                use addrprobe_lab::bench::peers;
                let ns = measure(&|| peers::accessible(black_box(addr), len) == Ok(true));
                push("peer:accessible".into(), case, len, ns);
            }
        }
    }
    let addr = arena.addr(Case::Resident);
    push(
        "floor:getppid".into(),
        Case::Resident,
        8,
        ns_per_call(b, || {
            addrprobe_lab::bench::getppid();
        }),
    );
    push(
        "floor:volatile-load".into(),
        Case::Resident,
        8,
        ns_per_call(b, || {
            // SAFETY: the resident mapping is readable and page-aligned.
            unsafe { addrprobe_lab::bench::volatile_load(black_box(addr)) };
        }),
    );
    let len = *lengths().last().unwrap();
    let mut buf = vec![0u8; len];
    let copy_budget = Budget {
        reps: if b.reps <= 3 { 1 } else { 3 },
        max_iters: 4,
        ..b
    };
    for bk in Backend::ALL
        .into_iter()
        .filter(|&x| Floors::has_full_copy(x))
    {
        let ns = ns_per_call(copy_budget, || {
            black_box(floors.full_copy(bk, black_box(addr), &mut buf));
        });
        push(format!("full-copy:{bk}"), Case::Resident, len, ns);
    }
    rows
}

/// Every target, as a ratio measured in this run.
fn targets(
    costs: &[Cost],
    profiler_rows: &[ProfRow],
    peers_wrong: Option<(usize, bool)>,
) -> Vec<Target> {
    let mut t = overhead_targets(costs);
    t.extend(full_copy_targets(costs));
    t.extend(auto_target(costs));
    t.push(peer_target(costs, peers_wrong));
    t.push(profiler_1khz_target(profiler_rows));
    t.push(profiler_10khz_target(profiler_rows));
    t
}

/// A backend's cost on valid, resident 8-byte ranges.
fn valid_8b(costs: &[Cost], name: &str) -> Option<f64> {
    cost_of(costs, name, Case::Resident, 8)
}

/// Each syscall backend against its bare syscall, and SignalGuard against a plain load.
fn overhead_targets(costs: &[Cost]) -> Vec<Target> {
    let v = |name: &str| valid_8b(costs, name);
    let mut t = Vec::new();
    for bk in Backend::ALL.into_iter().filter(|&x| Floors::has_bare(x)) {
        if let (Some(ours), Some(bare)) = (v(bk.name()), v(&format!("bare:{bk}"))) {
            let r = ours / bare;
            // SigprocMask holds descriptors only for `read`; its check verifies none.
            let note = if bk.holds_fd() && bk != Backend::SigprocMask {
                "includes the descriptor-identity fstat per call".to_owned()
            } else {
                String::new()
            };
            t.push(target(
                format!("{bk}, valid 8 B / its bare syscall"),
                "≤ 1.10",
                r,
                r <= 1.10,
                note,
            ));
        }
    }
    if let (Some(sg), Some(load)) = (v("signal-guard"), v("floor:volatile-load")) {
        let r = sg / load;
        t.push(target(
            "signal-guard, valid 8 B / plain volatile load",
            "≤ 2",
            r,
            r <= 2.0,
            format!("{sg:.1} ns vs {load:.1} ns"),
        ));
    }
    t
}

/// Copying 256 pages whole against the crate's one byte per page.
fn full_copy_targets(costs: &[Cost]) -> Vec<Target> {
    let big = *lengths().last().unwrap();
    let mut t = Vec::new();
    for bk in [Backend::Pipe, Backend::ProcessVmReadv, Backend::SigprocMask] {
        let ours = cost_of(costs, bk.name(), Case::Resident, big);
        let copy = cost_of(costs, &format!("full-copy:{bk}"), Case::Resident, big);
        if let (Some(o), Some(c)) = (ours, copy) {
            let r = c / o;
            t.push(target(
                format!("{bk}, 256 pages: full copy / our probe"),
                "≥ 10",
                r,
                r >= 10.0,
                format!("{:.1} µs vs {:.1} µs", c / 1e3, o / 1e3),
            ));
        }
    }
    t
}

/// `auto()` against the fastest Readable backend that installs no signal handler.
fn auto_target(costs: &[Cost]) -> Option<Target> {
    let v = |name: &str| valid_8b(costs, name);
    let (fb, fns) = [Backend::Pipe, Backend::SigprocMask, Backend::ProcessVmReadv]
        .into_iter()
        .filter_map(|b| v(b.name()).map(|ns| (b, ns)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    let r = v("auto")? / fns;
    Some(target(
        format!("auto(), valid 8 B / fastest no-handler Readable ({fb})"),
        "≤ 1.10",
        r,
        r <= 1.10,
        String::new(),
    ))
}

/// `pprof::validate` against the fastest Readable backend, and who is right on the fixtures.
fn peer_target(costs: &[Cost], peers_wrong: Option<(usize, bool)>) -> Target {
    let v = |name: &str| valid_8b(costs, name);
    let fastest = Backend::ALL
        .into_iter()
        .filter(|b| b.guarantee() == Guarantee::Readable)
        .filter_map(|b| v(b.name()).map(|ns| (b, ns)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    match (fastest, v("peer:pprof-validate"), peers_wrong) {
        (Some((fb, fns)), Some(pp), Some((wrong, ours_right))) => {
            let r = pp / fns;
            target(
                format!("pprof::validate / fastest Readable ({fb}), valid"),
                "> 1, and right where pprof is wrong",
                r,
                r > 1.0 && ours_right,
                format!(
                    "pprof wrong on {wrong} fixtures; ours right on all of them: {ours_right}"
                ),
            )
        }
        _ => Target {
            what: "pprof::validate / fastest Readable, valid".into(),
            target: "> 1",
            ratio: None,
            pass: None,
            note: "not measured: build with the lab's `bench` feature (`cargo run --release --features addrprobe-lab/bench -- bench`, or `cargo bench --features addrprobe-lab/bench --bench probe`)".into(),
        },
    }
}

/// The SignalGuard profiler's slowdown at 1 kHz.
fn profiler_1khz_target(profiler_rows: &[ProfRow]) -> Target {
    let guard_1k = profiler_rows
        .iter()
        .find(|r| r.hz == 1000 && !r.churn && r.walker == Walker::Backend(Backend::SignalGuard));
    match guard_1k {
        Some(r) => target(
            "profiler 1 kHz, 64-frame stacks, signal-guard: slowdown",
            "≤ 1 %",
            r.slowdown_pct,
            r.slowdown_pct <= 1.0,
            format!(
                "walk {:.0} ns/sample; samples × walk = {:.3} % of CPU",
                r.walk_ns, r.walk_share_pct
            ),
        ),
        None => Target {
            what: "profiler 1 kHz, signal-guard".into(),
            target: "≤ 1 %",
            ratio: None,
            pass: None,
            note: "signal-guard unavailable".into(),
        },
    }
}

/// The fast-path profiler against SignalGuard, 10 kHz, no churn.
fn profiler_10khz_target(profiler_rows: &[ProfRow]) -> Target {
    let at10k = |w: &dyn Fn(Walker) -> bool| {
        profiler_rows
            .iter()
            .find(|r| r.hz == 10_000 && !r.churn && w(r.walker))
    };
    match (
        at10k(&|w| matches!(w, Walker::FastPath(_))),
        at10k(&|w| w == Walker::Backend(Backend::SignalGuard)),
    ) {
        (Some(f), Some(g)) => {
            let r = f.slowdown_pct / g.slowdown_pct;
            // A signal-guard slowdown within noise of zero makes the ratio meaningless: then
            // the fast path must simply be no slower.
            let met = if g.slowdown_pct > 0.0 {
                r <= 1.2
            } else {
                f.slowdown_pct <= g.slowdown_pct
            };
            target(
                format!(
                    "profiler 10 kHz: {} slowdown / signal-guard slowdown",
                    f.walker.name()
                ),
                "≤ 1.2",
                r,
                met,
                format!(
                    "slowdown {:.2} % vs {:.2} %; walk {:.0} vs {:.0} ns/sample",
                    f.slowdown_pct, g.slowdown_pct, f.walk_ns, g.walk_ns
                ),
            )
        }
        _ => Target {
            what: "profiler 10 kHz: fast path / signal-guard slowdown".into(),
            target: "≤ 1.2",
            ratio: None,
            pass: None,
            note: "signal-guard or auto() unavailable".into(),
        },
    }
}

/// (walker, depth, ns per frame)
fn unwind_costs(b: Budget, probers: &[Prober], auto: &Prober) -> Vec<(String, usize, f64)> {
    let mut rows = Vec::new();
    for depth in [16usize, 64, 256] {
        addrprobe_lab::bench::recurse(depth, &mut || {
            let mut out = vec![Frame::default(); depth];
            let ns = ns_per_call(b, || {
                let (fp, sp) = addrprobe_lab::bench::current_fp_sp();
                let w = walk_chain(fp, sp, &mut out, 0, |fp| {
                    // SAFETY: the chain is this thread's own intact frame chain (built with
                    // frame pointers); `out` bounds the walk to `depth` frames, all of them
                    // frames of the live recursion, so every record read is on the stack.
                    Ok(Some(unsafe {
                        [
                            core::ptr::read_volatile(fp as *const usize),
                            core::ptr::read_volatile((fp + 8) as *const usize),
                        ]
                    }))
                });
                black_box(w);
            });
            rows.push(("no validation".to_owned(), depth, ns / depth as f64));
            for p in probers.iter().chain(std::iter::once(auto)) {
                let u = if p.guarantee() == Guarantee::Readable {
                    Unwinder::new(p).unwrap()
                } else {
                    // SAFETY: the walk stays within `depth` frames of the live recursion.
                    unsafe { Unwinder::check_then_load(p) }
                }
                .with_max_depth(depth);
                let ns = ns_per_call(b, || {
                    black_box(u.walk(Start::Current, &mut out, None));
                });
                let name = if std::ptr::eq(p, auto) {
                    format!("auto ({})", p.backend())
                } else {
                    p.backend().to_string()
                };
                rows.push((name, depth, ns / depth as f64));
            }
        });
    }
    rows
}

struct ProfRow {
    walker: Walker,
    hz: u32,
    churn: bool,
    slowdown_pct: f64,
    samples: u64,
    frames_per_sample: f64,
    walk_ns: f64,
    validation_ns: f64,
    walk_share_pct: f64,
}

fn profiler_runs(quick: bool, probers: &[Prober]) -> Vec<ProfRow> {
    let auto_backend = AutoOptions::new().build().ok().map(|p| p.backend());
    let threads = context::nproc().max(2);
    let duration = Duration::from_millis(if quick { 80 } else { 250 });
    let mut rows = Vec::new();
    for churn in [false, true] {
        for hz in [1000u32, 10_000] {
            let cfg = |walker| profiler::Config {
                walker,
                hz,
                threads,
                depth: 64,
                duration,
                churn,
                keep_samples: 0,
            };
            let base1 = profiler::run(cfg(Walker::Off), None);
            let mut walkers = vec![(Walker::NoValidation, None)];
            walkers.extend(
                probers
                    .iter()
                    .map(|p| (Walker::Backend(p.backend()), Some(p))),
            );
            // The stack-bounds fast path with auto()'s backend (no signal handler).
            if let Some(p) = probers.iter().find(|p| Some(p.backend()) == auto_backend) {
                walkers.push((Walker::FastPath(p.backend()), Some(p)));
            }
            let mut measured = Vec::new();
            for (w, p) in walkers {
                measured.push((w, profiler::run(cfg(w), p)));
            }
            let base2 = profiler::run(cfg(Walker::Off), None);
            let base = (base1.units_per_cpu_s() + base2.units_per_cpu_s()) / 2.0;
            let novalid = measured
                .iter()
                .find(|(w, _)| *w == Walker::NoValidation)
                .map_or(0.0, |(_, r)| r.walk_ns_per_sample());
            for (w, r) in measured {
                let cpu_ns = r.cpu_ns.max(1) as f64;
                rows.push(ProfRow {
                    walker: w,
                    hz,
                    churn,
                    slowdown_pct: (1.0 - r.units_per_cpu_s() / base) * 100.0,
                    samples: r.samples,
                    frames_per_sample: r.frames_per_sample(),
                    walk_ns: r.walk_ns_per_sample(),
                    validation_ns: r.walk_ns_per_sample() - novalid,
                    walk_share_pct: r.walk_ns as f64 / cpu_ns * 100.0,
                });
            }
        }
    }
    rows
}

fn scaling_runs(quick: bool, probers: &[Prober]) -> Vec<(Backend, bool, usize, f64)> {
    let n = context::nproc();
    let d = Duration::from_millis(if quick { 20 } else { 80 });
    let mut rows = Vec::new();
    for p in probers {
        for churn in [false, true] {
            for t in 1..=n {
                rows.push((
                    p.backend(),
                    churn,
                    t,
                    addrprobe_lab::bench::scaling::probes_per_s(p, t, churn, d),
                ));
            }
        }
    }
    rows
}

#[cfg(feature = "bench")]
fn peers_table(probers: &[Prober]) -> Option<(String, usize, bool)> {
    use addrprobe_lab::bench::peers;
    let set = addrprobe_lab::fixtures::FixtureSet::build().ok()?;
    let ours: Vec<Prober> = probers
        .iter()
        .filter(|p| p.guarantee() == Guarantee::Readable)
        .filter_map(|p| Prober::new(p.backend()).ok())
        .collect();
    let rows = peers::fixture_rows(&set, &ours);
    let (table, pprof_wrong, _) = peers::fixture_table(&rows);
    // Where pprof is wrong, is the fastest of ours (first Readable with the lowest cost is
    // decided later; here: every one of ours) right?
    let ours_right = rows
        .iter()
        .filter(|r| r.readable != Some(r.pprof))
        .all(|r| r.ours.iter().all(|(_, a)| *a == r.readable));
    Some((table, pprof_wrong, ours_right))
}

#[cfg(not(feature = "bench"))]
fn peers_table(_probers: &[Prober]) -> Option<(String, usize, bool)> {
    None
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.1}")
    }
}

/// Everything one run measured.
struct Measured {
    quick: bool,
    probers: Vec<Prober>,
    unavailable: Vec<(Backend, String)>,
    auto: Prober,
    costs: Vec<Cost>,
    peers: Option<(String, usize, bool)>,
    unwind: Vec<(String, usize, f64)>,
    prof: Vec<ProfRow>,
    scaling: Vec<(Backend, bool, usize, f64)>,
    targets: Vec<Target>,
    fast_path: crate::fast_path::Section,
    elapsed: Duration,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        json: false,
    };
    for a in args {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json = true,
            other => {
                return Err(format!(
                    "unknown option {other:?}; usage: addrprobe bench [--quick] [--json]"
                ));
            }
        }
    }
    Ok(o)
}

/// Opens every backend and runs every measurement.
fn measure(quick: bool) -> Result<Measured, String> {
    let budget = if quick { Budget::QUICK } else { Budget::FULL };
    let mut probers = Vec::new();
    let mut unavailable = Vec::new();
    for b in Backend::ALL {
        match Prober::new(b) {
            Ok(p) => probers.push(p),
            Err(e) => unavailable.push((b, e.to_string())),
        }
    }
    let auto = AutoOptions::new()
        .build()
        .map_err(|e| format!("no sound backend for auto(): {e}"))?;
    let started = std::time::Instant::now();
    let costs = probe_costs(budget, &probers, &auto);
    let peers = peers_table(&probers);
    let unwind = unwind_costs(budget, &probers, &auto);
    let prof = profiler_runs(quick, &probers);
    let scaling = scaling_runs(quick, &probers);
    let peers_wrong = peers.as_ref().map(|(_, w, r)| (*w, *r));
    let mut targets = targets(&costs, &prof, peers_wrong);
    // The stack-bounds fast path's section: the own-stack walk (its profiler row is in the
    // profiler table above).
    let (fast_path, walk_target) = crate::fast_path::section(quick, false);
    if let Some((ratio, met)) = walk_target {
        targets.push(target(
            "64-frame own-stack walk: auto() + fast path / no validation",
            "≤ 1.5",
            ratio,
            met,
            "paired back-to-back timings; see the fast-path section".into(),
        ));
    }
    Ok(Measured {
        quick,
        probers,
        unavailable,
        auto,
        costs,
        peers,
        unwind,
        prof,
        scaling,
        targets,
        fast_path,
        elapsed: started.elapsed(),
    })
}

pub fn run(args: &[String]) -> i32 {
    let o = match parse_opts(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("addrprobe bench: {e}");
            return 2;
        }
    };
    let m = match measure(o.quick) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("addrprobe bench: {e}");
            return 1;
        }
    };
    if o.json {
        println!("{}", to_json(&m));
    } else {
        print_markdown(&m);
    }
    0
}

/// The whole run as one JSON object.
fn to_json(m: &Measured) -> Json {
    Json::obj([
        ("context", context::json()),
        ("quick", Json::Bool(m.quick)),
        ("fast_path", m.fast_path.json.clone()),
        ("elapsed_s", Json::num(m.elapsed.as_secs_f64())),
        (
            "unavailable",
            Json::Arr(
                m.unavailable
                    .iter()
                    .map(|(b, e)| {
                        Json::obj([
                            ("backend", Json::str(b.name())),
                            ("reason", Json::str(e.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("auto", Json::str(m.auto.backend().name())),
        (
            "probe_costs",
            Json::Arr(
                m.costs
                    .iter()
                    .map(|c| {
                        Json::obj([
                            ("backend", Json::str(c.backend.clone())),
                            ("case", Json::str(c.case)),
                            ("len", Json::num(c.len as f64)),
                            ("ns", Json::num(c.ns)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "unwind",
            Json::Arr(
                m.unwind
                    .iter()
                    .map(|(w, d, ns)| {
                        Json::obj([
                            ("walker", Json::str(w.clone())),
                            ("depth", Json::num(*d as f64)),
                            ("ns_per_frame", Json::num(*ns)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "profiler",
            Json::Arr(m.prof.iter().map(profiler_json).collect()),
        ),
        (
            "scaling",
            Json::Arr(
                m.scaling
                    .iter()
                    .map(|(b, churn, t, pps)| {
                        Json::obj([
                            ("backend", Json::str(b.name())),
                            ("churn", Json::Bool(*churn)),
                            ("threads", Json::num(*t as f64)),
                            ("probes_per_s", Json::num(*pps)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "targets",
            Json::Arr(
                m.targets
                    .iter()
                    .map(|t| {
                        Json::obj([
                            ("what", Json::str(t.what.clone())),
                            ("target", Json::str(t.target)),
                            ("ratio", Json::opt(t.ratio, Json::num)),
                            ("pass", Json::opt(t.pass, Json::Bool)),
                            ("note", Json::str(t.note.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

fn profiler_json(r: &ProfRow) -> Json {
    Json::obj([
        ("walker", Json::str(r.walker.name())),
        ("hz", Json::num(r.hz as f64)),
        ("churn", Json::Bool(r.churn)),
        ("slowdown_pct", Json::num(r.slowdown_pct)),
        ("samples", Json::num(r.samples as f64)),
        ("frames_per_sample", Json::num(r.frames_per_sample)),
        ("walk_ns_per_sample", Json::num(r.walk_ns)),
        ("validation_ns_per_sample", Json::num(r.validation_ns)),
        ("walk_share_pct", Json::num(r.walk_share_pct)),
    ])
}

/// The whole run as Markdown tables.
fn print_markdown(m: &Measured) {
    println!(
        "# addrprobe bench{}\n",
        if m.quick { " --quick" } else { "" }
    );
    println!(
        "kernel {} · {} · nproc {} · page {} B · auto() = {} · {:.1} s\n",
        context::kernel_release(),
        context::cpu_model(),
        context::nproc(),
        addrprobe::range::page_size(),
        m.auto.backend(),
        m.elapsed.as_secs_f64()
    );
    for (b, e) in &m.unavailable {
        println!("- {b} unavailable: {e}");
    }
    print_targets(&m.targets);
    print_probe_costs(&m.costs);
    if let Some((table, wrong, _)) = &m.peers {
        println!("\n## Peers on the conformance fixtures (pprof wrong on {wrong})\n\n{table}");
    }
    print_unwind(&m.unwind);
    print_profiler(&m.prof);
    print_scaling(&m.probers, &m.scaling);
    println!();
    print!("{}", m.fast_path.markdown);
}

fn print_targets(targets: &[Target]) {
    println!("\n## Targets (ratios measured in this run)\n");
    println!("| what | ratio | target | result | note |\n| --- | --- | --- | --- | --- |");
    for t in targets {
        println!(
            "| {} | {} | {} | {} | {} |",
            t.what,
            t.ratio.map_or("—".into(), |r| format!("{r:.2}")),
            t.target,
            match t.pass {
                Some(true) => "pass",
                Some(false) => "**miss**",
                None => "not measured",
            },
            t.note
        );
    }
}

fn print_probe_costs(costs: &[Cost]) {
    for len in lengths() {
        println!(
            "\n## Probe cost, {} (ns per probe, fastest of the repetitions)\n",
            len_label(len)
        );
        print!("| backend |");
        for c in Case::ALL {
            print!(" {} |", c.name());
        }
        println!("\n| --- |{}", " ---: |".repeat(Case::ALL.len()));
        let mut names: Vec<&str> = Vec::new();
        for c in costs {
            if c.len == len && !names.contains(&c.backend.as_str()) {
                names.push(&c.backend);
            }
        }
        for n in names {
            print!("| {n} |");
            for case in Case::ALL {
                print!(
                    " {} |",
                    cost_of(costs, n, case, len).map_or("".into(), fmt_ns)
                );
            }
            println!();
        }
    }
}

fn print_unwind(unwind: &[(String, usize, f64)]) {
    println!("\n## Unwinder: ns per frame (real recursion, frame pointers)\n");
    println!("| walker | depth 16 | depth 64 | depth 256 |\n| --- | ---: | ---: | ---: |");
    let mut names: Vec<&str> = Vec::new();
    for (w, _, _) in unwind {
        if !names.contains(&w.as_str()) {
            names.push(w);
        }
    }
    for n in names {
        print!("| {n} |");
        for d in [16, 64, 256] {
            let v = unwind.iter().find(|r| r.0 == n && r.1 == d).map(|r| r.2);
            print!(" {} |", v.map_or("".into(), |x| format!("{x:.1}")));
        }
        println!();
    }
}

fn print_profiler(prof: &[ProfRow]) {
    println!(
        "\n## Profiler: SIGPROF per thread (timer_create, SIGEV_THREAD_ID), {} CPU-bound threads, 64-frame stacks\n",
        context::nproc().max(2)
    );
    println!(
        "slowdown: work units per second of the workers' own CPU time, against unprofiled runs before and after (CPU time, not wall time, so other processes on a shared machine do not count; signal delivery and the handler do); walk share: samples × walk time / CPU time (the handler's own cost, signal delivery excluded).\n"
    );
    println!(
        "| walker | Hz | churn | slowdown % | samples | frames/sample | walk ns/sample | validation ns/sample | walk share % |\n| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in prof {
        println!(
            "| {} | {} | {} | {:.2} | {} | {:.1} | {:.0} | {:.0} | {:.3} |",
            r.walker.name(),
            r.hz,
            if r.churn { "mmap/munmap" } else { "no" },
            r.slowdown_pct,
            r.samples,
            r.frames_per_sample,
            r.walk_ns,
            r.validation_ns,
            r.walk_share_pct
        );
    }
}

fn print_scaling(probers: &[Prober], scaling: &[(Backend, bool, usize, f64)]) {
    println!("\n## Scaling: probes/s (valid 8 B), all threads together\n");
    let n = context::nproc();
    print!("| backend | churn |");
    for t in 1..=n {
        print!(" {t} thr |");
    }
    println!("\n| --- | --- |{}", " ---: |".repeat(n));
    for p in probers {
        for churn in [false, true] {
            print!("| {} | {} |", p.backend(), if churn { "yes" } else { "no" });
            for t in 1..=n {
                let v = scaling
                    .iter()
                    .find(|r| r.0 == p.backend() && r.1 == churn && r.2 == t)
                    .map(|r| r.3);
                print!(" {} |", v.map_or("".into(), |x| format!("{:.2e}", x)));
            }
            println!();
        }
    }
}
