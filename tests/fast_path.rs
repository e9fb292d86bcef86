//! Correctness of the stack-bounds fast path ([`addrprobe::stack_bounds`]) and of batched
//! frame reads in [`addrprobe::unwind`].
//!
//! Every case runs in its own child process: the binary re-executes itself with
//! `ADDRPROBE_CHILD=<name>` (`support::harness_main`; this target has `harness = false`, so the
//! case runs on the child's main thread, which some cases need). Cases install signal handlers, a seccomp
//! filter, alternate stacks and coroutine stacks; a crash of the child is a failure, reported
//! with its signal, and no case can take the test binary down. Each child is killed after 15 s.
//!
//! Usage: `cargo test --test fast_path [-- NAME_SUBSTRING...]`.

mod support;

use std::time::Duration;

use addrprobe::Backend;
use addrprobe::Prober;
use addrprobe::stack_bounds::{StackBounds, StackKind, current_sp};
use addrprobe::unwind::{Frame, ReadStats, Regs, Start, Stop, Unwinder, Walk};

const TIMEOUT: Duration = Duration::from_secs(15);
const WORD: usize = core::mem::size_of::<usize>();

const CASES: &[support::Case] = &[
    (
        "main_thread_bounds_are_the_mapped_stack",
        main_thread_bounds,
    ),
    (
        "user_provided_pthread_stack_is_learned_exactly",
        user_pthread_stack,
    ),
    (
        "unregistered_thread_never_takes_the_fast_path",
        unregistered_thread,
    ),
    (
        "corrupt_frame_pointers_on_the_main_thread",
        corrupt_fps_main,
    ),
    (
        "corrupt_frame_pointers_on_a_spawned_thread",
        corrupt_fps_thread,
    ),
    (
        "hand_made_coroutine_stack_is_probed_and_batched",
        hand_made_coroutine,
    ),
    ("real_coroutine_stack_via_swapcontext", real_coroutine),
    ("walk_from_a_handler_on_a_sigaltstack", sigaltstack_walk),
    (
        "walk_from_a_sigprof_handler_on_the_thread_stack",
        thread_stack_handler_walk,
    ),
    (
        "in_bounds_frames_make_no_syscall_under_seccomp",
        seccomp_no_syscall,
    ),
];

fn main() {
    support::harness_main(CASES, TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn page_size() -> usize {
    addrprobe::range::page_size()
}

/// An anonymous mapping that is unmapped on drop.
struct Mapping {
    base: usize,
    len: usize,
}

impl Mapping {
    fn new(len: usize, prot: i32) -> Mapping {
        // SAFETY: a fresh private anonymous mapping at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        Mapping {
            base: p as usize,
            len,
        }
    }

    /// A one-page mapping at the first free page-aligned address at least 1 MiB above `addr`
    /// (frame pointers must increase, so a corrupt one must point above the frames).
    fn above(addr: usize, prot: i32) -> Mapping {
        let ps = page_size();
        let mut at = (addr + (1 << 20)).next_multiple_of(ps);
        for _ in 0..4096 {
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; it fails instead.
            let p = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    ps,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p as usize == at {
                return Mapping { base: at, len: ps };
            }
            if p != libc::MAP_FAILED {
                // An old kernel ignored the flag and put it elsewhere.
                // SAFETY: our own mapping.
                unsafe { libc::munmap(p, ps) };
            }
            at += 1 << 20;
        }
        panic!("no free page above {addr:#x}");
    }

    fn protect(&self, off: usize, len: usize, prot: i32) {
        // SAFETY: the range lies inside our own mapping.
        let r = unsafe { libc::mprotect((self.base + off) as *mut libc::c_void, len, prot) };
        assert_eq!(r, 0, "mprotect");
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly our own mapping.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// Writes a frame record `[next, ra]` at `addr` (inside memory the caller owns, writable).
fn put(addr: usize, next: usize, ra: usize) {
    // SAFETY: callers pass word-aligned addresses inside writable memory they made.
    unsafe {
        core::ptr::write_volatile(addr as *mut usize, next);
        core::ptr::write_volatile((addr + WORD) as *mut usize, ra);
    }
}

/// The readable backends that work here.
fn probers() -> Vec<Prober> {
    [Backend::SigprocMask, Backend::ProcessVmReadv, Backend::Pipe]
        .into_iter()
        .filter_map(|b| Prober::new(b).ok())
        .collect()
}

/// `(start, end)` of the first `/proc/self/maps` line whose name is `name`, parsed here
/// independently of the crate.
fn maps_entry(name: &str) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        if !l.trim_end().ends_with(name) {
            return None;
        }
        let range = l.split_whitespace().next()?;
        let (a, b) = range.split_once('-')?;
        Some((
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        ))
    })
}

