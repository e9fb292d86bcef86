//! Soundness of the stack-bounds fast path against made-up stack pointers and frame pointers.
//!
//! The safe functions of [`addrprobe::stack_bounds`] (`StackBounds::{read, load_word,
//! load_pair, frame_window}`, `FrameWindow::load_pair`) and `Unwinder::walk` from
//! `Start::Regs` take a stack pointer as an argument. A safe function must be sound for every argument, so each
//! case here calls them with made-up values (`lo`, `lo + page`, the main thread's
//! `hi - RLIMIT_STACK`, just below the real stack pointer, `hi`, beyond `hi`, null, the top of
//! user space) and asserts that the process neither crashes nor changes its memory map: no
//! plain load may make the kernel grow the main thread's stack, and none may touch a
//! `PROT_NONE` page below the live stack. Fixtures put such pages where a load that trusted
//! the argument would land: at the lowest address `RLIMIT_STACK` lets the main stack grow to,
//! and at the bottom (dead part) of a spawned thread's registered stack.
//!
//! Every case runs in a child process (`support::harness_main`): they change rlimits, map pages
//! below the stack and may crash. This target has `harness = false`, so a case runs on the
//! child's main thread, which the main-thread cases need.
//!
//! `/proc/self/maps` is compared as text before and after the calls. Nothing between the two
//! snapshots allocates (results go to vectors reserved beforehand) and the stack is touched
//! deeply before the first one, so that only a load of the code under test can change it.
//!
//! Usage: `cargo test --test stack_soundness [-- NAME_SUBSTRING...]`.

mod support;

use std::hint::black_box;
use std::io::Read;

use addrprobe::stack_bounds::{StackBounds, current_sp};
use addrprobe::unwind::{Frame, ReadStats, Regs, Start, Stop, Unwinder, Walk};
use addrprobe::{Backend, Prober};

const WORD: usize = core::mem::size_of::<usize>();

const CASES: &[support::Case] = &[
    (
        "main_thread_made_up_sp_never_grows_the_stack",
        main_thread_made_up,
    ),
    (
        "main_thread_prot_none_page_at_rlimit_lo",
        main_thread_prot_none_at_rlimit_lo,
    ),
    (
        "spawned_thread_made_up_sp_with_a_guard_in_its_dead_stack",
        spawned_thread_made_up,
    ),
    (
        "rlimit_stack_changed_after_registration",
        rlimit_changed_after_registration,
    ),
    (
        "threads_that_exit_while_registered",
        threads_that_exit_while_registered,
    ),
];

fn main() {
    support::harness_main(CASES, std::time::Duration::from_secs(14));
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn ps() -> usize {
    support::ps()
}

/// `/proc/self/maps`, read into a buffer reserved beforehand (no allocation while reading).
struct MapsText(Vec<u8>);

impl MapsText {
    fn new() -> MapsText {
        MapsText(Vec::with_capacity(4 << 20))
    }

    fn snapshot(&mut self) {
        self.0.clear();
        let mut f = std::fs::File::open("/proc/self/maps").expect("open /proc/self/maps");
        f.read_to_end(&mut self.0).expect("read /proc/self/maps");
        assert!(
            self.0.len() < self.0.capacity(),
            "maps larger than reserved"
        );
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// Asserts that nothing in the memory map changed between two snapshots, naming the lines.
fn assert_same_maps(before: &MapsText, after: &MapsText, what: &str) {
    if before.0 == after.0 {
        return;
    }
    let (b, a) = (before.text(), after.text());
    let gone: Vec<&str> = b.lines().filter(|l| !a.lines().any(|x| x == *l)).collect();
    let new: Vec<&str> = a.lines().filter(|l| !b.lines().any(|x| x == *l)).collect();
    panic!("{what}: /proc/self/maps changed\n  before: {gone:#?}\n  after:  {new:#?}");
}

/// `(start, end)` of the `[stack]` mapping, parsed here independently of the crate.
fn stack_vma() -> (usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .find(|l| l.trim_end().ends_with("[stack]"))
        .and_then(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .expect("[stack] in /proc/self/maps")
}

/// `(start, end, readable)` of the mapping containing `addr`, if any.
fn vma_of(addr: usize) -> Option<(usize, usize, bool)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (a, b) = f.next()?.split_once('-')?;
        let (a, b) = (
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        );
        let perms = f.next()?;
        (a <= addr && addr < b).then(|| (a, b, perms.starts_with('r')))
    })
}

/// Touches `KIB` KiB of stack below the caller, so that the main thread's `[stack]` already
/// covers every call the case makes between its two snapshots.
#[inline(never)]
fn pretouch_stack() {
    const KIB: usize = 384;
    let mut buf = [0u8; KIB << 10];
    black_box(&mut buf);
}

fn set_rlimit_stack(bytes: usize) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit of our own (child) process with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_STACK, &mut rl), 0);
        let want = bytes as libc::rlim_t;
        rl.rlim_cur = if rl.rlim_max == libc::RLIM_INFINITY {
            want
        } else {
            want.min(rl.rlim_max)
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_STACK, &rl), 0, "setrlimit");
    }
}

