//! Measurements behind the stack-bounds fast path's targets, shared by `addrprobe bench` and
//! `benches/fast_path.rs` so that both report the same numbers.
//!
//! **Not part of the probe API** (hidden from the docs; may change in any release). Every
//! function here is set-up or timing code, not signal-safe, and meant for a benchmark
//! process: [`profiler`] installs a SIGPROF handler and, for [`ProfMode::SignalGuard`], the
//! crate's SIGSEGV/SIGBUS handler.
//!
//! - [`own_stack_walks`]: a 64-frame walk of the calling thread's own stack with each way of
//!   validating it, against the same walk with no validation, in the same run.
//! - [`batched_walks`]: a 64-frame walk of a hand-made coroutine stack (off the thread's
//!   stack, so every frame is probed) with and without batch windows.
//! - [`profiler`]: a SIGPROF profiler at a chosen rate over CPU-bound threads whose stacks are
//!   at least 64 frames deep; each sample walks the interrupted stack from the `ucontext`.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::stack_bounds::StackBounds;
use crate::unwind::{Frame, Regs, Unwinder, Walk, walk_chain};
use crate::{AutoOptions, Backend, Prober};

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
    /// [`batched_walks`]: median ns against the same backend's walk with one probe per frame.
    pub vs_baseline: f64,
    /// Frames each walk recorded.
    pub frames: usize,
    /// Prober calls per walk.
    pub probes: usize,
}

/// Median ns per call of `f` over `reps` repetitions of `iters` calls.
fn median_ns(reps: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters.min(1000) {
        f();
    }
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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

/// Recurses `depth` levels and runs `f` at the bottom (each level keeps its frame pointer).
#[inline(never)]
fn deep<R>(depth: usize, f: &mut dyn FnMut() -> R) -> R {
    let r = if depth == 0 { f() } else { deep(depth - 1, f) };
    black_box(depth);
    r
}

/// The baseline: the same walk with plain loads and no validation at all (only sound on an
/// intact stack, which the benchmark's is).
#[inline(never)]
fn walk_unvalidated(out: &mut [Frame]) -> Walk {
    let (fp, sp) = fp_sp();
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

#[inline(always)]
fn fp_sp() -> (usize, usize) {
    cfg_if::cfg_if! {
        if #[cfg(target_arch = "x86_64")] {
            let (fp, sp): (usize, usize);
            // SAFETY: reads two registers.
            unsafe { core::arch::asm!("mov {}, rbp", "mov {}, rsp", out(reg) fp, out(reg) sp,
                options(nomem, nostack, preserves_flags)) };
            (fp, sp)
        } else if #[cfg(target_arch = "aarch64")] {
            let (fp, sp): (usize, usize);
            // SAFETY: reads two registers.
            unsafe { core::arch::asm!("mov {}, x29", "mov {}, sp", out(reg) fp, out(reg) sp,
                options(nomem, nostack, preserves_flags)) };
            (fp, sp)
        } else {
            (0, 0)
        }
    }
}

