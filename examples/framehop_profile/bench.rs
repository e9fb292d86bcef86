//! `framehop_profile --bench [--quick]`: what reading the stack through [`StackReader`] costs a
//! framehop unwind of [`DEPTH`] recursive frames inside a real SIGPROF handler, in a build
//! without frame pointers (`tests/framehop-nofp`; `addrprobe bench framehop` builds and runs
//! it). A benchmark, not a test: it prints figures and one `BENCH key=value ...` line.
//!
//! Two phases on one worker thread, whose stack is registered ([`StackBounds`]):
//!
//! 1. **Own stack**: the SIGPROF handler runs on the worker's stack. Each leaf sample unwinds
//!    the interrupted context with framehop twice per variant, back to back: memory read with
//!    plain volatile loads (only valid because it is the thread's own live stack; the
//!    baseline) and with [`StackReader::new`] (the default reader: the own-stack fast path,
//!    then the prober).
//! 2. **Sigaltstack**: the handler runs on an alternate stack (`SA_ONSTACK`), where the safe
//!    fast path cannot apply (its real stack pointer is off the thread's stack). Variants:
//!    plain loads, the reader with a snapshot of `[sp, hi)` (at most 32 KiB), and the reader
//!    with neither (every word through the prober).
//!
//! The prober is [`AutoOptions::for_reads`] (no signal handler installed). Each variant's time
//! per sample is the faster of two runs; the figures are medians over the samples, and the
//! ratios medians of the per-sample ratios (paired: same interrupted stack, same handler).
//! The bare syscall per 8-byte read (`process_vm_readv`, or `write` + `read` on a pipe) is
//! measured in the same process, in a loop.

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use addrprobe::reader::StackReader;
use addrprobe::stack_bounds::StackBounds;
use addrprobe::unwind::regs_from_ucontext;
use addrprobe::{AutoOptions, Backend, Prober};
use framehop::Unwinder;
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};

use super::{DEPTH, IN_LEAF, Memory, STOP, framehop_module, loaded_modules, recurse};

/// Variants timed per sample.
const VARIANTS: usize = 4;
/// Bare 8-byte reads timed per sample (variant 3).
const BARE_READS: usize = 64;
/// Most samples kept per phase.
const MAX_SAMPLES: usize = 4096;
/// The snapshot buffer, in words (32 KiB).
const SNAPSHOT_WORDS: usize = 4096;

struct Bench {
    prober: Prober,
    unwinder: UnwinderX86_64<Memory, framehop::MustNotAllocateDuringUnwind>,
    /// Only the handler touches these (SIGPROF is blocked while it runs and on every other
    /// thread), and the main thread after the worker has exited.
    cache: UnsafeCell<CacheX86_64<framehop::MustNotAllocateDuringUnwind>>,
    times: UnsafeCell<Vec<[u64; VARIANTS]>>,
    /// Prober reads of the no-snapshot variant per sample, and frames per sample.
    reads: UnsafeCell<Vec<(usize, usize)>>,
    snapshot: UnsafeCell<[u64; SNAPSHOT_WORDS]>,
    taken: AtomicUsize,
    target: AtomicUsize,
    /// 0: own stack, 1: sigaltstack.
    phase: AtomicUsize,
    hi: AtomicUsize,
    incomplete: AtomicUsize,
    /// The bare technique's state: the pid for `process_vm_readv`, a pipe for `pipe`.
    pid: i32,
    pipe: [c_int; 2],
}

// SAFETY: see the fields: one handler on one thread at a time, then the main thread.
unsafe impl Sync for Bench {}