/// The calling function's frame pointer (this file is built with frame pointers forced).
#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads the frame pointer register.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads the frame pointer register.
    unsafe {
        core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack))
    };
    fp
}

/// Recurses `depth` levels (each with `pad` bytes of stack), records each level's frame
/// pointer (outermost first) and runs `f` at the bottom.
#[inline(never)]
fn recurse<R>(depth: usize, pad: usize, fps: &mut Vec<usize>, f: &mut dyn FnMut() -> R) -> R {
    fps.push(frame_pointer());
    let mut buf = [0u8; 4096];
    core::hint::black_box(&mut buf[..pad.min(4096)]);
    let r = if depth <= 1 {
        f()
    } else {
        recurse(depth - 1, pad, fps, f)
    };
    core::hint::black_box(&buf);
    r
}

/// Asserts that `fps` (outermost first) appear in the walk, innermost first and consecutive.
fn assert_fps_in_walk(frames: &[Frame], fps: &[usize], what: &str) {
    let want: Vec<usize> = fps.iter().rev().copied().collect();
    let start = frames
        .iter()
        .position(|f| f.fp == want[0])
        .unwrap_or_else(|| panic!("{what}: innermost frame {:#x} not in the walk", want[0]));
    let got: Vec<usize> = frames[start..]
        .iter()
        .map(|f| f.fp)
        .take(want.len())
        .collect();
    assert_eq!(got, want, "{what}: frame pointers out of order");
}

fn walk_here(unwinder: &Unwinder, stats: &mut ReadStats) -> (Walk, Vec<Frame>) {
    let mut out = vec![Frame::default(); 512];
    let w = unwinder.walk(Start::Current, &mut out, Some(stats));
    out.truncate(w.depth);
    (w, out)
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// Touches `kib` KiB of stack below the caller (on the main thread, `[stack]` grows to cover
/// it), so that a registration made afterwards covers that depth.
#[inline(never)]
fn pretouch_stack(kib: usize) {
    let mut buf = [0u8; 64 << 10];
    core::hint::black_box(&mut buf);
    if kib > 64 {
        pretouch_stack(kib - 64);
    }
    core::hint::black_box(&buf);
}

/// Main thread: `[lo, hi)` is the `[stack]` mapping at registration, whatever
/// `RLIMIT_STACK` says. Frames the stack grows to afterwards lie below `lo`: a walk from down
/// there probes them (its own stack pointer is below `lo`, so it probes every frame) and the
/// walk is still complete. Registering again at that depth moves `lo` down, and the same
/// walk reads every frame with plain loads.
fn main_thread_bounds() {
    const LIMIT: usize = 16 << 20;
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_STACK, &mut rl), 0);
        if rl.rlim_max != libc::RLIM_INFINITY {
            assert!(rl.rlim_max as usize >= LIMIT, "hard RLIMIT_STACK too low");
        }
        rl.rlim_cur = LIMIT as libc::rlim_t;
        assert_eq!(libc::setrlimit(libc::RLIMIT_STACK, &rl), 0);
    }
    let b = StackBounds::register_current_thread().expect("register the main thread");
    let (stack_start, stack_end) = maps_entry("[stack]").expect("[stack] in /proc/self/maps");
    assert_eq!(b.kind(), StackKind::Main);
    assert_eq!(
        (b.lo(), b.hi()),
        (stack_start, stack_end),
        "the [stack] mapping, not RLIMIT_STACK"
    );
    assert!(stack_end - stack_start < LIMIT);
    assert_eq!(StackBounds::current(), Some(b));

    // Grow the stack by ~1 MiB below what was mapped at registration and walk from there.
    let prober = Prober::new(Backend::ProcessVmReadv).unwrap();
    let unwinder = Unwinder::new(&prober).unwrap().with_fast_path(true);
    for again in [false, true] {
        let mut fps = Vec::new();
        let mut stats = ReadStats::default();
        let mut lo = 0;
        let (walk, frames) = recurse(256, 4096, &mut fps, &mut || {
            if again {
                lo = StackBounds::register_current_thread()
                    .expect("register at depth")
                    .lo();
            }
            walk_here(&unwinder, &mut stats)
        });
        assert_fps_in_walk(&frames, &fps, "main thread");
        assert!(!matches!(walk.stop, Stop::Error(_)), "{walk:?}");
        let deepest = *fps.last().unwrap();
        assert!(
            deepest < stack_start,
            "the recursion ({deepest:#x}) grew the stack below its registration-time start {stack_start:#x}"
        );
        if again {
            assert!(lo < deepest, "registered again at depth: lo {lo:#x}");
            assert!(
                stats.fast >= 256,
                "every recursion frame is in bounds: {stats:?}"
            );
        } else {
            assert_eq!(stats.fast, 0, "the walker runs below lo: {stats:?}");
            assert!(stats.probed >= 256, "{stats:?}");
        }
    }
}