fn rlimit_stack() -> usize {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut rl) }, 0);
    rl.rlim_cur as usize
}

/// One `PROT_NONE` page at exactly `addr` (`MAP_FIXED_NOREPLACE`: never replaces anything).
fn map_prot_none_at(addr: usize) {
    // SAFETY: MAP_FIXED_NOREPLACE fails instead of replacing an existing mapping.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            ps(),
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(
        p as usize,
        addr,
        "a PROT_NONE page at {addr:#x} (errno {})",
        support::errno()
    );
}

fn mprotect(addr: usize, len: usize, prot: i32) {
    // SAFETY: callers pass pages of their own thread's stack below its live part, or a
    // mapping they own; nothing references that memory.
    let r = unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) };
    assert_eq!(r, 0, "mprotect {addr:#x}");
}

/// Which safe function accepted a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Read,
    LoadWord,
    LoadPair,
    FrameWindow,
}

impl Via {
    fn len(self) -> usize {
        match self {
            Via::Read => 16,
            Via::LoadWord => WORD,
            Via::LoadPair | Via::FrameWindow => 2 * WORD,
        }
    }
}

/// A read a safe function accepted: `(via, sp argument, addr)`.
type Accepted = (Via, usize, usize);

/// Calls every safe loader with every `(sp, addr)` pair and records the ones that read.
/// Allocates nothing (`log` has room reserved).
#[inline(never)]
fn exercise_loaders(b: &StackBounds, sps: &[usize], addrs: &[usize], log: &mut Vec<Accepted>) {
    for &sp in sps {
        let window = b.frame_window(sp);
        for &addr in addrs {
            let mut buf = [0u8; 16];
            if b.read(sp, addr, &mut buf) {
                log.push((Via::Read, sp, addr));
            }
            if b.load_word(sp, addr).is_some() {
                log.push((Via::LoadWord, sp, addr));
            }
            if b.load_pair(sp, addr).is_some() {
                log.push((Via::LoadPair, sp, addr));
            }
            if window.and_then(|w| w.load_pair(addr)).is_some() {
                log.push((Via::FrameWindow, sp, addr));
            }
            black_box(&buf);
        }
    }
}

/// One made-up walk: the registers and what it did.
type WalkLog = (Regs, Walk, ReadStats, [Frame; 8]);

/// `walk` from `Start::Regs` with every made-up `(sp, fp)` pair. Allocates nothing.
#[inline(never)]
fn exercise_walks(u: &Unwinder, sps: &[usize], fps: &[usize], log: &mut Vec<WalkLog>) {
    let mut out = [Frame::default(); 8];
    for &sp in sps {
        for &fp in fps {
            let regs = Regs { pc: 0x1234, fp, sp };
            let mut stats = ReadStats::default();
            let w = u.walk(Start::Regs(regs), &mut out, Some(&mut stats));
            log.push((regs, w, stats, out));
        }
    }
}

/// Word-aligned made-up addresses around `lo`, the real stack pointer and `hi`.
fn made_up(lo: usize, hi: usize, extra: &[usize]) -> Vec<usize> {
    let here = current_sp() & !15;
    let mut v = vec![
        lo,
        lo + WORD,
        lo + ps(),
        lo.wrapping_sub(ps()),
        here - 64,
        here - ps(),
        here - 8 * ps(),
        here - 2 * WALKER_STACK,
        hi - 2 * WORD,
        hi - WORD,
        hi,
        hi + ps(),
        0,
        2 * WORD,
        1 << 47,
        addrprobe_lab::fixtures::user_space_end(),
        usize::MAX & !15,
    ];
    v.extend_from_slice(extra);
    v.retain(|a| a.is_multiple_of(WORD));
    v.sort_unstable();
    v.dedup();
    v
}

