//! A SIGPROF sampling profiler over a CPU-bound multi-threaded workload: the profiler
//! workload of the benchmarks.
//!
//! Each worker thread recurses to a fixed depth (so every sample has a deep stack) and then
//! spins on arithmetic, counting work units. When profiling, every worker arms its own
//! `timer_create` timer with `SIGEV_THREAD_ID`, so SIGPROF lands on that thread. The timer
//! runs on `CLOCK_MONOTONIC` (an hrtimer): CPU-time clocks (`CLOCK_THREAD_CPUTIME_ID`,
//! `ITIMER_PROF`) are only checked at the scheduler tick, so they cannot fire more often than
//! `CONFIG_HZ` per thread (measured here: ~100 samples/s at a requested 10 kHz). The workers
//! are CPU-bound, so wall-clock sampling hits them just the same. The handler reads `pc`/`fp` from the `ucontext`
//! ([`regs_from_ucontext`]) and walks the frame-pointer chain with the chosen [`Walker`]
//! into per-thread buffers allocated before the timer is armed: it allocates nothing, takes
//! no lock and only calls `clock_gettime` and the prober.
//!
//! A walk that outlasts the sampling period (a slow or emulated CPU, a deep stack, a syscall
//! per frame) would find the next signal already pending when the handler returns, so the
//! worker would never run again and never see the end of the run. Three guards prevent that:
//! such a handler re-arms its thread's timer so that the next expiry comes one walk's time
//! later at the earliest ([`Report::late_walks`] counts these walks); a signal that comes less
//! than half a period after the previous walk ended (one already pending when the timer was
//! re-armed, which kernels before the posix-timer rework still deliver) is not walked and
//! pushes the next expiry a period out ([`Report::skipped`]), so the worker gets at least half
//! a period to itself between two walks; and once the run is over the first handler that runs
//! disarms its timer instead of walking.
//!
//! [`run`] reports the work done, samples, frames per sample and the time spent walking per
//! sample (measured inside the handler). Comparing [`Report::units`] with an unprofiled run
//! ([`Walker::Off`]) of the same length gives the slowdown. An optional churn thread loops
//! `mmap`/`munmap` to contend for the mmap lock, which several backends take.
//!
//! Only one run may be active in a process at a time (a process-wide SIGPROF handler is
//! installed for the run and the previous disposition restored afterwards); [`run`]
//! serializes callers.

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use addrprobe::unwind::{Frame, Start, Unwinder, regs_from_ucontext, walk_chain};
use addrprobe::{Backend, Guarantee, Prober};

/// How the signal handler walks the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walker {
    /// No profiling at all: the baseline.
    Off,
    /// Sample and walk with plain loads, fenced to the interrupted thread's own stack
    /// (`sp <= fp < stack top`): the cost of sampling without validation.
    NoValidation,
    /// Walk with this backend: [`Unwinder::new`] for Readable backends, and for the others
    /// [`Unwinder::check_then_load`] fenced to the thread's own stack as above.
    Backend(Backend),
    /// Walk with this Readable backend and the stack-bounds fast path
    /// ([`Unwinder::with_fast_path`]): frames on the worker's registered stack are read with
    /// plain loads, every other frame through the prober.
    FastPath(Backend),
}

impl Walker {
    /// Label for tables.
    pub fn name(&self) -> String {
        match self {
            Walker::Off => "unprofiled".into(),
            Walker::NoValidation => "no validation".into(),
            Walker::Backend(b) => b.to_string(),
            Walker::FastPath(b) => format!("{b} + fast path"),
        }
    }
}