/// What the thread saw: `(lo, hi, kind)` or the registration error.
type Learned = Result<(usize, usize, StackKind), String>;
static USER_STACK_RESULT: std::sync::Mutex<Option<Learned>> = std::sync::Mutex::new(None);

extern "C" fn user_stack_thread(_: *mut libc::c_void) -> *mut libc::c_void {
    let r = StackBounds::register_current_thread()
        .map(|b| (b.lo(), b.hi(), b.kind()))
        .map_err(|e| e.to_string());
    *USER_STACK_RESULT.lock().unwrap() = Some(r);
    core::ptr::null_mut()
}

/// A thread on a stack the test mapped itself (`pthread_attr_setstack`): the bounds are
/// exactly that region.
fn user_pthread_stack() {
    let ps = page_size();
    let size = 256 << 10;
    let region = Mapping::new(size + ps, libc::PROT_READ | libc::PROT_WRITE);
    region.protect(0, ps, libc::PROT_NONE); // a guard page of our own below
    let (lo, hi) = (region.base + ps, region.base + ps + size);
    // SAFETY: a standard pthread attr / create / join sequence; the stack region outlives
    // the thread (joined before `region` is dropped).
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        assert_eq!(libc::pthread_attr_init(&mut attr), 0);
        assert_eq!(
            libc::pthread_attr_setstack(&mut attr, lo as *mut libc::c_void, size),
            0
        );
        let mut t: libc::pthread_t = core::mem::zeroed();
        assert_eq!(
            libc::pthread_create(&mut t, &attr, user_stack_thread, core::ptr::null_mut()),
            0
        );
        assert_eq!(libc::pthread_join(t, core::ptr::null_mut()), 0);
        libc::pthread_attr_destroy(&mut attr);
    }
    let got = USER_STACK_RESULT
        .lock()
        .unwrap()
        .take()
        .expect("thread ran");
    if cfg!(target_env = "musl") {
        // musl keeps the new thread's descriptor and TLS at the top of a stack the
        // application provides, and reports the stack below them: narrower, never wider.
        let (got_lo, got_hi, kind) = got.expect("learned");
        assert_eq!((got_lo, kind), (lo, StackKind::Thread));
        assert!(
            got_hi <= hi && got_hi + 16 * 1024 > hi,
            "{got_hi:#x} vs {hi:#x}"
        );
    } else {
        assert_eq!(got, Ok((lo, hi, StackKind::Thread)));
    }
    drop(region);
}

/// A thread that never registered: the fast path is skipped for every frame, and the walk
/// is still complete. After registering, the same walk reads its frames without probes.
fn unregistered_thread() {
    std::thread::spawn(|| {
        assert!(StackBounds::current().is_none());
        let prober = Prober::new(Backend::SigprocMask).unwrap();
        let unwinder = Unwinder::new(&prober).unwrap().with_fast_path(true);
        for registered in [false, true] {
            if registered {
                StackBounds::register_current_thread().unwrap();
            }
            let mut fps = Vec::new();
            let mut stats = ReadStats::default();
            let (_walk, frames) =
                recurse(24, 0, &mut fps, &mut || walk_here(&unwinder, &mut stats));
            assert_fps_in_walk(&frames, &fps, "thread");
            if registered {
                assert!(stats.fast >= 24, "{stats:?}");
            } else {
                assert_eq!(stats.fast, 0, "unregistered: {stats:?}");
                assert!(stats.probed >= 24, "{stats:?}");
            }
        }
    })
    .join()
    .unwrap();
}