static BENCH: AtomicPtr<Bench> = AtomicPtr::new(core::ptr::null_mut());
static DONE: AtomicBool = AtomicBool::new(false);

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes `ts`; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Unwinds with `mem`, returning (ns, frames).
#[inline(always)]
fn unwind<F: FnMut(u64) -> Result<u64, ()>>(
    b: &Bench,
    cache: &mut CacheX86_64<framehop::MustNotAllocateDuringUnwind>,
    regs: &addrprobe::unwind::Regs,
    mem: &mut F,
) -> (u64, usize) {
    let t = now_ns();
    let mut it = b.unwinder.iter_frames(
        regs.pc as u64,
        UnwindRegsX86_64::new(regs.pc as u64, regs.sp as u64, regs.fp as u64),
        cache,
        mem,
    );
    let mut n = 0;
    while let Ok(Some(f)) = it.next() {
        core::hint::black_box(f);
        n += 1;
        if n >= 512 {
            break;
        }
    }
    (now_ns() - t, n)
}

extern "C" fn on_sigprof(_sig: c_int, _info: *mut libc::siginfo_t, uc: *mut c_void) {
    let p = BENCH.load(Ordering::Acquire);
    if p.is_null() || !IN_LEAF.load(Ordering::Relaxed) || DONE.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: a leaked `Bench`, set before the timer is armed.
    let b = unsafe { &*p };
    let i = b.taken.load(Ordering::Relaxed);
    if i >= MAX_SAMPLES {
        return;
    }
    // SAFETY: the kernel's ucontext for this running handler.
    let Some(regs) = (unsafe { regs_from_ucontext(uc) }) else {
        return;
    };
    // SAFETY: only this handler touches these, never concurrently with itself (`Bench`).
    let (cache, times, reads, snap) = unsafe {
        (
            &mut *b.cache.get(),
            &mut *b.times.get(),
            &mut *b.reads.get(),
            &mut *b.snapshot.get(),
        )
    };
    let mut plain = |addr: u64| -> Result<u64, ()> {
        // SAFETY: benchmark baseline: framehop reads only the interrupted thread's own live
        // stack here (a complete, valid stack of this thread), which is readable.
        Ok(unsafe { core::ptr::read_volatile(addr as *const u64) })
    };
    let mut best = [u64::MAX; VARIANTS];
    let mut frames = 0;
    let mut probed = 0;
    for _rep in 0..2 {
        let (t, n) = unwind(b, cache, &regs, &mut plain);
        best[0] = best[0].min(t);
        frames = n;
        if b.phase.load(Ordering::Relaxed) == 0 {
            let reader = StackReader::new(&b.prober, regs.sp);
            let (t, _) = unwind(b, cache, &regs, &mut reader.framehop_memory());
            best[1] = best[1].min(t);
        } else {
            let t0 = now_ns();
            let words =
                ((b.hi.load(Ordering::Relaxed).saturating_sub(regs.sp)) / 8).min(SNAPSHOT_WORDS);
            if let Ok((reader, _)) =
                StackReader::new(&b.prober, regs.sp).with_snapshot(&mut snap[..words])
            {
                unwind(b, cache, &regs, &mut reader.framehop_memory());
                best[1] = best[1].min(now_ns() - t0);
            }
            let reader = StackReader::new(&b.prober, regs.sp);
            let (t, _) = unwind(b, cache, &regs, &mut reader.framehop_memory());
            best[2] = best[2].min(t);
            probed = reader.stats().probed;
            let t = now_ns();
            for _ in 0..BARE_READS {
                bare_read(b, regs.sp);
            }
            best[3] = best[3].min(now_ns() - t);
        }
    }
    if frames < DEPTH + 2 {
        b.incomplete.fetch_add(1, Ordering::Relaxed);
    }
    times[i] = best;
    reads[i] = (probed, frames);
    b.taken.store(i + 1, Ordering::Relaxed);
    if i + 1 >= b.target.load(Ordering::Relaxed) {
        DONE.store(true, Ordering::Relaxed);
        STOP.store(true, Ordering::Relaxed);
    }
}