/// One profiler run.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How the handler walks.
    pub walker: Walker,
    /// Samples per second per thread (wall clock; the threads are CPU-bound).
    pub hz: u32,
    /// CPU-bound worker threads.
    pub threads: usize,
    /// Recursion depth of the workload (frames below the spinning leaf).
    pub depth: usize,
    /// Wall-clock length of the run.
    pub duration: Duration,
    /// Run an extra thread that loops `mmap`/`munmap` of 64 KiB.
    pub churn: bool,
    /// Keep the first this many samples per thread (pcs) for [`Report::stacks`].
    pub keep_samples: usize,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Work units completed by all workers.
    pub units: u64,
    /// CPU time the workers' spin loops consumed (their thread CPU clocks, signal handling
    /// included), in nanoseconds.
    pub cpu_ns: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Samples taken (handler invocations that walked).
    pub samples: u64,
    /// Frames recorded over all samples.
    pub frames: u64,
    /// Nanoseconds spent walking, summed over all samples (measured in the handler).
    pub walk_ns: u64,
    /// Walks that ended with a prober error.
    pub errors: u64,
    /// Samples whose walk took at least the sampling period; each pushed its thread's next
    /// sample one walk's time out (see the module docs).
    pub late_walks: u64,
    /// Signals that came less than half a period after the previous walk ended and were not
    /// walked (see the module docs).
    pub skipped: u64,
    /// mmap/munmap pairs done by the churn thread.
    pub churn_ops: u64,
    /// Kept samples: each a stack of pcs, innermost first.
    pub stacks: Vec<Vec<usize>>,
}

impl Report {
    /// Frames per sample.
    pub fn frames_per_sample(&self) -> f64 {
        self.frames as f64 / self.samples.max(1) as f64
    }
    /// Walk (validation included) nanoseconds per sample.
    pub fn walk_ns_per_sample(&self) -> f64 {
        self.walk_ns as f64 / self.samples.max(1) as f64
    }
    /// Work units per second of wall time.
    pub fn units_per_s(&self) -> f64 {
        self.units as f64 / self.elapsed.as_secs_f64()
    }
    /// Work units per second of the workers' own CPU time: insensitive to other processes
    /// competing for the CPUs, sensitive to everything the profiler makes the workers do
    /// (signal delivery, the handler, cache pollution).
    pub fn units_per_cpu_s(&self) -> f64 {
        self.units as f64 / (self.cpu_ns.max(1) as f64 / 1e9)
    }
}

/// Frames a sample may hold.
pub const MAX_FRAMES: usize = 256;

/// Per-thread state, allocated before the timer is armed; only the owning thread's signal
/// handler writes it while the timer runs.
struct ThreadState {
    stack_hi: usize,
    scratch: [Frame; MAX_FRAMES],
    kept: Vec<usize>,
    kept_lens: Vec<u16>,
    keep: usize,
    samples: u64,
    frames: u64,
    walk_ns: u64,
    errors: u64,
    late_walks: u64,
    skipped: u64,
    /// When the last walk ended (`CLOCK_MONOTONIC` ns; 0 before the first).
    last_end: u64,
    /// This thread's timer, set before it is armed.
    timer: Option<Timer>,
    period_ns: u64,
}

thread_local! {
    static STATE: Cell<*mut ThreadState> = const { Cell::new(core::ptr::null_mut()) };
}

const MODE_NOVALID: u8 = 1;
const MODE_READ: u8 = 2;
const MODE_CHECK_LOAD: u8 = 3;
const MODE_FAST_PATH: u8 = 4;
static MODE: AtomicU8 = AtomicU8::new(0);
static PROBER: AtomicPtr<Prober> = AtomicPtr::new(core::ptr::null_mut());
static STOP: AtomicBool = AtomicBool::new(false);
static RUN_LOCK: Mutex<()> = Mutex::new(());

fn now_ns() -> u64 {
    super::clock_ns(libc::CLOCK_MONOTONIC)
}