/// Two hand-made frame records in a local array (inside the thread's stack), the second one
/// pointing at a corrupt frame pointer. Every walk must stop there, without a crash, after
/// reading the two in-bounds records with no probe.
fn corrupt_fps_here() {
    let b = StackBounds::register_current_thread().unwrap();
    let ps = page_size();

    #[repr(C, align(16))]
    struct Records([usize; 16]);
    let mut recs = Records([0; 16]);
    let r0 = recs.0.as_mut_ptr() as usize;
    let r1 = r0 + 64;
    let sp = current_sp();
    assert!(b.covers(sp, r0, 16) && b.covers(sp, r1, 16));

    let unmapped = {
        let m = Mapping::above(b.hi(), libc::PROT_READ);
        m.base + 64
    }; // dropped: now unmapped
    let prot_none = Mapping::above(b.hi(), libc::PROT_NONE);
    let kernel = 0xffff_ffff_8100_0000usize;
    // The first address past this kernel's user space (2^47 on x86_64 with 4-level paging,
    // 2^48 on arm64 with 48-bit VAs, ...): non-canonical or kernel space, never mapped.
    let non_canonical = addrprobe_lab::fixtures::user_space_end();

    // (corrupt next fp of r1, expected stop, in-bounds records read, probes)
    let cases: [(&str, usize, Stop, usize); 6] = [
        ("unmapped", unmapped, Stop::Unreadable { fp: unmapped }, 1),
        (
            "PROT_NONE",
            prot_none.base + 8,
            Stop::Unreadable {
                fp: prot_none.base + 8,
            },
            1,
        ),
        ("kernel", kernel, Stop::Unreadable { fp: kernel }, 1),
        (
            "non-canonical",
            non_canonical,
            Stop::Unreadable { fp: non_canonical },
            1,
        ),
        (
            "misaligned",
            r1 + 64 + 3,
            Stop::Misaligned { fp: r1 + 64 + 3 },
            0,
        ),
        ("loop", r0, Stop::NotIncreasing { prev: r1, fp: r0 }, 0),
    ];
    for prober in probers() {
        for batch in [0, 256] {
            for fast in [true, false] {
                for (what, target, stop, probes) in cases {
                    put(r0, r1, 0x1000);
                    put(r1, target, 0x2000);
                    let unwinder = Unwinder::new(&prober)
                        .unwrap()
                        .with_fast_path(fast)
                        .with_batch_window(batch);
                    let mut out = [Frame::default(); 8];
                    let mut stats = ReadStats::default();
                    let regs = Regs {
                        pc: 0xabc,
                        fp: r0,
                        sp: current_sp(),
                    };
                    let walk = unwinder.walk(Start::Regs(regs), &mut out, Some(&mut stats));
                    let ctx = format!("{what}, {}, batch {batch}, fast {fast}", prober.backend());
                    assert_eq!(walk, Walk { depth: 3, stop }, "{ctx}");
                    assert_eq!(
                        &out[..3],
                        &[
                            Frame { pc: 0xabc, fp: r0 },
                            Frame { pc: 0x1000, fp: r1 },
                            Frame {
                                pc: 0x2000,
                                fp: target
                            },
                        ],
                        "{ctx}"
                    );
                    if fast {
                        assert_eq!(stats.fast, 2, "{ctx}: {stats:?}");
                        assert_eq!(stats.probes, probes, "{ctx}: {stats:?}");
                    } else {
                        assert_eq!(stats.fast, 0, "{ctx}: {stats:?}");
                        // r0 is probed; r1 too unless r0's window already holds it.
                        assert!(stats.probes > probes, "{ctx}: {stats:?}");
                    }
                }
            }
        }
    }
    core::hint::black_box(&mut recs);
    drop(prot_none);
    // A corrupt fp is also never *assumed* readable just because it is above the frames:
    // the first byte past the stack is outside the bounds.
    assert!(!b.covers(current_sp(), b.hi(), 1));
    assert!(!b.covers(current_sp(), b.hi() - 8, 16));
    let _ = ps;
}

fn corrupt_fps_main() {
    corrupt_fps_here();
}

fn corrupt_fps_thread() {
    std::thread::spawn(corrupt_fps_here).join().unwrap();
}

/// A coroutine stack built by hand in an mmap'd region: 60 frame records 256 bytes apart over
/// four pages, the last pointing into a PROT_NONE page above. None of it is in the thread's
/// bounds, so every frame is probed (or served from a batch window); the walk ends exactly at
/// the guard page.
fn hand_made_coroutine() {
    StackBounds::register_current_thread().unwrap();
    let ps = page_size();
    let region = Mapping::new(5 * ps, libc::PROT_READ | libc::PROT_WRITE);
    region.protect(4 * ps, ps, libc::PROT_NONE);
    const N: usize = 60;
    let frame = |i: usize| region.base + 64 + i * 256;
    let guard = region.base + 4 * ps + 8;
    assert!(frame(N - 1) + 16 <= region.base + 4 * ps);
    for i in 0..N {
        let next = if i + 1 < N { frame(i + 1) } else { guard };
        put(frame(i), next, 0x5000 + i);
    }
    for prober in probers() {
        for batch in [0usize, 1024] {
            let unwinder = Unwinder::new(&prober)
                .unwrap()
                .with_fast_path(true)
                .with_batch_window(batch);
            let mut out = vec![Frame::default(); 128];
            let mut stats = ReadStats::default();
            // The coroutine's own stack pointer, just below its innermost frame.
            let regs = Regs {
                pc: 0x4fff,
                fp: frame(0),
                sp: frame(0) - 64,
            };
            let walk = unwinder.walk(Start::Regs(regs), &mut out, Some(&mut stats));
            let ctx = format!("{}, batch {batch}", prober.backend());
            assert_eq!(
                walk,
                Walk {
                    depth: N + 1,
                    stop: Stop::Unreadable { fp: guard }
                },
                "{ctx}"
            );
            for i in 0..N {
                let next = if i + 1 < N { frame(i + 1) } else { guard };
                assert_eq!(
                    out[i + 1],
                    Frame {
                        pc: 0x5000 + i,
                        fp: next
                    },
                    "{ctx}: frame {i}"
                );
            }
            assert_eq!(stats.fast, 0, "{ctx}: off the thread's stack: {stats:?}");
            assert_eq!(stats.probed + stats.batched, N, "{ctx}: {stats:?}");
            if batch == 0 {
                assert_eq!(stats.probes, N + 1, "{ctx}: one probe per frame: {stats:?}");
            } else {
                // 1024-byte windows hold 4 records 256 bytes apart (and never cross a page for
                // the pipe-based backends: 4 windows per page).
                assert_eq!(stats.probes, N / 4 + 1, "{ctx}: {stats:?}");
            }
        }
    }
}