/// Walks of [`FRAMES`] frames of the calling thread's own stack (registered first), timed in
/// the same run: `none` (plain loads), `Prober::auto()` with and without the fast path, and
/// the other Readable backends with the fast path. `allow_signal_guard` adds
/// [`Backend::SignalGuard`] (it installs a process-wide handler).
pub fn own_stack_walks(quick: bool, allow_signal_guard: bool) -> Vec<WalkRow> {
    let _ = StackBounds::register_current_thread();
    let (reps, iters) = if quick { (5, 2_000) } else { (11, 10_000) };
    let auto = Prober::auto().ok();
    let mut extra: Vec<Prober> = [Backend::ProcessVmReadv, Backend::Pipe]
        .into_iter()
        .filter(|b| auto.as_ref().map(|a| a.backend()) != Some(*b))
        .filter_map(|b| Prober::new(b).ok())
        .collect();
    if allow_signal_guard {
        extra.extend(Prober::new(Backend::SignalGuard).ok());
    }
    deep(FRAMES + 16, &mut || {
        let mut rows = Vec::new();
        let mut out = [Frame::default(); FRAMES];
        let mut out_base = [Frame::default(); FRAMES];
        let ns = median_ns(reps, iters, || {
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
        for (name, u) in variants {
            let u = u.with_max_depth(FRAMES);
            let reps_here = if u.fast_path() || u.prober().backend() == Backend::SignalGuard {
                reps
            } else {
                reps.min(5)
            };
            let iters_here = if u.fast_path() || u.prober().backend() == Backend::SignalGuard {
                iters
            } else {
                (iters / 50).max(20)
            };
            // Paired with the baseline: each repetition times both, back to back, so that
            // the ratio is measured under the same machine load.
            let (ns, ratio) = paired(
                reps_here,
                iters_here,
                &mut || {
                    black_box(walk_unvalidated(black_box(&mut out_base)));
                },
                &mut || {
                    black_box(u.walk_current(black_box(&mut out)));
                },
            );
            let mut stats = crate::unwind::ReadStats::default();
            let w = u.walk_current_counted(&mut out, &mut stats);
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
        let ps = crate::range::page_size();
        let len = (FRAMES * spacing + 256).next_multiple_of(ps) + ps;
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        let base = p as usize;
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
            let ns = median_ns(reps, iters, || {
                black_box(u.walk_from_regs(&regs, black_box(&mut out)));
            });
            let mut stats = crate::unwind::ReadStats::default();
            let w = u.walk_from_regs_counted(&regs, &mut out, &mut stats);
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

/// How the profiler's signal handler validates its walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfMode {
    /// No profiler at all (the baseline run).
    Off,
    /// Timer and handler, but the handler does not walk (the cost of sampling itself).
    SignalsOnly,
    /// [`Backend::SignalGuard`] reads every frame.
    SignalGuard,
    /// `Prober::auto()` (no signal handler) with the stack-bounds fast path.
    AutoFastPath,
    /// `Prober::auto()`, every frame probed (not run at 10 kHz: see [`profiler`]).
    AutoProbed,
}

impl ProfMode {
    /// Name used in tables.
    pub const fn name(self) -> &'static str {
        match self {
            ProfMode::Off => "unprofiled",
            ProfMode::SignalsOnly => "signals only, no walk",
            ProfMode::SignalGuard => "signal-guard",
            ProfMode::AutoFastPath => "auto() + fast path",
            ProfMode::AutoProbed => "auto(), every frame probed",
        }
    }
}

/// One profiler run.
#[derive(Clone, Copy, Debug)]
pub struct ProfRow {
    /// The mode.
    pub mode: ProfMode,
    /// Median over the rounds of the workers' mean CPU time, in seconds.
    pub cpu_s: f64,
    /// Slowdown against the unprofiled median, in percent.
    pub slowdown_pct: f64,
    /// Samples taken (per run).
    pub samples: u64,
    /// Mean frames per sample.
    pub frames_per_sample: f64,
    /// Mean ns the handler spent walking, per sample.
    pub walk_ns_per_sample: f64,
    /// Median ns the handler spent walking, per sample.
    pub walk_ns_median: f64,
}

static PROF_UNWINDER: AtomicUsize = AtomicUsize::new(0);
static PROF_WALK: AtomicUsize = AtomicUsize::new(0);
static SAMPLES: AtomicU64 = AtomicU64::new(0);
static FRAMES_SEEN: AtomicU64 = AtomicU64::new(0);
static WALK_NS: AtomicU64 = AtomicU64::new(0);
/// Per-sample walk times of the current run (the median is robust against a sample that was
/// preempted mid-walk on a loaded machine; the mean is not).
const MAX_RECORDED: usize = 1 << 16;
static WALK_TIMES: [AtomicU32; MAX_RECORDED] = [const { AtomicU32::new(0) }; MAX_RECORDED];
static RECORDED: AtomicUsize = AtomicUsize::new(0);

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

extern "C" fn on_sigprof(_: libc::c_int, _: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    SAMPLES.fetch_add(1, Ordering::Relaxed);
    if PROF_WALK.load(Ordering::Relaxed) == 0 {
        return;
    }
    let u = PROF_UNWINDER.load(Ordering::Acquire) as *const Unwinder<'static>;
    if u.is_null() {
        return;
    }
    let t = now_ns();
    // SAFETY: PROF_UNWINDER points to an Unwinder that outlives the run (cleared and the
    // timers deleted before it is dropped); `uc` is the kernel's ucontext.
    let depth = unsafe {
        match crate::unwind::regs_from_ucontext(uc) {
            Some(regs) => {
                let mut out = [Frame::default(); 256];
                (*u).walk_from_regs(&regs, &mut out).depth
            }
            None => 0,
        }
    };
    let dt = now_ns() - t;
    WALK_NS.fetch_add(dt, Ordering::Relaxed);
    let slot = RECORDED.fetch_add(1, Ordering::Relaxed);
    if slot < MAX_RECORDED {
        WALK_TIMES[slot].store(dt.min(u32::MAX as u64) as u32, Ordering::Relaxed);
    }
    FRAMES_SEEN.fetch_add(depth as u64, Ordering::Relaxed);
}

/// One worker: registers its stack, arms its own timer, and spins at a stack depth
/// of at least [`FRAMES`] frames for `work` iterations. Returns the thread's CPU time in
/// seconds, which includes the signal deliveries and handlers and, unlike wall time, not the
/// time other processes on the machine took.
fn worker(work: u64, interval: Duration, profiled: bool) -> f64 {
    let _ = StackBounds::register_current_thread();
    let mut timer: libc::timer_t = core::ptr::null_mut();
    if profiled {
        // SAFETY: a zeroed sigevent is valid; SIGEV_THREAD_ID targets this thread with SIGPROF.
        unsafe {
            let mut sev: libc::sigevent = core::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGPROF;
            sev.sigev_notify_thread_id = libc::gettid();
            assert_eq!(
                libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer),
                0,
                "timer_create"
            );
            let ts = libc::timespec {
                tv_sec: interval.as_secs() as libc::time_t,
                tv_nsec: interval.subsec_nanos() as libc::c_long,
            };
            let spec = libc::itimerspec {
                it_interval: ts,
                it_value: ts,
            };
            assert_eq!(
                libc::timer_settime(timer, 0, &spec, core::ptr::null_mut()),
                0
            );
        }
    }
    let t = thread_cpu_ns();
    deep(FRAMES + 8, &mut || {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..work {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        black_box(x);
    });
    let cpu = (thread_cpu_ns() - t) as f64 / 1e9;
    if profiled {
        // SAFETY: deletes the timer created above.
        unsafe { libc::timer_delete(timer) };
    }
    cpu
}

/// CPU time of the calling thread (user and kernel, signal handling included).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The SIGPROF profiler workload: `threads` CPU-bound threads, each sampled at `hz` by its own
/// `CLOCK_MONOTONIC` timer delivered to it with `SIGEV_THREAD_ID` (CPU-time timers are only
/// checked at the scheduler tick, which caps them far below 10 kHz), for every mode in [`ProfMode`], alternating modes for
/// `rounds` rounds. Returns one row per mode (medians over the rounds).
pub fn profiler(quick: bool, threads: usize, hz: u64) -> Vec<ProfRow> {
    let rounds = if quick { 3 } else { 7 };
    let work: u64 = if quick { 60_000_000 } else { 200_000_000 };
    let interval = Duration::from_nanos(1_000_000_000 / hz.max(1));
    let auto = Prober::auto().expect("a readable backend");
    let guard = AutoOptions::new().allow_signal_handler(true).build().ok();
    let guard = guard.filter(|p| p.backend() == Backend::SignalGuard);
    let u_auto = Unwinder::new(&auto).expect("readable");
    let u_fast = u_auto.with_fast_path(true);
    let u_guard = guard.as_ref().map(|g| Unwinder::new(g).expect("readable"));

    // SAFETY: installs a SIGPROF handler for this benchmark process (restored below).
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: a zeroed sigaction with an SA_SIGINFO handler and empty mask is valid.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_sigprof as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGPROF, &sa, &mut old);
    }
    // `AutoProbed` is not run: at ~1 µs or more per probed frame a 70-frame walk takes longer
    // than the 100 µs between samples at 10 kHz, and the workload would barely progress.
    let mut modes = vec![ProfMode::Off, ProfMode::SignalsOnly, ProfMode::AutoFastPath];
    if u_guard.is_some() {
        modes.insert(2, ProfMode::SignalGuard);
    }
    let mut walls: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut totals = vec![(0u64, 0u64, 0u64); modes.len()];
    let mut walk_times: Vec<Vec<u32>> = vec![Vec::new(); modes.len()];
    for _ in 0..rounds {
        for (i, &mode) in modes.iter().enumerate() {
            let u: Option<&Unwinder> = match mode {
                ProfMode::SignalGuard => u_guard.as_ref(),
                ProfMode::AutoFastPath => Some(&u_fast),
                ProfMode::AutoProbed => Some(&u_auto),
                _ => None,
            };
            PROF_UNWINDER.store(
                u.map_or(0, |u| u as *const Unwinder as usize),
                Ordering::Release,
            );
            PROF_WALK.store(usize::from(u.is_some()), Ordering::Relaxed);
            SAMPLES.store(0, Ordering::Relaxed);
            FRAMES_SEEN.store(0, Ordering::Relaxed);
            WALK_NS.store(0, Ordering::Relaxed);
            RECORDED.store(0, Ordering::Relaxed);
            let profiled = mode != ProfMode::Off;
            let handles: Vec<_> = (0..threads)
                .map(|_| std::thread::spawn(move || worker(work, interval, profiled)))
                .collect();
            let wall = handles
                .into_iter()
                .map(|h| h.join().expect("worker"))
                .sum::<f64>()
                / threads as f64;
            PROF_UNWINDER.store(0, Ordering::Release);
            walls[i].push(wall);
            totals[i].0 += SAMPLES.load(Ordering::Relaxed);
            totals[i].1 += FRAMES_SEEN.load(Ordering::Relaxed);
            totals[i].2 += WALK_NS.load(Ordering::Relaxed);
            let n = RECORDED.load(Ordering::Relaxed).min(MAX_RECORDED);
            walk_times[i].extend(WALK_TIMES[..n].iter().map(|t| t.load(Ordering::Relaxed)));
        }
    }
    // SAFETY: restores the previous SIGPROF disposition (all timers are deleted).
    unsafe { libc::sigaction(libc::SIGPROF, &old, core::ptr::null_mut()) };
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&mut walls[0].clone());
    modes
        .iter()
        .enumerate()
        .map(|(i, &mode)| {
            let wall = median(&mut walls[i]);
            let (s, f, ns) = totals[i];
            let times = &mut walk_times[i];
            times.sort_unstable();
            let median_walk = times.get(times.len() / 2).map_or(0.0, |&t| t as f64);
            ProfRow {
                mode,
                cpu_s: wall,
                slowdown_pct: (wall / base - 1.0) * 100.0,
                samples: s / rounds as u64,
                frames_per_sample: if s > 0 { f as f64 / s as f64 } else { 0.0 },
                walk_ns_per_sample: if s > 0 { ns as f64 / s as f64 } else { 0.0 },
                walk_ns_median: median_walk,
            }
        })
        .collect()
}