extern "C" fn on_sigprof(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let st = STATE.with(|c| c.get());
    if st.is_null() {
        return;
    }
    // SAFETY: `st` is this thread's state, registered by this thread and only touched by
    // this thread's handler while the timer runs (SIGPROF does not nest: it is blocked
    // during its own handler).
    let st = unsafe { &mut *st };
    if STOP.load(Ordering::Relaxed) {
        // The run is over: stop sampling so that the worker gets to see it.
        if let Some(t) = st.timer {
            t.set(0, 0);
        }
        return;
    }
    if st.last_end != 0 && now_ns().saturating_sub(st.last_end) < st.period_ns / 2 {
        // The worker has not had half a period to itself since the last walk ended (a signal
        // that was already pending when the timer was pushed out: kernels before the
        // posix-timer rework deliver it anyway). Skip, and push the next expiry a period out.
        st.skipped += 1;
        if let Some(t) = st.timer {
            t.set(st.period_ns, st.period_ns);
        }
        return;
    }
    // SAFETY: `uc` is the kernel's ucontext for this running handler.
    let Some(regs) = (unsafe { regs_from_ucontext(uc) }) else {
        return;
    };
    let t0 = now_ns();
    let mode = MODE.load(Ordering::Relaxed);
    let (lo, hi) = (regs.sp, st.stack_hi);
    let fenced = |fp: usize| fp >= lo && fp.saturating_add(16) <= hi;
    st.scratch[0] = Frame {
        pc: regs.pc,
        fp: regs.fp,
    };
    let out = &mut st.scratch[..];
    let walk = match mode {
        MODE_NOVALID => walk_chain(regs.fp, 0, out, 1, |fp| {
            if !fenced(fp) {
                return Ok(None);
            }
            // SAFETY: `fp` lies between the interrupted stack pointer and the top of this
            // thread's stack: mapped, readable memory of a live stack.
            Ok(Some(unsafe {
                [
                    core::ptr::read_volatile(fp as *const usize),
                    core::ptr::read_volatile((fp + 8) as *const usize),
                ]
            }))
        }),
        MODE_READ | MODE_CHECK_LOAD => {
            // SAFETY: set before any timer is armed and cleared after all are deleted.
            let prober = unsafe { &*PROBER.load(Ordering::Relaxed) };
            let unwinder = if mode == MODE_READ {
                match Unwinder::new(prober) {
                    Ok(u) => u,
                    Err(_) => return,
                }
            } else {
                // SAFETY: every frame is fenced to this thread's live stack below.
                unsafe { Unwinder::check_then_load(prober) }
            };
            walk_chain(regs.fp, 0, out, 1, |fp| {
                if mode == MODE_CHECK_LOAD && !fenced(fp) {
                    return Ok(None);
                }
                unwinder.read_frame(fp)
            })
        }
        MODE_FAST_PATH => {
            // SAFETY: set before any timer is armed and cleared after all are deleted.
            let prober = unsafe { &*PROBER.load(Ordering::Relaxed) };
            match Unwinder::new(prober) {
                Ok(u) => u.with_fast_path(true).walk(Start::Regs(regs), out, None),
                Err(_) => return,
            }
        }
        _ => return,
    };
    let t1 = now_ns();
    let walk_ns = t1.saturating_sub(t0);
    if walk_ns >= st.period_ns {
        // The next expiry has passed already: push it one walk's time out, so that the
        // worker runs at least as long as the walk took before the next sample.
        st.late_walks += 1;
        if let Some(t) = st.timer {
            t.set(walk_ns, st.period_ns);
        }
    }
    st.last_end = now_ns();
    st.samples += 1;
    st.frames += walk.depth as u64;
    st.walk_ns += walk_ns;
    if matches!(walk.stop, addrprobe::unwind::Stop::Error(_)) {
        st.errors += 1;
    }
    if st.kept_lens.len() < st.keep {
        // Capacity was reserved for `keep` samples of MAX_FRAMES: no allocation here.
        for f in &st.scratch[..walk.depth] {
            st.kept.push(f.pc);
        }
        st.kept_lens.push(walk.depth as u16);
    }
}

fn stack_hi() -> usize {
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread; we destroy it after.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return 0;
        }
        let mut addr = core::ptr::null_mut();
        let mut size = 0;
        libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        addr as usize + size
    }
}