// musl has no getcontext/makecontext/swapcontext.
#[cfg(target_env = "gnu")]
mod coroutine {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering};

    pub static mut MAIN: core::mem::MaybeUninit<libc::ucontext_t> =
        core::mem::MaybeUninit::uninit();
    pub static mut CORO: core::mem::MaybeUninit<libc::ucontext_t> =
        core::mem::MaybeUninit::uninit();
    pub static PROBER: AtomicUsize = AtomicUsize::new(0);
    pub static RESULT: std::sync::Mutex<Option<Outcome>> = std::sync::Mutex::new(None);

    pub struct Outcome {
        pub fps: Vec<usize>,
        pub frames: Vec<Frame>,
        pub stats: ReadStats,
        pub learn: Result<(), String>,
    }

    pub extern "C" fn entry() {
        // SAFETY: PROBER holds the address of a Prober that outlives the coroutine.
        let prober = unsafe { &*(PROBER.load(Ordering::Acquire) as *const Prober) };
        let unwinder = Unwinder::new(prober).unwrap().with_fast_path(true);
        let mut fps = Vec::new();
        let mut stats = ReadStats::default();
        let (_w, frames) = recurse(20, 0, &mut fps, &mut || walk_here(&unwinder, &mut stats));
        // Registering from a coroutine stack is refused, not guessed.
        let learn = match StackBounds::learn_current_thread() {
            Err(addrprobe::stack_bounds::StackBoundsError::NotOnThreadStack { .. }) => Ok(()),
            other => Err(format!("{other:?}")),
        };
        *RESULT.lock().unwrap() = Some(Outcome {
            fps,
            frames,
            stats,
            learn,
        });
        // Returning resumes `uc_link` (the main context).
    }
}

/// musl has no `getcontext`/`makecontext`/`swapcontext`: the case says so.
#[cfg(not(target_env = "gnu"))]
fn real_coroutine() {
    println!(
        "skipped: real_coroutine_stack_via_swapcontext: this libc has no \
         getcontext/makecontext/swapcontext"
    );
}

/// A real coroutine: code running (and recursing) on a stack the test mmap'd, entered with
/// `makecontext`/`swapcontext`. Its walk must find every recursion level and probe all of
/// them: the walk's stack pointer is not on the registered thread stack.
#[cfg(target_env = "gnu")]
fn real_coroutine() {
    use core::sync::atomic::Ordering;
    StackBounds::register_current_thread().unwrap();
    let prober = Prober::new(Backend::ProcessVmReadv).unwrap();
    coroutine::PROBER.store(&prober as *const Prober as usize, Ordering::Release);
    let ps = page_size();
    let size = 512 << 10;
    let stack = Mapping::new(size + ps, libc::PROT_READ | libc::PROT_WRITE);
    stack.protect(0, ps, libc::PROT_NONE);
    // SAFETY: getcontext/makecontext/swapcontext on statics only this thread uses; the
    // coroutine stack outlives the coroutine, which returns to MAIN through uc_link.
    unsafe {
        let main = (*core::ptr::addr_of_mut!(coroutine::MAIN)).as_mut_ptr();
        let coro = (*core::ptr::addr_of_mut!(coroutine::CORO)).as_mut_ptr();
        assert_eq!(libc::getcontext(coro), 0);
        (*coro).uc_stack.ss_sp = (stack.base + ps) as *mut libc::c_void;
        (*coro).uc_stack.ss_size = size;
        (*coro).uc_link = main;
        libc::makecontext(coro, coroutine::entry, 0);
        assert_eq!(libc::swapcontext(main, coro), 0);
    }
    let out = coroutine::RESULT
        .lock()
        .unwrap()
        .take()
        .expect("coroutine ran");
    let on_coro = |a: usize| a >= stack.base + ps && a < stack.base + ps + size;
    assert!(
        out.fps.iter().all(|&fp| on_coro(fp)),
        "the recursion ran on the coroutine stack"
    );
    assert_fps_in_walk(&out.frames, &out.fps, "coroutine");
    assert_eq!(out.stats.fast, 0, "{:?}", out.stats);
    assert!(out.stats.probed >= 20, "{:?}", out.stats);
    assert_eq!(out.learn, Ok(()));
}

