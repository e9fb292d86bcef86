//! A SIGPROF sampling profiler that unwinds with framehop through `.eh_frame`, no frame
//! pointers needed, reading the stack through [`StackReader`].
//!
//! `cargo run --release --example framehop_profile --features framehop`
//!
//! 1. Before the timer is armed, everything is built: the [`Prober`], the framehop unwinder
//!    with one module per loaded object (found with `dl_iterate_phdr`, unwinding through its
//!    `.eh_frame`/`.eh_frame_hdr`), framehop's cache, the sample buffer, and the sampled
//!    thread's [`StackBounds`]. Nothing is allocated or locked in the handler.
//! 2. A worker thread recurses [`DEPTH`] levels deep and spins in the leaf; SIGPROF
//!    (`ITIMER_PROF`) lands on it (the main thread blocks SIGPROF). The handler runs on the
//!    worker's own stack, so the [`StackReader`] serves the interrupted frames with plain loads
//!    (the own-stack fast path) and anything else through the prober; the first backend error
//!    is latched, so a broken backend is reported instead of looking like the end of the stack.
//! 3. After the timer is disarmed, the samples are printed as folded stacks
//!    (`module+offset` frames, root first) and a summary line that `tests/framehop_profiler.rs`
//!    checks: `SUMMARY leaf_samples=.. complete=.. errors=.. samples=.. fp_max_depth=..
//!    fp_truncated=..`. A leaf sample is complete when its unwind holds all [`DEPTH`] frames
//!    of the recursion; `fp_max_depth` is the deepest walk the crate's frame-pointer unwinder
//!    made of the same samples (a handful in a build without frame pointers), and
//!    `fp_truncated` counts the leaf samples whose frame-pointer walk `Walk::ending` reports
//!    as probably truncated (all of them without frame pointers, none with).
//!
//! Options (environment): `FRAMEHOP_PROFILE_SAMPLES` (default 500, leaf samples to take; at
//! most 60 CPU seconds are spent), `FRAMEHOP_PROFILE_QUIET=1` prints only the summary.
//! `--bench [--quick]` runs the benchmark of `framehop_profile/bench.rs` instead (what the
//! reader costs the unwind, on the thread's own stack and from a sigaltstack).

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::collections::HashMap;

use addrprobe::Prober;
use addrprobe::reader::StackReader;
use addrprobe::stack_bounds::StackBounds;
use addrprobe::unwind::{Ending, Frame, Start, Unwinder as FpUnwinder, regs_from_ucontext};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, MustNotAllocateDuringUnwind, Unwinder};

/// Frames of the recursion a complete leaf sample holds.
pub const DEPTH: usize = 64;
/// Most frames recorded per sample.
const MAX_FRAMES: usize = 256;
/// Most samples kept.
const MAX_SAMPLES: usize = 8192;

/// What the handler writes per sample.
#[derive(Clone, Copy)]
struct Sample {
    frames: [u64; MAX_FRAMES],
    depth: usize,
    in_leaf: bool,
    /// The walk ended with framehop's `Ok(None)` (a root frame).
    clean_end: bool,
    /// The reader latched a backend error.
    backend_error: bool,
    /// Frames the crate's frame-pointer unwinder found for the same sample (few in a build
    /// without frame pointers: that is what this example is for).
    fp_depth: usize,
    /// What that walk's end says ([`addrprobe::unwind::Walk::ending`]): in a build without frame pointers, a
    /// leaf sample's chain breaks far below the worker's entry frames.
    fp_ending: Ending,
}

type Memory = &'static [u8];

/// Everything the handler uses, built before the timer is armed.
struct Profiler {
    prober: Prober,
    unwinder: UnwinderX86_64<Memory, MustNotAllocateDuringUnwind>,
    /// Only the handler touches it, and SIGPROF is blocked while the handler runs and on
    /// every other thread, so the handler never races with itself.
    cache: UnsafeCell<CacheX86_64<MustNotAllocateDuringUnwind>>,
    samples: UnsafeCell<Vec<Sample>>,
    taken: AtomicUsize,
}

// SAFETY: the `UnsafeCell`s are only accessed by the SIGPROF handler on the one worker
// thread that receives SIGPROF (see `Profiler::cache`), and by the main thread after the
// timer is disarmed and the worker joined.
unsafe impl Sync for Profiler {}