/// One work unit: about a microsecond of integer arithmetic.
#[inline(never)]
fn work_unit(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..256 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

/// A thread's SIGPROF timer (`timer_create` with `SIGEV_THREAD_ID`), created disarmed.
#[derive(Clone, Copy)]
struct Timer(libc::timer_t);

impl Timer {
    fn create() -> Option<Timer> {
        // SAFETY: a zeroed sigevent is valid; we fill the fields SIGEV_THREAD_ID needs.
        unsafe {
            let mut sev: libc::sigevent = core::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGPROF;
            sev.sigev_notify_thread_id = libc::gettid();
            let mut id: libc::timer_t = core::mem::zeroed();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) != 0 {
                return None;
            }
            Some(Timer(id))
        }
    }

    /// Next expiry in `first_ns`, then every `period_ns`; `first_ns == 0` disarms.
    /// Async-signal-safe (`timer_settime` is).
    fn set(self, first_ns: u64, period_ns: u64) -> bool {
        let ts = |ns: u64| libc::timespec {
            tv_sec: (ns / 1_000_000_000) as _,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        };
        let its = libc::itimerspec {
            it_interval: ts(period_ns),
            it_value: ts(first_ns),
        };
        // SAFETY: `self.0` is a timer this thread created and has not deleted (it is deleted
        // in `drop`, after the thread stopped using it).
        unsafe { libc::timer_settime(self.0, 0, &its, core::ptr::null_mut()) == 0 }
    }
}

// SAFETY: a `timer_t` is a process-wide timer id (glibc keeps the kernel's id in the pointer
// value); any thread may pass it to `timer_settime`. Only the owning worker and its handler
// use it; the id travels back to the spawning thread inside the finished state, unused.
unsafe impl Send for Timer {}

/// Owns a [`Timer`] and deletes it.
struct OwnedTimer(Timer);

impl Drop for OwnedTimer {
    fn drop(&mut self) {
        // SAFETY: deletes the timer this value created; pending signals are then discarded
        // or handled with a still-registered state.
        unsafe { libc::timer_delete(self.0.0) };
    }
}

fn worker(
    cfg: Config,
    units: &AtomicUsize,
    cpu: &AtomicUsize,
    started: &AtomicUsize,
    go: &AtomicBool,
) -> ThreadState {
    let mut st = Box::new(ThreadState {
        stack_hi: stack_hi(),
        scratch: [Frame::default(); MAX_FRAMES],
        kept: Vec::with_capacity(cfg.keep_samples * MAX_FRAMES),
        kept_lens: Vec::with_capacity(cfg.keep_samples),
        keep: cfg.keep_samples,
        samples: 0,
        frames: 0,
        walk_ns: 0,
        errors: 0,
        late_walks: 0,
        skipped: 0,
        last_end: 0,
        timer: None,
        period_ns: 1_000_000_000 / u64::from(cfg.hz.max(1)),
    });
    let timer = match cfg.walker {
        Walker::Off => None,
        _ => Timer::create().map(OwnedTimer),
    };
    // Set before the timer is armed: the handler re-arms or disarms it through the state.
    st.timer = timer.as_ref().map(|t| t.0);
    STATE.with(|c| c.set(&mut *st));
    // For Walker::FastPath (the other walkers never look at it).
    let _ = addrprobe::stack_bounds::StackBounds::register_current_thread();
    if let Some(t) = &timer {
        t.0.set(st.period_ns, st.period_ns);
    }
    let mut done = 0u64;
    let mut spent = 0u64;
    super::recurse(cfg.depth, &mut || {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let c0 = super::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        // Two-phase start: every worker waits until all are here and the run's clock started.
        started.fetch_add(1, Ordering::Release);
        while !go.load(Ordering::Acquire) {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        while !STOP.load(Ordering::Relaxed) {
            seed = work_unit(seed);
            done += 1;
        }
        spent = super::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) - c0;
    });
    cpu.fetch_add(spent as usize, Ordering::Relaxed);
    drop(timer);
    // Block SIGPROF before unregistering, so that no late signal sees a dangling state.
    // SAFETY: plain signal-mask manipulation of this thread.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPROF);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
    }
    STATE.with(|c| c.set(core::ptr::null_mut()));
    units.fetch_add(done as usize, Ordering::Relaxed);
    *st
}