/// Whether this kernel's `process_vm_readv` grows the main thread's `[stack]` when it reads
/// below it (within `RLIMIT_STACK`): a feature probe, in a forked child so that this process's
/// stack stays as it is. `get_user_pages` extended stacks (`find_extend_vma`) until Linux 6.5
/// (the fix was backported to 6.1.37 and 6.4.1 but not to 5.10 or 5.15), so on those kernels
/// the kernel-copy prober the walks use grows `[stack]` like a load there would.
fn process_vm_readv_grows_the_stack() -> bool {
    let (start, _) = stack_vma();
    let below = start - 16 * ps();
    // The child allocates (it reads /proc/self/maps): only safe when no other thread can hold
    // the allocator's lock at the fork.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Threads:", "1"])),
        "the probe forks a single-threaded process only"
    );
    // SAFETY: this process has one thread (checked above), so the child is a consistent copy;
    // it reads /proc/self/maps, makes one syscall into its own buffer and exits without
    // returning (a panic exits with 2).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let grew = std::panic::catch_unwind(|| {
            let mut buf = [0u8; 8];
            let local = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let remote = libc::iovec {
                iov_base: below as *mut libc::c_void,
                iov_len: buf.len(),
            };
            // SAFETY: reads into our own buffer; a remote address that is not mapped is EFAULT.
            unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
            stack_vma().0 <= below
        });
        // SAFETY: leaves the forked child at once.
        unsafe { libc::_exit(grew.map_or(2, i32::from)) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => false,
        (true, 1) => true,
        _ => panic!("the stack-growth probe child failed: status {status:#x}"),
    }
}

/// [`walk_prober`], and the `[stack]` start after its warm-up reads: the same as `stack_start`
/// unless this kernel's `process_vm_readv` grows the stack
/// ([`process_vm_readv_grows_the_stack`]). The loaders, which use no prober, are judged before
/// the warm-up; the walks against the mapping after it. Where the warm-up grew the stack to
/// its limit, the walks' own no-growth check cannot fail: `case` says so as skipped.
fn walk_prober_and_stack(fps: &[usize], stack_start: usize, case: &str) -> (Prober, usize) {
    let grows = process_vm_readv_grows_the_stack();
    let prober = walk_prober(fps);
    let now = stack_vma().0;
    if grows {
        assert!(now <= stack_start, "[stack] moved up");
        println!(
            "skipped: {case}: the walks' no-growth check: this kernel's process_vm_readv grows \
             [stack] (get_user_pages extends stacks) and the warm-up grew it; the fast-path \
             loaders were checked before"
        );
    } else {
        assert_eq!(
            now, stack_start,
            "the warm-up's process_vm_readv grew [stack] although this kernel's probe said it \
             does not"
        );
    }
    (prober, now)
}

/// The walks' prober: `process_vm_readv`, primed on every made-up address before the walks'
/// snapshot, so that on a kernel whose `get_user_pages` still expands stacks (before 6.5
/// without the backport) any growth it causes happens before the comparison.
fn walk_prober(fps: &[usize]) -> Prober {
    let p = Prober::new(Backend::ProcessVmReadv).expect("process_vm_readv prober");
    for &fp in fps {
        let mut buf = [0u8; 16];
        let _ = p.read(fp, &mut buf);
    }
    p
}

/// Checks what the loaders accepted: only reads inside `[mapped_lo, hi)` (what was mapped
/// and readable when the case started), never in dead stack (below [`dead_below`]), never
/// below their own `sp` argument, and never in `forbidden`.
fn check_accepted(log: &[Accepted], mapped_lo: usize, hi: usize, forbidden: &[(usize, usize)]) {
    let dead = dead_below();
    for &(via, sp, addr) in log {
        let end = addr + via.len();
        assert!(
            mapped_lo <= addr && end <= hi,
            "{via:?}(sp {sp:#x}, addr {addr:#x}) read outside the mapped stack [{mapped_lo:#x}, {hi:#x})"
        );
        assert!(
            addr >= dead,
            "{via:?}(sp {sp:#x}, addr {addr:#x}) read dead stack below {dead:#x}"
        );
        assert!(addr >= sp, "{via:?} read below its own sp argument");
        for &(a, b) in forbidden {
            assert!(
                end <= a || addr >= b,
                "{via:?}(sp {sp:#x}, addr {addr:#x}) read the protected page [{a:#x}, {b:#x})"
            );
        }
    }
}