mod altstack {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering};

    pub static PROBER: AtomicUsize = AtomicUsize::new(0);
    pub static mut FPS: [usize; 16] = [0; 16];
    /// A walk's frames, depth and counters.
    pub type Walked = ([Frame; 64], usize, ReadStats);
    /// The same, and the interrupted stack pointer.
    pub type WalkedFrom = ([Frame; 64], usize, ReadStats, usize);

    pub static mut OWN: Walked = ([Frame { pc: 0, fp: 0 }; 64], 0, zero_stats());
    /// The interrupted context walked with `walk_trusted`.
    pub static mut INTERRUPTED: WalkedFrom = ([Frame { pc: 0, fp: 0 }; 64], 0, zero_stats(), 0);
    /// The interrupted context walked with the safe `walk` from `Start::Regs`.
    pub static mut SAFE: Walked = ([Frame { pc: 0, fp: 0 }; 64], 0, zero_stats());
    pub static HANDLER_SP: AtomicUsize = AtomicUsize::new(0);
    /// The signal `recurse` raises.
    pub static SIGNAL: AtomicUsize = AtomicUsize::new(libc::SIGUSR1 as usize);

    const fn zero_stats() -> ReadStats {
        ReadStats {
            fast: 0,
            probed: 0,
            batched: 0,
            probes: 0,
        }
    }

    /// Only async-signal-safe work: TLS load, prober reads, writes to statics.
    pub extern "C" fn handler(_: libc::c_int, _: *mut libc::siginfo_t, uc: *mut libc::c_void) {
        // SAFETY: set before the signal is raised; the Prober outlives the handler.
        let prober = unsafe { &*(PROBER.load(Ordering::Acquire) as *const Prober) };
        let Ok(unwinder) = Unwinder::new(prober) else {
            return;
        };
        let unwinder = unwinder.with_fast_path(true);
        HANDLER_SP.store(current_sp(), Ordering::Relaxed);
        // SAFETY: one thread at a time raises the signal (the others wait in join); only this
        // handler writes these statics. `regs` comes unmodified from this handler's ucontext,
        // and the interrupted context stays suspended during the walk, which is
        // `walk_trusted`'s contract.
        unsafe {
            let own = &mut *core::ptr::addr_of_mut!(OWN);
            let w = unwinder.walk(Start::Current, &mut own.0, Some(&mut own.2));
            own.1 = w.depth;
            let int = &mut *core::ptr::addr_of_mut!(INTERRUPTED);
            let safe = &mut *core::ptr::addr_of_mut!(SAFE);
            if let Some(regs) = addrprobe::unwind::regs_from_ucontext(uc) {
                int.3 = regs.sp;
                let w = unwinder.walk_trusted(&regs, &mut int.0, Some(&mut int.2));
                int.1 = w.depth;
                let w = unwinder.walk(Start::Regs(regs), &mut safe.0, Some(&mut safe.2));
                safe.1 = w.depth;
            }
        }
    }

    #[inline(never)]
    pub fn recurse(level: usize) {
        let fp = frame_pointer();
        // SAFETY: single-threaded; level < 16.
        unsafe { (*core::ptr::addr_of_mut!(FPS))[level] = fp };
        if level + 1 < 16 {
            recurse(level + 1);
        } else {
            // The handler is installed.
            addrprobe::testing::raise_here(SIGNAL.load(Ordering::Relaxed) as libc::c_int);
        }
        core::hint::black_box(level);
    }

    /// Installs `handler` for `sig` (with `SA_ONSTACK` if asked).
    pub fn install(sig: libc::c_int, onstack: bool) {
        SIGNAL.store(sig as usize, Ordering::Relaxed);
        // SAFETY: installing a handler in this child; a zeroed sigaction is valid.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | if onstack { libc::SA_ONSTACK } else { 0 };
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(sig, &sa, core::ptr::null_mut()), 0);
        }
    }

    /// Clears the results of an earlier signal.
    pub fn reset() {
        // SAFETY: no handler runs now (the signal is only raised by `recurse`).
        unsafe {
            (*core::ptr::addr_of_mut!(OWN)).1 = 0;
            (*core::ptr::addr_of_mut!(OWN)).2 = zero_stats();
            (*core::ptr::addr_of_mut!(INTERRUPTED)).1 = 0;
            (*core::ptr::addr_of_mut!(INTERRUPTED)).2 = zero_stats();
            (*core::ptr::addr_of_mut!(SAFE)).1 = 0;
            (*core::ptr::addr_of_mut!(SAFE)).2 = zero_stats();
        }
    }

    /// The results: (recursion fps, own walk, unchecked walk, safe walk).
    pub fn results() -> (
        [usize; 16],
        &'static Walked,
        &'static WalkedFrom,
        &'static Walked,
    ) {
        // SAFETY: the handler has returned and no other runs.
        unsafe {
            (
                *core::ptr::addr_of!(FPS),
                &*core::ptr::addr_of!(OWN),
                &*core::ptr::addr_of!(INTERRUPTED),
                &*core::ptr::addr_of!(SAFE),
            )
        }
    }
}

