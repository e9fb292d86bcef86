//! Measurements behind the stack-bounds fast path's targets, shared by `addrprobe bench` and
//! `benches/fast_path.rs` so that both report the same numbers.
//!
//! **Not part of the probe API** (hidden from the docs; may change in any release). Every
//! function here is set-up or timing code, not signal-safe, and meant for a benchmark
//! process: [`profiler()`] installs a SIGPROF handler for each run and the crate's SIGSEGV/SIGBUS
//! handler.
//!
//! - [`own_stack_walks`]: a 64-frame walk of the calling thread's own stack with each way of
//!   validating it, against the same walk with no validation, in the same run.
//! - [`batched_walks`]: a 64-frame walk of a hand-made coroutine stack (off the thread's
//!   stack, so every frame is probed) with and without batch windows.
//! - [`profiler()`]: the benchmarks' SIGPROF profiler workload ([`crate::bench::profiler`]) with
//!   the fast-path walker against SignalGuard, interleaved, in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::bench::profiler::{self, Walker};

use addrprobe::stack_bounds::StackBounds;
use addrprobe::unwind::{Frame, Regs, Start, Unwinder, Walk, walk_chain};
use addrprobe::{Backend, Prober};

/// Frames per walk in [`own_stack_walks`] and [`batched_walks`].
pub const FRAMES: usize = 64;

/// One timed walk variant.
#[derive(Clone, Debug)]
pub struct WalkRow {
    /// What was measured.
    pub name: String,
    /// Median nanoseconds per walk.
    pub ns_per_walk: f64,
    /// For [`own_stack_walks`]: the median over repetitions of (this walk's time / the
    /// unvalidated walk's time), each repetition timing both back to back. For
    /// [`batched_walks`]: ns (fastest repetition) against the same backend's walk with one probe per frame.
    pub vs_baseline: f64,
    /// Frames each walk recorded.
    pub frames: usize,
    /// Prober calls per walk.
    pub probes: usize,
}

/// ns per call of `f`: `iters` warm-up calls, then the fastest of `reps` repetitions of
/// `iters` calls (`bench::ns_per_call` with a fixed count).
fn fixed_ns(reps: usize, iters: usize, f: impl FnMut()) -> f64 {
    crate::bench::ns_per_call(
        crate::bench::Budget {
            per_rep: std::time::Duration::MAX,
            reps,
            max_iters: iters as u64,
        },
        f,
    )
}

/// Times `base` and `f` back to back in each of `reps` repetitions of `iters` calls:
/// `(median ns per call of f, median of the per-repetition ratios f / base)`.
fn paired(reps: usize, iters: usize, base: &mut dyn FnMut(), f: &mut dyn FnMut()) -> (f64, f64) {
    for _ in 0..iters.min(1000) {
        base();
        f();
    }
    let mut ns = Vec::with_capacity(reps);
    let mut ratios = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..iters {
            base();
        }
        let b = t.elapsed().as_nanos() as f64;
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let v = t.elapsed().as_nanos() as f64;
        ns.push(v / iters as f64);
        ratios.push(v / b);
    }
    ns.sort_by(f64::total_cmp);
    ratios.sort_by(f64::total_cmp);
    (ns[reps / 2], ratios[reps / 2])
}

/// The baseline: the same walk with plain loads and no validation at all (only sound on an
/// intact stack, which the benchmark's is).
#[inline(never)]
fn walk_unvalidated(out: &mut [Frame]) -> Walk {
    let (fp, sp) = crate::bench::current_fp_sp();
    // `fp == sp` in a frame without locals: the bound is "at or above sp".
    walk_chain(fp, sp.saturating_sub(1), out, 0, |fp| {
        let p = fp as *const usize;
        // SAFETY: benchmark only: walks this thread's own intact frame chain, compiled with
        // frame pointers, for at most FRAMES frames that all lie on its live stack.
        Ok(Some(unsafe {
            [
                core::ptr::read_volatile(p),
                core::ptr::read_volatile(p.add(1)),
            ]
        }))
    })
}