/// More stack than the loaders and the walker use below their caller's stack pointer: in the
/// unoptimized aarch64 build `Unwinder::walk`'s own frame alone is 31 KiB (seven pages of stack
/// probes and 2.7 KiB, read in its disassembly), and frames it reads inside itself are live.
const WALKER_STACK: usize = 64 << 10;

/// An address below which the caller's stack is certainly dead while it calls the code under
/// test: [`WALKER_STACK`] below its stack pointer.
#[inline(always)]
fn dead_below() -> usize {
    current_sp() - WALKER_STACK
}

/// Checks the made-up walks: none read a frame with a plain load outside `[mapped_lo, hi)`,
/// or in dead stack (below [`dead_below`]).
/// Without batching, every frame the walk read is either `fast` or one probe, so the frames
/// it read outside the range must all be probes.
fn check_walks(log: &[WalkLog], mapped_lo: usize, hi: usize) {
    let dead = dead_below();
    for (regs, w, stats, out) in log {
        let outside = frames_read(w, out)
            .filter(|&fp| fp < mapped_lo.max(dead) || fp.saturating_add(2 * WORD) > hi)
            .count();
        assert!(
            stats.probes >= outside,
            "walk from {regs:x?} read {outside} frames outside [{mapped_lo:#x}, {hi:#x}) \
             but probed only {}: {w:?} {stats:?} {:x?}",
            stats.probes,
            &out[..w.depth]
        );
    }
}