/// A SIGUSR1 handler with `SA_ONSTACK` runs on an alternate stack the test mapped. Its real
/// stack pointer is off the thread's stack, so every safe walk from it probes every frame:
/// from its own frame pointer and, through the safe `walk` from `Start::Regs`, from the interrupted
/// registers. `walk_trusted`, vouching for the `ucontext`'s stack pointer, reads
/// the interrupted thread-stack frames with the fast path.
fn sigaltstack_walk() {
    use core::sync::atomic::Ordering;
    let b = StackBounds::register_current_thread().unwrap();
    let prober = Prober::new(Backend::SigprocMask).unwrap();
    altstack::PROBER.store(&prober as *const Prober as usize, Ordering::Release);
    let alt_size = 256 << 10;
    let alt = Mapping::new(alt_size, libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: installing an alternate stack we own in this child.
    unsafe {
        let ss = libc::stack_t {
            ss_sp: alt.base as *mut libc::c_void,
            ss_flags: 0,
            ss_size: alt_size,
        };
        assert_eq!(libc::sigaltstack(&ss, core::ptr::null_mut()), 0);
    }
    altstack::install(libc::SIGUSR1, true);
    altstack::recurse(0);
    let handler_sp = altstack::HANDLER_SP.load(Ordering::Relaxed);
    assert!(
        handler_sp >= alt.base && handler_sp < alt.base + alt_size,
        "the handler ran on the sigaltstack"
    );
    assert!(!b.contains_sp(handler_sp));
    let (fps, own, int, safe) = altstack::results();
    // From the handler's own frames: nothing is read without a probe.
    assert_eq!(own.2.fast, 0, "handler walk: {:?}", own.2);
    assert!(own.2.probed >= 1, "handler walk: {:?}", own.2);
    assert!(own.1 >= 1);
    // From the interrupted context: the 16 recursion frames are on the thread stack.
    assert!(b.contains_sp(int.3), "interrupted sp on the thread stack");
    assert_fps_in_walk(&int.0[..int.1], &fps, "interrupted context (unchecked)");
    assert!(int.2.fast >= 16, "unchecked interrupted walk: {:?}", int.2);
    // The safe walk cannot trust the ucontext's sp from a sigaltstack: same frames, probed.
    assert_fps_in_walk(&safe.0[..safe.1], &fps, "interrupted context (safe)");
    assert_eq!(safe.2.fast, 0, "safe interrupted walk: {:?}", safe.2);
    assert!(safe.2.probed >= 16, "safe interrupted walk: {:?}", safe.2);
    // SAFETY: disabling the alternate stack before it is unmapped.
    unsafe {
        let ss = libc::stack_t {
            ss_sp: core::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        libc::sigaltstack(&ss, core::ptr::null_mut());
    }
}

/// The profiler's normal case: a SIGPROF handler without `SA_ONSTACK` runs on the thread's
/// own stack, below the interrupted frames, and the safe `walk` from `Start::Regs` reads those frames
/// with the fast path (so do the unchecked walk and the handler's walk of its own stack,
/// whose chain continues into the interrupted frames). On the main thread and on a spawned
/// thread.
fn thread_stack_handler_walk() {
    use core::sync::atomic::Ordering;
    let prober = Prober::new(Backend::SigprocMask).unwrap();
    altstack::PROBER.store(&prober as *const Prober as usize, Ordering::Release);
    altstack::install(libc::SIGPROF, false);
    let run = |what: &str| {
        altstack::reset();
        // Room for the recursion and the signal frame inside the registered mapping.
        pretouch_stack(256);
        let b = StackBounds::register_current_thread().unwrap();
        altstack::recurse(0);
        let handler_sp = altstack::HANDLER_SP.load(Ordering::Relaxed);
        assert!(
            b.contains_sp(handler_sp),
            "{what}: the handler ran on the thread stack"
        );
        let (fps, own, int, safe) = altstack::results();
        assert!(
            b.contains_sp(int.3),
            "{what}: interrupted sp on the thread stack"
        );
        assert_fps_in_walk(&safe.0[..safe.1], &fps, what);
        assert!(
            safe.2.fast >= 16,
            "{what}: safe interrupted walk: {:?}",
            safe.2
        );
        assert_fps_in_walk(&int.0[..int.1], &fps, what);
        assert!(
            int.2.fast >= 16,
            "{what}: unchecked interrupted walk: {:?}",
            int.2
        );
        assert_fps_in_walk(&own.0[..own.1], &fps, what);
        assert!(own.2.fast >= 16, "{what}: handler's own walk: {:?}", own.2);
    };
    run("main thread");
    std::thread::spawn(move || run("spawned thread"))
        .join()
        .unwrap();
}

/// Installs a seccomp filter that makes the probe syscalls of the `SigprocMask`,
/// `ProcessVmReadv` and `Pipe` backends fail with `EPERM`: `process_vm_readv`,
/// `rt_sigprocmask` with an invalid `how`, and `write`/`writev` to any descriptor but stdout and stderr
/// (the pipes; `SigprocMask` reads through them).
fn deny_probe_syscalls() {
    // AUDIT_ARCH_X86_64 / AUDIT_ARCH_AARCH64; the syscall numbers are the target's libc::SYS_*.
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = |off: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, off);
    let ret = |k: u32| stmt(libc::BPF_RET | libc::BPF_K, k);
    let deny = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let jge = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    // Jump offsets are relative to the next instruction.
    let filter = [
        ld(4),                                        // 0: arch
        jeq(AUDIT_ARCH, 0, 9),                        // 1: other arch -> 11 allow
        ld(0),                                        // 2: syscall number
        jeq(libc::SYS_process_vm_readv as u32, 8, 0), // 3: -> 12 deny
        jeq(libc::SYS_write as u32, 4, 0),            // 4: -> 9
        jeq(libc::SYS_writev as u32, 3, 0),           // 5: -> 9
        jeq(libc::SYS_rt_sigprocmask as u32, 0, 4),   // 6: other syscall -> 11 allow
        ld(16),                                       // 7: low word of args[0] (`how`)
        jeq(u32::MAX, 3, 2),                          // 8: how == -1 -> 12 deny, else 11
        ld(16),                                       // 9: write's / writev's fd
        jge(3, 1, 0),                                 // 10: not stdout/stderr -> 12 deny
        ret(libc::SECCOMP_RET_ALLOW),                 // 11
        ret(deny),                                    // 12
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with a valid filter program that lives across the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog
            ),
            0,
            "seccomp filter"
        );
    }
}