/// Runs one profiler configuration. The `prober` is required for [`Walker::Backend`] and
/// must be of that backend.
pub fn run(cfg: Config, prober: Option<&Prober>) -> Report {
    let _guard = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mode = match cfg.walker {
        Walker::Off => 0,
        Walker::NoValidation => MODE_NOVALID,
        Walker::Backend(_) => match prober.map(Prober::guarantee) {
            Some(Guarantee::Readable) => MODE_READ,
            Some(_) => MODE_CHECK_LOAD,
            None => 0,
        },
        Walker::FastPath(_) => match prober.map(Prober::guarantee) {
            Some(Guarantee::Readable) => MODE_FAST_PATH,
            _ => 0,
        },
    };
    MODE.store(mode, Ordering::Relaxed);
    PROBER.store(
        prober.map_or(core::ptr::null_mut(), |p| p as *const Prober as *mut Prober),
        Ordering::Release,
    );
    STOP.store(false, Ordering::Relaxed);
    // SAFETY: `sigaction` is plain old data; all-zero is a valid (empty) value.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: installs our handler, saving the previous disposition, restored below.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_sigprof
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGPROF, &sa, &mut old);
    }
    let units = AtomicUsize::new(0);
    let cpu = AtomicUsize::new(0);
    let churn_stop = AtomicBool::new(false);
    let started = AtomicUsize::new(0);
    let go = AtomicBool::new(false);
    let mut start = Instant::now();
    let (states, churn_ops) = std::thread::scope(|s| {
        let churner = cfg.churn.then(|| s.spawn(|| super::churn(&churn_stop)));
        let workers: Vec<_> = (0..cfg.threads.max(1))
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(8 << 20)
                    .spawn_scoped(s, || worker(cfg, &units, &cpu, &started, &go))
                    .expect("spawn worker")
            })
            .collect();
        // The run's duration counts from the moment every worker is ready to work (an
        // emulated CPU can take longer than the whole duration to start a thread); bounded,
        // so that a worker that never starts cannot hang the run (it then does no unit).
        let waiting = Instant::now();
        while started.load(Ordering::Acquire) < workers.len()
            && waiting.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        start = Instant::now();
        go.store(true, Ordering::Release);
        std::thread::sleep(cfg.duration);
        STOP.store(true, Ordering::Relaxed);
        churn_stop.store(true, Ordering::Relaxed);
        let states: Vec<ThreadState> = workers.into_iter().map(|h| h.join().unwrap()).collect();
        (states, churner.map_or(0, |h| h.join().unwrap()))
    });
    let elapsed = start.elapsed();
    // SAFETY: restores the disposition saved above; every timer is deleted.
    unsafe { libc::sigaction(libc::SIGPROF, &old, core::ptr::null_mut()) };
    PROBER.store(core::ptr::null_mut(), Ordering::Release);
    let mut r = Report {
        units: units.load(Ordering::Relaxed) as u64,
        cpu_ns: cpu.load(Ordering::Relaxed) as u64,
        elapsed,
        churn_ops,
        ..Report::default()
    };
    for st in states {
        r.samples += st.samples;
        r.frames += st.frames;
        r.walk_ns += st.walk_ns;
        r.errors += st.errors;
        r.late_walks += st.late_walks;
        r.skipped += st.skipped;
        let mut off = 0;
        for &len in &st.kept_lens {
            r.stacks.push(st.kept[off..off + len as usize].to_vec());
            off += len as usize;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiler_samples_deep_stacks_and_restores_the_handler() {
        let prober = Prober::new(Backend::SigprocMask).unwrap();
        let cfg = Config {
            walker: Walker::Backend(Backend::SigprocMask),
            hz: 1000,
            threads: 2,
            depth: 64,
            duration: Duration::from_millis(300),
            churn: true,
            keep_samples: 8,
        };
        let r = run(cfg, Some(&prober));
        assert!(r.units > 0, "{r:?}");
        assert!(r.samples > 0, "{r:?}");
        assert!(r.churn_ops > 0, "{r:?}");
        assert_eq!(r.errors, 0);
        // Every sample came from a thread 64 frames deep in `recurse`.
        assert!(r.frames_per_sample() > 64.0, "{}", r.frames_per_sample());
        assert!(!r.stacks.is_empty());
        // SAFETY: `sigaction` is plain old data; all-zero is a valid value.
        let mut cur: libc::sigaction = unsafe { core::mem::zeroed() };
        // SAFETY: a null new action only reads the current disposition into `cur`.
        unsafe { libc::sigaction(libc::SIGPROF, core::ptr::null(), &mut cur) };
        assert_eq!(cur.sa_sigaction, libc::SIG_DFL);
    }
}