/// The fast path still works for real stack pointers: a local's bytes are read back exactly,
/// and a walk of the current stack takes the fast path.
#[inline(never)]
fn assert_fast_path_still_used(b: &StackBounds) {
    #[repr(C, align(16))]
    struct Pair([usize; 2]);
    let pair = black_box(Pair([0x1111_2222_3333_4444, 0x5555_6666_7777_8888]));
    let addr = &pair as *const Pair as usize;
    let sp = current_sp();
    let mut buf = [0u8; 16];
    assert!(b.read(sp, addr, &mut buf), "read of a live local");
    assert_eq!(&buf[..8], &pair.0[0].to_ne_bytes());
    assert_eq!(b.load_word(sp, addr), Some(pair.0[0]));
    assert_eq!(b.load_pair(sp, addr), Some(pair.0));
    let w = b.frame_window(sp).expect("a window for the real sp");
    assert_eq!(w.load_pair(addr), Some(pair.0));
    black_box(&pair);

    let prober = Prober::new(Backend::ProcessVmReadv).unwrap();
    let u = Unwinder::new(&prober).unwrap().with_fast_path(true);
    let mut out = [Frame::default(); 64];
    let mut stats = ReadStats::default();
    let walk = u.walk(Start::Current, &mut out, Some(&mut stats));
    assert!(walk.depth >= 3, "{walk:?}");
    assert!(
        stats.fast >= 2,
        "walk(Start::Current) took the fast path: {stats:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// Main thread, made-up stack pointers and addresses: `hi - RLIMIT_STACK` (what the stack may
/// grow to, not what is mapped), a page above it, the `[stack]` start and below it, below the
/// real stack pointer, `hi` and beyond. No call may change `/proc/self/maps` (a load below
/// `[stack]` would make the kernel grow it, by up to 8 MiB) or crash.
fn main_thread_made_up() {
    // SAFETY: gettid and getpid take no arguments and cannot fail.
    let (tid, pid) = unsafe { (libc::syscall(libc::SYS_gettid), libc::getpid()) };
    assert_eq!(tid, i64::from(pid), "runs on the main thread");
    set_rlimit_stack(8 << 20);
    pretouch_stack();
    let b = StackBounds::register_current_thread().expect("register the main thread");
    let (stack_start, hi) = stack_vma();
    assert_eq!(b.hi(), hi);
    let rl_lo = (hi - rlimit_stack()).next_multiple_of(ps());
    assert!(
        rl_lo + 64 * ps() < stack_start,
        "RLIMIT_STACK reaches below [stack]"
    );
    let extra = [
        rl_lo,
        rl_lo + WORD,
        rl_lo + ps(),
        stack_start,
        stack_start - 2 * WORD,
        stack_start - ps(),
        b.lo(),
        b.lo() + ps(),
    ];
    let addrs = made_up(b.lo(), hi, &extra);
    let mut log = Vec::with_capacity(addrs.len() * addrs.len() * 4);
    let mut walks = Vec::with_capacity(addrs.len() * addrs.len());
    let (mut before, mut after) = (MapsText::new(), MapsText::new());
    before.snapshot();
    after.snapshot();
    assert_same_maps(&before, &after, "two snapshots in a row");

    // The loaders first: they use no prober, so nothing may grow the stack.
    before.snapshot();
    exercise_loaders(&b, &addrs, &addrs, &mut log);
    after.snapshot();
    assert_same_maps(&before, &after, "made-up sp on the main thread (loaders)");
    assert_eq!(
        stack_vma(),
        (stack_start, hi),
        "[stack] did not grow (loaders)"
    );

    let case = "main_thread_made_up_sp_never_grows_the_stack";
    let (prober, start_now) = walk_prober_and_stack(&addrs, stack_start, case);
    let u = Unwinder::new(&prober).unwrap().with_fast_path(true);
    before.snapshot();
    exercise_walks(&u, &addrs, &addrs, &mut walks);
    after.snapshot();

    assert_same_maps(&before, &after, "made-up sp on the main thread (walks)");
    assert_eq!(stack_vma(), (start_now, hi), "[stack] did not grow (walks)");
    check_accepted(&log, stack_start, hi, &[]);
    check_walks(&walks, stack_start, hi);
    assert_fast_path_still_used(&b);
}

/// The reported crash: a `PROT_NONE` page mapped at `hi - RLIMIT_STACK` of the main thread
/// (after registration), then safe calls with `sp = lo` and `addr = lo` for that `lo`, and
/// walks whose `sp`/`fp` point there. None may load from the page.
fn main_thread_prot_none_at_rlimit_lo() {
    set_rlimit_stack(8 << 20);
    pretouch_stack();
    let b = StackBounds::register_current_thread().expect("register the main thread");
    let (stack_start, hi) = stack_vma();
    let rl_lo = (hi - rlimit_stack()).next_multiple_of(ps());
    assert!(rl_lo + 64 * ps() < stack_start);
    map_prot_none_at(rl_lo);
    assert_eq!(vma_of(rl_lo), Some((rl_lo, rl_lo + ps(), false)));
    let extra = [
        rl_lo,
        rl_lo + WORD,
        rl_lo + 2 * WORD,
        rl_lo + ps() - 2 * WORD,
        rl_lo + ps(),
        b.lo(),
        b.lo() + WORD,
    ];
    let addrs = made_up(b.lo(), hi, &extra);
    let prober = walk_prober(&addrs);
    let u = Unwinder::new(&prober).unwrap().with_fast_path(true);
    let mut log = Vec::with_capacity(addrs.len() * addrs.len() * 4);
    let mut walks = Vec::with_capacity(addrs.len() * addrs.len());
    let (mut before, mut after) = (MapsText::new(), MapsText::new());

    before.snapshot();
    // The reported calls first.
    let mut buf = [0u8; 16];
    black_box(b.read(rl_lo, rl_lo, &mut buf));
    black_box(b.load_word(rl_lo, rl_lo));
    black_box(b.load_pair(rl_lo, rl_lo));
    black_box(b.frame_window(rl_lo).and_then(|w| w.load_pair(rl_lo)));
    exercise_loaders(&b, &addrs, &addrs, &mut log);
    exercise_walks(&u, &addrs, &addrs, &mut walks);
    after.snapshot();

    assert_same_maps(&before, &after, "PROT_NONE page at hi - RLIMIT_STACK");
    check_accepted(&log, stack_start, hi, &[(rl_lo, rl_lo + ps())]);
    check_walks(&walks, stack_start, hi);
    // A walk that reaches the page is told it is unreadable.
    let regs = Regs {
        pc: 1,
        fp: rl_lo + 2 * WORD,
        sp: rl_lo,
    };
    let mut out = [Frame::default(); 4];
    let mut stats = ReadStats::default();
    let w = u.walk(Start::Regs(regs), &mut out, Some(&mut stats));
    assert_eq!(
        w.stop,
        Stop::Unreadable {
            fp: rl_lo + 2 * WORD
        }
    );
    assert_eq!(stats.fast, 0, "{stats:?}");
    assert_fast_path_still_used(&b);
}

/// A spawned thread: the bottom page of its registered stack (dead stack, far below anything
/// it uses) is made `PROT_NONE`, as a runtime's guard zone would be. Safe calls with made-up
/// `sp`/`addr` (`lo`, `lo + page`, below the real sp, `hi`, beyond) and made-up walks must
/// not crash, read the page or change the map.
fn spawned_thread_made_up() {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let b = StackBounds::register_current_thread().expect("register");
            let (lo, hi) = (b.lo(), b.hi());
            let (vlo, vhi, readable) = vma_of(lo).expect("the stack is mapped");
            assert!(readable && vlo <= lo && hi <= vhi, "[{vlo:#x}, {vhi:#x})");
            let sp = current_sp();
            assert!(lo + 16 * ps() < sp, "the bottom pages are dead stack");
            mprotect(lo, ps(), libc::PROT_NONE);
            let extra = [lo + 2 * WORD, lo + ps() - 2 * WORD, lo + 2 * ps()];
            let addrs = made_up(lo, hi, &extra);
            let prober = walk_prober(&addrs);
            let u = Unwinder::new(&prober).unwrap().with_fast_path(true);
            let mut log = Vec::with_capacity(addrs.len() * addrs.len() * 4);
            let mut walks = Vec::with_capacity(addrs.len() * addrs.len());
            let (mut before, mut after) = (MapsText::new(), MapsText::new());

            before.snapshot();
            let mut buf = [0u8; 16];
            black_box(b.read(lo, lo, &mut buf));
            black_box(b.load_pair(lo, lo));
            exercise_loaders(&b, &addrs, &addrs, &mut log);
            exercise_walks(&u, &addrs, &addrs, &mut walks);
            after.snapshot();

            assert_same_maps(&before, &after, "made-up sp on a spawned thread");
            check_accepted(&log, lo, hi, &[(lo, lo + ps())]);
            check_walks(&walks, lo + ps(), hi);
            let regs = Regs {
                pc: 1,
                fp: lo + 2 * WORD,
                sp: lo,
            };
            let mut out = [Frame::default(); 4];
            let mut stats = ReadStats::default();
            let w = u.walk(Start::Regs(regs), &mut out, Some(&mut stats));
            assert_eq!(w.stop, Stop::Unreadable { fp: lo + 2 * WORD });
            assert_eq!(stats.fast, 0, "{stats:?}");
            mprotect(lo, ps(), libc::PROT_READ | libc::PROT_WRITE);
            assert_fast_path_still_used(&b);
        })
        .unwrap()
        .join()
        .expect("the thread's checks passed");
}