/// Walks of [`FRAMES`] frames of the calling thread's own stack (registered first), timed in
/// the same run: `none` (plain loads), `Prober::auto()` with and without the fast path, and
/// the other Readable backends with the fast path. `allow_signal_guard` adds
/// [`Backend::SignalGuard`] (it installs a process-wide handler).
pub fn own_stack_walks(quick: bool, allow_signal_guard: bool) -> Vec<WalkRow> {
    let _ = StackBounds::register_current_thread();
    // Many short paired repetitions: each pair sees the same machine load.
    let (reps, iters) = if quick { (9, 1_000) } else { (31, 2_000) };
    let auto = Prober::auto().ok();
    let mut extra: Vec<Prober> = [Backend::ProcessVmReadv, Backend::Pipe]
        .into_iter()
        .filter(|b| auto.as_ref().map(|a| a.backend()) != Some(*b))
        .filter_map(|b| Prober::new(b).ok())
        .collect();
    if allow_signal_guard {
        extra.extend(Prober::new(Backend::SignalGuard).ok());
    }
    crate::bench::recurse(FRAMES + 16, &mut || {
        let mut rows = Vec::new();
        let mut out = [Frame::default(); FRAMES];
        let mut out_base = [Frame::default(); FRAMES];
        let ns = fixed_ns(reps, iters, || {
            black_box(walk_unvalidated(black_box(&mut out)));
        });
        rows.push(WalkRow {
            name: "no validation (plain loads)".into(),
            ns_per_walk: ns,
            vs_baseline: 1.0,
            frames: walk_unvalidated(&mut out).depth,
            probes: 0,
        });
        let mut variants: Vec<(String, Unwinder)> = Vec::new();
        if let Some(a) = auto.as_ref() {
            let u = Unwinder::new(a).expect("auto is readable");
            variants.push((
                format!("Prober::auto() ({}) + fast path", a.backend()),
                u.with_fast_path(true),
            ));
            variants.push((
                format!("Prober::auto() ({}), every frame probed", a.backend()),
                u,
            ));
        }
        for p in &extra {
            let u = Unwinder::new(p).expect("readable");
            variants.push((
                format!("{} + fast path", p.backend()),
                u.with_fast_path(true),
            ));
            variants.push((format!("{}, every frame probed", p.backend()), u));
        }
        // Three passes over all variants; each variant's figures are the median of its
        // passes, so that a burst of load from other processes during one variant's turn
        // does not decide its row.
        let mut passes: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
        for _ in 0..3 {
            for (i, (_, u)) in variants.iter().enumerate() {
                let u = u.with_max_depth(FRAMES);
                let cheap = u.fast_path() || u.prober().backend() == Backend::SignalGuard;
                let (reps_here, iters_here) = if cheap {
                    (reps, iters)
                } else {
                    (reps.min(3), (iters / 25).max(20))
                };
                // Paired with the baseline: each repetition times both, back to back, so
                // that the ratio is measured under the same machine load.
                passes[i].push(paired(
                    reps_here,
                    iters_here,
                    &mut || {
                        black_box(walk_unvalidated(black_box(&mut out_base)));
                    },
                    &mut || {
                        black_box(u.walk(Start::Current, black_box(&mut out), None));
                    },
                ));
            }
        }
        for ((name, u), mut p) in variants.into_iter().zip(passes) {
            let u = u.with_max_depth(FRAMES);
            p.sort_by(|a, b| a.1.total_cmp(&b.1));
            let (ns, ratio) = p[p.len() / 2];
            let mut stats = addrprobe::unwind::ReadStats::default();
            let w = u.walk(Start::Current, &mut out, Some(&mut stats));
            rows.push(WalkRow {
                name,
                ns_per_walk: ns,
                vs_baseline: ratio,
                frames: w.depth,
                probes: stats.probes,
            });
        }
        rows
    })
}

/// A hand-made coroutine stack: [`FRAMES`] frame records `spacing` bytes apart in an mmap'd
/// region (so off the thread's stack: every frame is probed).
struct Coroutine {
    base: usize,
    len: usize,
    first: usize,
}

impl Coroutine {
    fn new(spacing: usize) -> Coroutine {
        let ps = addrprobe::range::page_size();
        let len = (FRAMES * spacing + 256).next_multiple_of(ps) + ps;
        let base = crate::fixtures::map_anonymous(len).expect("mmap of the coroutine stack");
        let first = base + 64;
        for i in 0..FRAMES {
            let at = first + i * spacing;
            let next = if i + 1 < FRAMES { at + spacing } else { 0 };
            // SAFETY: inside the mapping made above, aligned.
            unsafe {
                *(at as *mut usize) = next;
                *((at + 8) as *mut usize) = 0x1000 + i;
            }
        }
        Coroutine { base, len, first }
    }
}