/// The bare technique of the prober's 8-byte read of `addr`: one `process_vm_readv`, or a
/// `write` + `read` through a pipe; nothing for other backends.
#[inline(always)]
fn bare_read(b: &Bench, addr: usize) {
    let mut buf = [0u8; 8];
    match b.prober.backend() {
        Backend::ProcessVmReadv => {
            let local = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: 8,
            };
            let remote = libc::iovec {
                iov_base: addr as *mut c_void,
                iov_len: 8,
            };
            // SAFETY: the kernel validates the remote range; `local` is our buffer.
            core::hint::black_box(unsafe {
                libc::process_vm_readv(b.pid, &local, 1, &remote, 1, 0)
            });
        }
        Backend::Pipe if b.pipe[0] > 0 => {
            // SAFETY: our own pipe; the kernel validates `addr`; `buf` is ours.
            unsafe {
                libc::write(b.pipe[1], addr as *const c_void, 8);
                libc::read(b.pipe[0], buf.as_mut_ptr().cast(), 8);
            }
        }
        _ => {}
    }
    core::hint::black_box(&buf);
}

/// One phase: install the handler (on a sigaltstack if `alt`), sample the leaf of the
/// recursion until `target` samples are taken. Runs on the worker thread.
fn phase(b: &'static Bench, alt: bool, target: usize) {
    b.taken.store(0, Ordering::Relaxed);
    b.target.store(target, Ordering::Relaxed);
    b.phase.store(usize::from(alt), Ordering::Relaxed);
    DONE.store(false, Ordering::Relaxed);
    STOP.store(false, Ordering::Relaxed);
    let mut altstack = vec![0u8; 256 * 1024];
    // SAFETY: plain signal calls with valid arguments; the alternate stack outlives its use
    // (disabled below before it is freed).
    unsafe {
        if alt {
            let ss = libc::stack_t {
                ss_sp: altstack.as_mut_ptr().cast(),
                ss_flags: 0,
                ss_size: altstack.len(),
            };
            assert_eq!(libc::sigaltstack(&ss, core::ptr::null_mut()), 0);
        }
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_sigprof as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | if alt { libc::SA_ONSTACK } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGPROF, &sa, core::ptr::null_mut()),
            0
        );
    }
    let tv = |usec| libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: usec,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: usec,
        },
    };
    // SAFETY: setitimer with valid pointers.
    unsafe { libc::setitimer(libc::ITIMER_PROF, &tv(2000), core::ptr::null_mut()) };
    // At most ~60 s of spinning (STOP ends it as soon as the samples are in).
    core::hint::black_box(recurse(DEPTH, 20_000_000_000));
    // SAFETY: as above; then the default disposition and no alternate stack.
    unsafe {
        libc::setitimer(libc::ITIMER_PROF, &tv(0), core::ptr::null_mut());
        libc::signal(libc::SIGPROF, libc::SIG_IGN);
        if alt {
            let ss = libc::stack_t {
                ss_sp: core::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&ss, core::ptr::null_mut());
        }
    }
    drop(altstack);
}