/// `RLIMIT_STACK` lowered, then raised, after the main thread registered: safe reads at
/// `lo`, at `hi -` the old and the new limits and around them neither crash (a load below
/// `[stack]` beyond a lowered limit is a SIGSEGV) nor grow the stack. Registering again under
/// the new limit gives the same bounds: they follow what is mapped, not the limit.
fn rlimit_changed_after_registration() {
    const OLD: usize = 8 << 20;
    set_rlimit_stack(OLD);
    pretouch_stack();
    let b = StackBounds::register_current_thread().expect("register the main thread");
    let (stack_start, hi) = stack_vma();
    let mut before = MapsText::new();
    let mut after = MapsText::new();
    for new in [1usize << 20, 64 << 20] {
        set_rlimit_stack(new);
        let new = rlimit_stack();
        let extra = [
            hi - OLD,
            hi - OLD + ps(),
            (hi - new).next_multiple_of(ps()),
            (hi - new).next_multiple_of(ps()) + ps(),
            hi.saturating_sub(256 << 20),
            stack_start - ps(),
            stack_start - 2 * WORD,
            stack_start,
            b.lo(),
        ];
        let addrs = made_up(b.lo(), hi, &extra);
        let mut log = Vec::with_capacity(addrs.len() * addrs.len() * 4);
        let mut walks = Vec::with_capacity(addrs.len() * addrs.len());
        let what = format!("RLIMIT_STACK {OLD} -> {new} after registration");

        // The loaders first: they use no prober, so nothing may grow the stack.
        let start_before = stack_vma().0;
        before.snapshot();
        exercise_loaders(&b, &addrs, &addrs, &mut log);
        after.snapshot();
        assert_same_maps(&before, &after, &format!("{what} (loaders)"));
        assert_eq!(
            stack_vma().0,
            start_before,
            "{what}: the loaders grew [stack]"
        );

        let case = "rlimit_stack_changed_after_registration";
        let (prober, start_now) = walk_prober_and_stack(&addrs, start_before, case);
        let u = Unwinder::new(&prober).unwrap().with_fast_path(true);
        before.snapshot();
        exercise_walks(&u, &addrs, &addrs, &mut walks);
        after.snapshot();
        assert_same_maps(&before, &after, &format!("{what} (walks)"));
        check_accepted(&log, stack_start, hi, &[]);
        check_walks(&walks, stack_start, hi);
        // A new registration follows the mapping (as the warm-up left it), not the limit.
        let again = StackBounds::register_current_thread().expect("register again");
        assert_eq!(
            (again.lo(), again.hi()),
            (b.lo() - (stack_start - start_now), b.hi()),
            "{what}"
        );
        assert_eq!(stack_vma(), (start_now, hi), "{what}: no growth");
    }
    assert_fast_path_still_used(&b);
}