impl Drop for Coroutine {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// Walks of a [`FRAMES`]-frame coroutine stack (frames `spacing` bytes apart) with every
/// syscall backend, without batching and with 256- and 1024-byte batch windows.
pub fn batched_walks(quick: bool, spacing: usize) -> Vec<WalkRow> {
    let (reps, iters) = if quick { (3, 30) } else { (7, 200) };
    let co = Coroutine::new(spacing);
    let mut rows = Vec::new();
    for backend in [Backend::ProcessVmReadv, Backend::SigprocMask, Backend::Pipe] {
        let Ok(p) = Prober::new(backend) else {
            continue;
        };
        let mut per_frame = f64::NAN;
        for window in [0usize, 256, 1024] {
            let u = Unwinder::new(&p)
                .expect("readable")
                .with_batch_window(window);
            let regs = Regs {
                pc: 0xfff,
                fp: co.first,
                sp: co.first - 64,
            };
            let mut out = [Frame::default(); FRAMES + 1];
            let ns = fixed_ns(reps, iters, || {
                black_box(u.walk(Start::Regs(regs), black_box(&mut out), None));
            });
            let mut stats = addrprobe::unwind::ReadStats::default();
            let w = u.walk(Start::Regs(regs), &mut out, Some(&mut stats));
            if window == 0 {
                per_frame = ns;
            }
            rows.push(WalkRow {
                name: if window == 0 {
                    format!("{backend}, one probe per frame")
                } else {
                    format!("{backend}, {window}-byte batch window")
                },
                ns_per_walk: ns,
                vs_baseline: ns / per_frame,
                frames: w.depth - 1,
                probes: stats.probes,
            });
        }
    }
    rows
}

/// One profiler configuration's result (medians over the rounds).
#[derive(Clone, Debug)]
pub struct ProfRow {
    /// The walker.
    pub walker: Walker,
    /// Slowdown in percent: `1 - (work per CPU second) / (unprofiled work per CPU second)`.
    pub slowdown_pct: f64,
    /// Samples per run.
    pub samples: u64,
    /// Mean frames per sample.
    pub frames_per_sample: f64,
    /// Mean ns the handler spent walking, per sample.
    pub walk_ns_per_sample: f64,
}

/// The benchmarks' SIGPROF profiler workload ([`crate::bench::profiler`]) at `hz` with
/// `threads` CPU-bound workers and 64-frame stacks: unprofiled, no validation, SignalGuard
/// (if it can be installed) and `Prober::auto()` with the fast path, interleaved for a few
/// rounds. Installs the SignalGuard handler.
pub fn profiler(quick: bool, threads: usize, hz: u32) -> Vec<ProfRow> {
    let rounds = if quick { 3 } else { 5 };
    let duration = Duration::from_millis(if quick { 80 } else { 200 });
    let auto = Prober::auto().ok();
    let guard = Prober::new(Backend::SignalGuard).ok();
    let mut walkers: Vec<(Walker, Option<&Prober>)> =
        vec![(Walker::Off, None), (Walker::NoValidation, None)];
    if let Some(g) = guard.as_ref() {
        walkers.push((Walker::Backend(Backend::SignalGuard), Some(g)));
    }
    if let Some(a) = auto.as_ref() {
        walkers.push((Walker::FastPath(a.backend()), Some(a)));
    }
    let mut reports: Vec<Vec<profiler::Report>> = vec![Vec::new(); walkers.len()];
    for _ in 0..rounds {
        for (i, (w, p)) in walkers.iter().enumerate() {
            let cfg = profiler::Config {
                walker: *w,
                hz,
                threads,
                depth: FRAMES,
                duration,
                churn: false,
                keep_samples: 0,
            };
            reports[i].push(profiler::run(cfg, *p));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rate = |rs: &[profiler::Report]| median(rs.iter().map(|r| r.units_per_cpu_s()).collect());
    let base = rate(&reports[0]);
    walkers
        .iter()
        .zip(&reports)
        .map(|((w, _), rs)| ProfRow {
            walker: *w,
            slowdown_pct: (1.0 - rate(rs) / base) * 100.0,
            samples: median(rs.iter().map(|r| r.samples as f64).collect()) as u64,
            frames_per_sample: median(rs.iter().map(|r| r.frames_per_sample()).collect()),
            walk_ns_per_sample: median(rs.iter().map(|r| r.walk_ns_per_sample()).collect()),
        })
        .collect()
}