/// The bare technique behind `backend`'s 8-byte read, per call, fastest of 9 runs: `None`
/// for backends this bench has no bare form of.
fn bare_read_ns(backend: Backend, quick: bool) -> Option<f64> {
    let word = core::hint::black_box(0x5au64);
    let addr = &word as *const u64 as usize;
    let mut buf = [0u8; 8];
    let mut fds = [0; 2];
    let once: Box<dyn FnMut()> = match backend {
        Backend::ProcessVmReadv => {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            Box::new(move || {
                let local = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: 8,
                };
                let remote = libc::iovec {
                    iov_base: addr as *mut c_void,
                    iov_len: 8,
                };
                // SAFETY: the kernel validates the remote range; `local` is our buffer.
                core::hint::black_box(unsafe {
                    libc::process_vm_readv(pid, &local, 1, &remote, 1, 0)
                });
            })
        }
        Backend::Pipe => {
            // SAFETY: `fds` has room for two descriptors.
            if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                return None;
            }
            Box::new(move || {
                // SAFETY: our pipe; `addr` is 8 readable bytes, `buf` is ours.
                unsafe {
                    libc::write(fds[1], addr as *const c_void, 8);
                    libc::read(fds[0], buf.as_mut_ptr().cast(), 8);
                }
            })
        }
        _ => return None,
    };
    let mut once = once;
    let iters = if quick { 2_000 } else { 20_000 };
    let mut best = f64::MAX;
    for _ in 0..9 {
        let t = now_ns();
        for _ in 0..iters {
            once();
        }
        best = best.min((now_ns() - t) as f64 / iters as f64);
    }
    drop(once);
    for fd in fds.into_iter().filter(|&fd| fd > 0) {
        // SAFETY: our own pipe's descriptors.
        unsafe { libc::close(fd) };
    }
    core::hint::black_box(&word);
    Some(best)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub fn run(quick: bool) {
    let prober = AutoOptions::for_reads()
        .build()
        .expect("a readable backend");
    let backend = prober.backend();
    let mut unwinder = UnwinderX86_64::new();
    for m in &loaded_modules() {
        if let Some(module) = framehop_module(m) {
            unwinder.add_module(module);
        }
    }
    let bench: &'static Bench = Box::leak(Box::new(Bench {
        prober,
        unwinder,
        cache: UnsafeCell::new(CacheX86_64::new_in()),
        times: UnsafeCell::new(vec![[0; VARIANTS]; MAX_SAMPLES]),
        reads: UnsafeCell::new(vec![(0, 0); MAX_SAMPLES]),
        snapshot: UnsafeCell::new([0; SNAPSHOT_WORDS]),
        taken: AtomicUsize::new(0),
        target: AtomicUsize::new(0),
        phase: AtomicUsize::new(0),
        hi: AtomicUsize::new(0),
        incomplete: AtomicUsize::new(0),
        // SAFETY: getpid has no preconditions.
        pid: unsafe { libc::getpid() },
        pipe: {
            let mut fds = [-1; 2];
            // SAFETY: room for two descriptors; on failure they stay -1 (no bare pipe).
            if backend == Backend::Pipe && unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                fds = [-1; 2];
            }
            fds
        },
    }));
    BENCH.store(bench as *const Bench as *mut Bench, Ordering::Release);
    let target = if quick { 40 } else { 300 };
    // SIGPROF only for the worker (see `main`).
    // SAFETY: plain signal-mask calls.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPROF);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
    }
    let results = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            let bounds = StackBounds::register_current_thread().expect("register the stack");
            bench.hi.store(bounds.hi(), Ordering::Relaxed);
            // SAFETY: unblocks SIGPROF on this thread only.
            unsafe {
                let mut set: libc::sigset_t = core::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGPROF);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
            }
            let mut out = Vec::new();
            for alt in [false, true] {
                phase(bench, alt, target);
                let n = bench.taken.load(Ordering::Relaxed);
                // SAFETY: the timer is off and SIGPROF ignored: the handler no longer runs.
                let (times, reads) = unsafe { (&*bench.times.get(), &*bench.reads.get()) };
                out.push((times[..n].to_vec(), reads[..n].to_vec()));
            }
            out
        })
        .expect("spawn the worker")
        .join()
        .expect("worker");
    let bare = bare_read_ns(backend, quick);
    let (own, alt) = (&results[0], &results[1]);
    let col = |s: &[[u64; VARIANTS]], k: usize| median(s.iter().map(|t| t[k] as f64).collect());
    let ratio = |s: &[[u64; VARIANTS]], k: usize| {
        median(s.iter().map(|t| t[k] as f64 / t[0] as f64).collect())
    };
    let frames = median(alt.1.iter().map(|r| r.1 as f64).collect());
    let probed = median(alt.1.iter().map(|r| r.0 as f64).collect());
    let bare_handler =
        (backend == Backend::ProcessVmReadv || backend == Backend::Pipe).then(|| {
            median(
                alt.0
                    .iter()
                    .map(|t| t[3] as f64 / BARE_READS as f64)
                    .collect(),
            )
        });
    // Per prober read, what the reader adds to the plain-load unwind, paired per sample.
    let per_read = median(
        alt.0
            .iter()
            .zip(&alt.1)
            .filter(|(_, r)| r.0 > 0)
            .map(|(t, r)| (t[2] as f64 - t[0] as f64) / r.0 as f64)
            .collect(),
    );
    // The same, over the bare technique timed in the same handler invocation.
    let per_read_ratio = median(
        alt.0
            .iter()
            .zip(&alt.1)
            .filter(|(t, r)| r.0 > 0 && t[3] > 0)
            .map(|(t, r)| {
                ((t[2] as f64 - t[0] as f64) / r.0 as f64) / (t[3] as f64 / BARE_READS as f64)
            })
            .collect(),
    );
    println!(
        "## framehop, {DEPTH} recursive frames, SIGPROF (frame pointers as built: 74 reads without them, 140 with)\n"
    );
    println!(
        "backend `{backend}` (`AutoOptions::for_reads()`), {} + {} leaf samples, {frames:.0} \
         frames per unwind, {} incomplete; ns per unwind (median of per-sample best of 2)\n",
        own.0.len(),
        alt.0.len(),
        bench.incomplete.load(Ordering::Relaxed)
    );
    println!("| stack | memory read by | ns | / plain loads |");
    println!("| --- | --- | ---: | ---: |");
    println!(
        "| own (handler on it) | plain volatile loads | {:.0} | 1.00 |",
        col(&own.0, 0)
    );
    println!(
        "| own (handler on it) | `StackReader::new` (fast path) | {:.0} | {:.2} |",
        col(&own.0, 1),
        ratio(&own.0, 1)
    );
    println!(
        "| sigaltstack handler | plain volatile loads | {:.0} | 1.00 |",
        col(&alt.0, 0)
    );
    println!(
        "| sigaltstack handler | snapshot of `[sp, hi)` (≤ 32 KiB), copy included | {:.0} | {:.2} |",
        col(&alt.0, 1),
        ratio(&alt.0, 1)
    );
    println!(
        "| sigaltstack handler | no snapshot: {probed:.0} prober reads | {:.0} | {:.2} |",
        col(&alt.0, 2),
        ratio(&alt.0, 2)
    );
    let ns = |v: Option<f64>| v.map_or("—".to_owned(), |b| format!("{b:.0}"));
    println!(
        "\nPer prober read (no snapshot − plain, / reads, paired): {per_read:.0} ns; bare \
         `{backend}` technique per 8-byte read, same run: {} ns in the handler ({BARE_READS} \
         back to back per sample, median), {} ns in a loop (fastest of 9); per-sample ratio \
         (reader per read / bare per read, same handler call), median: {per_read_ratio:.2}.",
        ns(bare_handler),
        ns(bare)
    );
    println!(
        "BENCH backend={backend} per_read_ratio={per_read_ratio:.3} own_ratio={:.3} snapshot_ratio={:.3} noshot_ratio={:.3} \
         per_read_ns={per_read:.1} bare_handler_ns={:.1} bare_loop_ns={:.1} reads={probed:.0} frames={frames:.0} \
         own_plain_ns={:.0} own_reader_ns={:.0} alt_plain_ns={:.0} alt_snapshot_ns={:.0} \
         alt_noshot_ns={:.0}",
        ratio(&own.0, 1),
        ratio(&alt.0, 1),
        ratio(&alt.0, 2),
        bare_handler.unwrap_or(-1.0),
        bare.unwrap_or(-1.0),
        col(&own.0, 0),
        col(&own.0, 1),
        col(&alt.0, 0),
        col(&alt.0, 1),
        col(&alt.0, 2),
    );
}