/// What a thread saw before it exited.
#[derive(Clone, Copy, Debug, Default)]
struct Dead {
    lo: usize,
    hi: usize,
    sp: usize,
    fp: usize,
}

static DEAD_USER: std::sync::Mutex<Option<Dead>> = std::sync::Mutex::new(None);

/// Recurses `depth` levels with 512 bytes of stack each, then runs `f` at the bottom.
#[inline(never)]
fn recurse<R>(depth: usize, f: &mut dyn FnMut() -> R) -> R {
    let mut pad = [0u8; 512];
    black_box(&mut pad);
    let r = if depth == 0 {
        f()
    } else {
        recurse(depth - 1, f)
    };
    black_box(&pad);
    r
}

/// Registers, then records its bounds and a deep frame (the frame chain stays in memory).
fn register_and_record() -> Dead {
    let b = StackBounds::register_current_thread().expect("register");
    recurse(288, &mut || {
        let (fp, sp) = addrprobe::unwind::current_fp_sp();
        Dead {
            lo: b.lo(),
            hi: b.hi(),
            sp,
            fp,
        }
    })
}

extern "C" fn user_stack_thread(_: *mut libc::c_void) -> *mut libc::c_void {
    *DEAD_USER.lock().unwrap() = Some(register_and_record());
    core::ptr::null_mut()
}

/// The frame pointers a walk read (or tried to read), in order: the first `depth - 1` frame
/// pointers, and the last one if the walk stopped at its record (a zero return address, or
/// unreadable).
fn frames_read<'a>(w: &Walk, out: &'a [Frame]) -> impl Iterator<Item = usize> + 'a {
    let last = out[..w.depth].last().map_or(0, |f| f.fp);
    let tried_last = last != 0 && matches!(w.stop, Stop::EndOfChain | Stop::Unreadable { .. });
    let n = w.depth.saturating_sub(1) + usize::from(tried_last);
    out[..n].iter().map(|f| f.fp)
}

/// A walk with the fast path from `regs`, on the calling thread.
fn walk_from(regs: Regs) -> (Walk, ReadStats, [Frame; 64]) {
    let prober = Prober::new(Backend::ProcessVmReadv).unwrap();
    let u = Unwinder::new(&prober).unwrap().with_fast_path(true);
    let mut out = [Frame::default(); 64];
    let mut stats = ReadStats::default();
    let w = u.walk(Start::Regs(regs), &mut out, Some(&mut stats));
    (w, stats, out)
}