/// Frames inside the bounds cost no syscall: under a seccomp filter that makes every probe
/// syscall of the `SigprocMask` and `ProcessVmReadv` backends fail (`check` and `read`), a fast-path walk still
/// reads all recursion frames, while the same walk without the fast path fails at once.
fn seccomp_no_syscall() {
    if let Err(why) = support::seccomp_filters() {
        println!("skipped: in_bounds_frames_make_no_syscall_under_seccomp: {why}");
        return;
    }
    // The recursion below goes deeper than the main thread's initial stack mapping.
    pretouch_stack(1024);
    StackBounds::register_current_thread().unwrap();
    let probers: Vec<Prober> = [Backend::SigprocMask, Backend::ProcessVmReadv]
        .into_iter()
        .map(|b| Prober::new(b).unwrap())
        .collect();
    deny_probe_syscalls();
    // The filter works: a direct probe is now refused.
    for p in &probers {
        let x = 1u64;
        let e = p.check(&x as *const u64 as usize, 8).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EPERM), "{}: {e}", p.backend());
        let mut buf = [0u8; 8];
        let e = p.read(&x as *const u64 as usize, &mut buf).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EPERM), "{}: {e}", p.backend());
    }
    for p in &probers {
        for fast in [false, true] {
            let unwinder = Unwinder::new(p).unwrap().with_fast_path(fast);
            let mut fps = Vec::new();
            let mut stats = ReadStats::default();
            let (walk, frames) = recurse(32, 0, &mut fps, &mut || walk_here(&unwinder, &mut stats));
            if fast {
                assert_fps_in_walk(&frames, &fps, "fast path under seccomp");
                assert!(stats.fast >= 32, "{stats:?}");
                // Anything that was probed failed, and ended the walk.
                if stats.probes > 0 {
                    assert!(matches!(walk.stop, Stop::Error(_)), "{walk:?}");
                }
            } else {
                assert_eq!(walk.depth, 0, "{}: {walk:?}", p.backend());
                assert!(matches!(walk.stop, Stop::Error(e) if e.errno() == Some(libc::EPERM)));
            }
        }
    }
}