static PROFILER: AtomicPtr<Profiler> = AtomicPtr::new(core::ptr::null_mut());
static IN_LEAF: AtomicBool = AtomicBool::new(false);
/// Set by the handler once it has taken `TARGET` samples in the leaf.
static STOP: AtomicBool = AtomicBool::new(false);
static TARGET: AtomicUsize = AtomicUsize::new(0);
static LEAF_TAKEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigprof(_sig: c_int, _info: *mut libc::siginfo_t, uc: *mut c_void) {
    let p = PROFILER.load(Ordering::Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: set once to a leaked `Profiler` before the timer is armed, never freed.
    let prof = unsafe { &*p };
    let in_leaf = IN_LEAF.load(Ordering::Relaxed);
    let i = prof.taken.load(Ordering::Relaxed);
    if i >= MAX_SAMPLES {
        return;
    }
    // SAFETY: `uc` is the ucontext the kernel passed to this running handler.
    let Some(regs) = (unsafe { regs_from_ucontext(uc) }) else {
        return;
    };
    // SAFETY: only this handler touches the cache and the samples, and it does not run
    // concurrently with itself (see `Profiler::cache`); index `i` is below the preallocated
    // length.
    let (cache, samples) = unsafe { (&mut *prof.cache.get(), &mut *prof.samples.get()) };
    let sample = &mut samples[i];
    let reader = StackReader::new(&prof.prober, regs.sp);
    let mut read_stack = reader.framehop_memory();
    let mut frames = prof.unwinder.iter_frames(
        regs.pc as u64,
        UnwindRegsX86_64::new(regs.pc as u64, regs.sp as u64, regs.fp as u64),
        cache,
        &mut read_stack,
    );
    let mut depth = 0;
    let mut clean_end = false;
    while depth < MAX_FRAMES {
        match frames.next() {
            Ok(Some(f)) => {
                sample.frames[depth] = f.address();
                depth += 1;
            }
            Ok(None) => {
                clean_end = true;
                break;
            }
            Err(_) => break,
        }
    }
    sample.depth = depth;
    sample.in_leaf = in_leaf;
    sample.clean_end = clean_end;
    sample.backend_error = reader.error().is_some();
    let mut fp_frames = [Frame::default(); MAX_FRAMES];
    let start = Start::Regs(regs);
    (sample.fp_depth, sample.fp_ending) = match FpUnwinder::new(&prof.prober) {
        Ok(u) => {
            let walk = u.with_fast_path(true).walk(start, &mut fp_frames, None);
            let bounds = StackBounds::current();
            (walk.depth, walk.ending(&start, &fp_frames, bounds.as_ref()))
        }
        Err(_) => (0, Ending::Unknown),
    };
    prof.taken.store(i + 1, Ordering::Relaxed);
    if in_leaf && LEAF_TAKEN.fetch_add(1, Ordering::Relaxed) + 1 >= TARGET.load(Ordering::Relaxed) {
        STOP.store(true, Ordering::Relaxed);
    }
}

/// One loaded object: the name, its load bias and its executable segment.
struct LoadedModule {
    name: String,
    bias: u64,
    text: core::ops::Range<u64>,
    eh_frame_hdr: Option<core::ops::Range<u64>>,
    /// `PT_LOAD` segments `(start, end)` as loaded, to bound `.eh_frame`.
    loads: Vec<core::ops::Range<u64>>,
}

unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Vec` that `loaded_modules` passed; `info` is valid for this call.
    let (out, info) = unsafe { (&mut *(data as *mut Vec<LoadedModule>), &*info) };
    let bias = info.dlpi_addr;
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated name owned by the dynamic linker.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut m = LoadedModule {
        name: if name.is_empty() {
            "[exe]".into()
        } else {
            name
        },
        bias,
        text: 0..0,
        eh_frame_hdr: None,
        loads: Vec::new(),
    };
    for i in 0..usize::from(info.dlpi_phnum) {
        // SAFETY: `dlpi_phdr` has `dlpi_phnum` entries.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        let start = bias + ph.p_vaddr;
        let range = start..start + ph.p_memsz;
        match ph.p_type {
            libc::PT_LOAD => {
                if ph.p_flags & libc::PF_X != 0 && m.text.is_empty() {
                    m.text = range.clone();
                }
                if ph.p_flags & libc::PF_R != 0 {
                    m.loads.push(range);
                }
            }
            libc::PT_GNU_EH_FRAME => m.eh_frame_hdr = Some(range),
            _ => {}
        }
    }
    if !m.text.is_empty() {
        out.push(m);
    }
    0
}

/// Every loaded object, from `dl_iterate_phdr`.
fn loaded_modules() -> Vec<LoadedModule> {
    let mut out: Vec<LoadedModule> = Vec::new();
    // SAFETY: `collect` only uses `data` as the `Vec` passed here, during this call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(collect),
            &mut out as *mut Vec<LoadedModule> as *mut c_void,
        )
    };
    out
}

/// `len` bytes at `addr` of a loaded object.
///
/// # Safety
///
/// `[addr, addr + len)` must lie in a readable segment of an object that stays loaded for the
/// rest of the process (this example never `dlclose`s).
unsafe fn loaded_bytes(addr: u64, len: u64) -> Memory {
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) }
}

/// A framehop module for `m`, unwinding through its `.eh_frame` (located through
/// `.eh_frame_hdr`'s `eh_frame_ptr`, which is `DW_EH_PE_pcrel | DW_EH_PE_sdata4` in every
/// object GNU ld, gold, lld and mold write).
fn framehop_module(m: &LoadedModule) -> Option<Module<Memory>> {
    let hdr = m.eh_frame_hdr.clone()?;
    let readable = |r: &core::ops::Range<u64>| {
        m.loads
            .iter()
            .find(|l| l.start <= r.start && r.end <= l.end)
            .cloned()
    };
    readable(&hdr)?;
    // SAFETY: `PT_GNU_EH_FRAME` lies inside a readable PT_LOAD segment (checked above) of a
    // loaded object, which stays loaded.
    let hdr_bytes = unsafe { loaded_bytes(hdr.start, hdr.end - hdr.start) };
    if hdr_bytes.len() < 8 || hdr_bytes[0] != 1 || hdr_bytes[1] != 0x1b {
        return None;
    }
    let rel = i32::from_ne_bytes(hdr_bytes[4..8].try_into().ok()?);
    let eh_frame = (hdr.start + 4).checked_add_signed(i64::from(rel))?;
    // `.eh_frame` ends with a zero terminator; bound it by the end of its segment.
    let seg = readable(&(eh_frame..eh_frame + 4))?;
    // SAFETY: inside a readable PT_LOAD segment of a loaded object, which stays loaded.
    let eh_bytes = unsafe { loaded_bytes(eh_frame, seg.end - eh_frame) };
    let text_seg = readable(&m.text);
    // SAFETY: the executable segment, readable (a PF_R segment) of a loaded object.
    let text = text_seg.map(|t| unsafe { loaded_bytes(t.start, t.end - t.start) });
    let svma = |r: core::ops::Range<u64>| r.start - m.bias..r.end - m.bias;
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: text.map(|_| svma(m.text.clone())),
        text,
        eh_frame_svma: Some(svma(eh_frame..seg.end)),
        eh_frame: Some(eh_bytes),
        eh_frame_hdr_svma: Some(svma(hdr.clone())),
        eh_frame_hdr: Some(hdr_bytes),
        ..Default::default()
    };
    Some(Module::new(m.name.clone(), m.text.clone(), m.bias, info))
}

/// Spins until the handler has taken its samples (`STOP`) or `iterations` are done, calling
/// nothing, so that every sample taken here has its pc in this function.
#[inline(never)]
fn leaf(iterations: u64) -> u64 {
    IN_LEAF.store(true, Ordering::Relaxed);
    let mut x = 1u64;
    for i in 0..iterations {
        x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        if i % 4096 == 0 && STOP.load(Ordering::Relaxed) {
            break;
        }
    }
    IN_LEAF.store(false, Ordering::Relaxed);
    x
}

/// `n` frames of itself above `leaf`; not a tail call (the addition comes after).
#[inline(never)]
fn recurse(n: usize, iterations: u64) -> u64 {
    let r = if n <= 1 {
        leaf(iterations)
    } else {
        recurse(n - 1, iterations)
    };
    core::hint::black_box(r).wrapping_add(n as u64)
}

/// Whether a leaf sample's unwind holds all `DEPTH` recursion frames: `frames[0]` is the
/// leaf's pc, `frames[1]` the return address into `recurse(1)` (the call of `leaf`), then
/// `DEPTH - 1` equal return addresses into the recursive call site, then the caller.
pub fn complete(frames: &[u64]) -> bool {
    if frames.len() < DEPTH + 2 {
        return false;
    }
    let site = frames[2];
    frames[1] != 0
        && frames[1] != site
        && frames[2..=DEPTH].iter().all(|&f| f == site)
        && frames[DEPTH + 1] != site
}

fn name_of(modules: &[LoadedModule], addr: u64) -> String {
    match modules.iter().find(|m| m.text.contains(&addr)) {
        Some(m) => {
            let base = m.name.rsplit('/').next().unwrap_or(&m.name);
            format!("{base}+{:#x}", addr - m.bias)
        }
        None => format!("{addr:#x}"),
    }
}

#[path = "framehop_profile/bench.rs"]
mod bench;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--bench") {
        bench::run(args.iter().any(|a| a == "--quick"));
        return;
    }
    let target: usize = std::env::var("FRAMEHOP_PROFILE_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    TARGET.store(target.clamp(1, MAX_SAMPLES), Ordering::Relaxed);
    let secs = 60.0;
    let quiet = std::env::var("FRAMEHOP_PROFILE_QUIET").is_ok_and(|v| v == "1");

    // 1. Everything the handler needs, before the timer is armed (`Prober::new`/`auto` and
    //    framehop's modules allocate: never build them in the handler).
    let prober = Prober::auto().expect("a readable backend");
    let modules = loaded_modules();
    let mut unwinder = UnwinderX86_64::new();
    let mut with_unwind_info = 0;
    for m in &modules {
        if let Some(module) = framehop_module(m) {
            unwinder.add_module(module);
            with_unwind_info += 1;
        }
    }
    let empty = Sample {
        frames: [0; MAX_FRAMES],
        depth: 0,
        in_leaf: false,
        clean_end: false,
        backend_error: false,
        fp_depth: 0,
        fp_ending: Ending::Unknown,
    };
    let profiler: &'static Profiler = Box::leak(Box::new(Profiler {
        prober,
        unwinder,
        cache: UnsafeCell::new(CacheX86_64::new_in()),
        samples: UnsafeCell::new(vec![empty; MAX_SAMPLES]),
        taken: AtomicUsize::new(0),
    }));
    PROFILER.store(
        profiler as *const Profiler as *mut Profiler,
        Ordering::Release,
    );
    eprintln!(
        "backend {}, {} modules ({with_unwind_info} with .eh_frame)",
        profiler.prober.backend(),
        modules.len()
    );

    // SIGPROF only for the worker: the main thread blocks it (a process-directed signal goes
    // to a thread that does not block it), and the worker inherits the mask, then unblocks.
    // SAFETY: plain signal-mask and disposition calls with valid arguments.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPROF);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_sigprof as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGPROF, &sa, core::ptr::null_mut()),
            0
        );
    }

    let worker = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            StackBounds::register_current_thread().expect("register the worker's stack");
            // Calibrate the leaf's loop (and warm framehop's modules) before sampling.
            let t = std::time::Instant::now();
            let calib = 20_000_000;
            core::hint::black_box(recurse(DEPTH, calib));
            let per_iter = t.elapsed().as_secs_f64() / calib as f64;
            let iterations = (secs / per_iter) as u64;
            STOP.store(false, Ordering::Relaxed);
            // SAFETY: unblocks SIGPROF on this thread only.
            unsafe {
                let mut set: libc::sigset_t = core::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGPROF);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
            }
            let timer = libc::itimerval {
                it_interval: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 1000,
                },
                it_value: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 1000,
                },
            };
            // 2. Arm, run, disarm.
            // SAFETY: setitimer with valid pointers.
            unsafe { libc::setitimer(libc::ITIMER_PROF, &timer, core::ptr::null_mut()) };
            let r = recurse(DEPTH, iterations);
            let off = libc::itimerval {
                it_interval: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 0,
                },
                it_value: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 0,
                },
            };
            // SAFETY: as above.
            unsafe { libc::setitimer(libc::ITIMER_PROF, &off, core::ptr::null_mut()) };
            core::hint::black_box(r);
        })
        .expect("spawn the worker");
    worker.join().expect("worker");

    // 3. Report (allocation is fine again).
    let taken = profiler.taken.load(Ordering::Relaxed);
    // SAFETY: the timer is off and the worker, the only thread that took SIGPROF, has exited.
    let samples = unsafe { &*profiler.samples.get() };
    let samples = &samples[..taken];
    let mut folded: HashMap<String, usize> = HashMap::new();
    let (mut leaf_samples, mut complete_samples, mut errors, mut fp_max) = (0, 0, 0, 0);
    let mut fp_truncated = 0;
    for s in samples {
        let frames = &s.frames[..s.depth];
        errors += usize::from(s.backend_error);
        fp_max = fp_max.max(s.fp_depth);
        if s.in_leaf {
            leaf_samples += 1;
            complete_samples += usize::from(complete(frames));
            fp_truncated += usize::from(matches!(s.fp_ending, Ending::ProbablyTruncated { .. }));
        }
        let mut stack: Vec<String> = frames.iter().rev().map(|&a| name_of(&modules, a)).collect();
        if !s.clean_end {
            stack.insert(0, "[truncated]".into());
        }
        *folded.entry(stack.join(";")).or_default() += 1;
    }
    if !quiet {
        let mut lines: Vec<_> = folded.into_iter().collect();
        lines.sort();
        for (stack, n) in lines {
            println!("{stack} {n}");
        }
    }
    println!(
        "SUMMARY leaf_samples={leaf_samples} complete={complete_samples} errors={errors} \
         samples={taken} fp_max_depth={fp_max} fp_truncated={fp_truncated}"
    );
}