/// Bounds are per thread: a thread registers and exits; reads of its former stack from
/// another thread (registered or not) never use its bounds, so they go through the prober,
/// and end at an unreadable frame once the memory is gone. A new thread that reuses the dead
/// thread's stack block (glibc caches them) reads the stale frames below its own stack
/// pointer through the prober too.
fn threads_that_exit_while_registered() {
    StackBounds::register_current_thread().expect("register the main thread");
    let main_bounds = StackBounds::current().unwrap();

    // 1. A thread on a stack this test mapped (so it stays ours after the thread exits).
    let size = 256 << 10;
    let region = support::mmap_quiet(
        size + ps(),
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    mprotect(region, ps(), libc::PROT_NONE);
    // SAFETY: a standard pthread attr / create / join sequence; the stack region outlives the
    // thread (joined below, and never unmapped by this test).
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        assert_eq!(libc::pthread_attr_init(&mut attr), 0);
        assert_eq!(
            libc::pthread_attr_setstack(&mut attr, (region + ps()) as *mut libc::c_void, size),
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
    let dead = DEAD_USER.lock().unwrap().take().expect("the thread ran");
    assert_eq!(dead.lo, region + ps());
    if cfg!(target_env = "musl") {
        // musl keeps the thread's descriptor and TLS at the top of a stack the application
        // provides and reports the stack below them.
        let top = region + ps() + size;
        assert!(
            dead.hi <= top && dead.hi + 16 * 1024 > top,
            "{:#x}",
            dead.hi
        );
    } else {
        assert_eq!(dead.hi, region + ps() + size);
    }
    let regs = Regs {
        pc: 1,
        fp: dead.fp,
        sp: dead.sp,
    };
    // The main thread's bounds do not cover it: every frame is probed (the memory is still
    // mapped, so the stale chain is read).
    assert!(!main_bounds.contains_sp(dead.sp));
    let mut buf = [0u8; 16];
    assert!(!main_bounds.read(dead.sp, dead.fp, &mut buf));
    assert!(main_bounds.frame_window(dead.sp).is_none());
    let (w, stats, _) = walk_from(regs);
    assert_eq!(
        stats.fast, 0,
        "main thread, dead thread's stack: {stats:?} {w:?}"
    );
    assert!(stats.probed >= 1, "{stats:?} {w:?}");
    // Once the dead stack is unreadable, the walk says so at its first frame.
    mprotect(region + ps(), size, libc::PROT_NONE);
    let (w, stats, _) = walk_from(regs);
    assert_eq!(w.stop, Stop::Unreadable { fp: dead.fp }, "{stats:?}");
    assert_eq!(stats.fast, 0);
    // Another thread, unregistered and then registered: the same.
    std::thread::spawn(move || {
        assert!(StackBounds::current().is_none(), "bounds are per thread");
        let (w, stats, _) = walk_from(regs);
        assert_eq!(w.stop, Stop::Unreadable { fp: dead.fp });
        assert_eq!(stats.fast, 0);
        let b = StackBounds::register_current_thread().unwrap();
        assert!(!b.contains_sp(dead.sp));
        let (w, stats, _) = walk_from(regs);
        assert_eq!(w.stop, Stop::Unreadable { fp: dead.fp });
        assert_eq!(stats.fast, 0);
    })
    .join()
    .expect("the other thread's checks passed");

    // 2. A thread on a glibc stack: registers, records a deep frame, exits. Its stack block
    // goes to glibc's cache and is likely handed to the next thread of the same size.
    let dead = std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(register_and_record)
        .unwrap()
        .join()
        .unwrap();
    let regs = Regs {
        pc: 1,
        fp: dead.fp,
        sp: dead.sp,
    };
    let (w, stats, _) = walk_from(regs);
    assert_eq!(stats.fast, 0, "main thread: {stats:?} {w:?}");
    let reused = std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(move || {
            assert!(StackBounds::current().is_none(), "bounds are per thread");
            let (w, stats, _) = walk_from(regs);
            assert_eq!(stats.fast, 0, "unregistered: {stats:?} {w:?}");
            let b = StackBounds::register_current_thread().unwrap();
            let reused = b.contains_sp(dead.sp);
            let here = current_sp();
            if reused {
                assert!(
                    dead.sp + 2 * WALKER_STACK < here,
                    "the dead frames lie deep below"
                );
            }
            let (w, stats, out) = walk_from(regs);
            // Every frame read below the live stack (with a margin for the walker's own
            // frames) went through the prober: with no batching, a frame that is not
            // `fast` is one probe.
            let dead_reads = frames_read(&w, &out)
                .filter(|&fp| fp < here - WALKER_STACK)
                .count();
            assert!(
                stats.probes >= dead_reads,
                "stale frames below the live stack were read with plain loads: {dead_reads} \
                 below, {stats:?}, {w:?}"
            );
            reused
        })
        .unwrap()
        .join()
        .expect("the reusing thread's checks passed");
    if !reused {
        println!("note: glibc did not hand the dead thread's stack to the next thread");
    }
}
