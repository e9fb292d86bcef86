//! The calling thread's own stack range, so that an unwinder can read its own frames with
//! plain loads instead of a probe.
//!
//! A frame-pointer walk of the thread's own stack spends nearly all of its validation cost
//! on memory that cannot fault: the thread's stack. [`StackBounds`] records that stack's
//! range `[lo, hi)` once per thread, outside signal context, in a thread-local slot. A signal
//! handler on the same thread reads it back with [`StackBounds::current`], which is one
//! thread-local load: async-signal-safe, allocation-free and lock-free. A read of
//! `[addr, addr + len)` that [`StackBounds::covers`] accepts needs no probe at all; anything
//! else goes through a [`Prober`](crate::Prober).
//!
//! # How the range is learned ([`StackBounds::register_current_thread`])
//!
//! - **Main thread** (the thread whose stack pointer lies in the `[stack]` mapping of
//!   `/proc/self/maps`): `hi` is the end of `[stack]`. The mapping grows down on demand, so `lo`
//!   is the lowest address it may grow to: `hi - RLIMIT_STACK` (soft limit), but never closer
//!   than the kernel's `stack_guard_gap` (256 pages unless `stack_guard_gap=` is on the kernel
//!   command line) to the mapping below it. This is what glibc's `pthread_getattr_np` reports
//!   for the initial thread, computed without it.
//! - **Every other thread**: `pthread_getattr_np` and `pthread_attr_getstack` give the stack
//!   block that glibc (or the application, through `pthread_attr_setstack`) allocated; the
//!   guard pages below it are excluded.
//!
//! Either way, registration then checks `/proc/self/maps`: the current stack pointer must lie
//! in `[lo, hi)` (it does not when registration runs on a sigaltstack or a coroutine stack:
//! that is [`StackBoundsError::NotOnThreadStack`]), and the mapped part of the range must be
//! readable. A thread that was never registered has no bounds: [`StackBounds::current`]
//! returns `None` and the unwinder probes every frame. The fast path is skipped, never
//! guessed.
//!
//! # Why `sp <= addr && addr + len <= hi` is readable without a probe
//!
//! [`covers`](StackBounds::covers) accepts a read when `lo <= sp <= addr` and `addr + len <= hi`,
//! where `sp` is a stack pointer of the calling thread (its own, or the one the kernel saved in
//! the `ucontext` of a signal that interrupted it). Such a read cannot fault because:
//!
//! 1. **Another thread's stack** is a single mapping: glibc `mmap`s the whole block
//!    read-write when the thread is created, puts the guard pages *below* `lo`, and unmaps it
//!    only after the thread has exited. The calling thread is running, so all of `[lo, hi)`
//!    is mapped and readable.
//! 2. **The main thread's stack** is the `[stack]` mapping, one `VM_GROWSDOWN` VMA whose top
//!    is `hi`. The kernel extends it down to cover every address the thread touches (a push,
//!    a call, the signal frame it writes when a handler runs on this stack), and never
//!    shrinks it. Every address between a stack pointer in use and `hi` was therefore
//!    touched or lies above a touched address, so it is inside the VMA. The one case where
//!    `sp` is below every touched byte (code that lowered `sp` and was interrupted before it
//!    stored anything) is still safe: the kernel grows a `VM_GROWSDOWN` mapping on any access
//!    below it that stays within `RLIMIT_STACK` and the guard gap, which is what `lo` encodes
//!    (x86 stopped checking the access against `sp` in Linux 4.20).
//! 3. **Neither kind of stack is ever `PROT_NONE` or unmapped above the live stack
//!    pointer**: that memory holds the live frames of the thread itself.
//!
//! Addresses below `sp` are dead stack: a frame record there is corrupt by definition, so the
//! fast path refuses them (and never makes the kernel grow the main stack for one).
//!
//! # Exceptions: when the fast path does not apply
//!
//! The bounds describe the *thread's* stack, not whatever stack the code happens to run on.
//! In each of these cases the frames lie outside `[lo, hi)` (or `sp` does), so `covers` says
//! no and the unwinder falls back to its [`Prober`](crate::Prober) for them. The test suite
//! (`tests/fast_path.rs`) builds each one:
//!
//! - **sigaltstack**: a handler with `SA_ONSTACK` runs on the alternate stack. Its own frames,
//!   and its own stack pointer, are outside `[lo, hi)`: a walk that starts from the handler's
//!   frame pointer probes every frame. A walk that starts from the interrupted context (the
//!   `ucontext`'s `sp` and frame pointer) is back on the thread's stack and uses the fast path.
//! - **Coroutines and green threads** with their own stacks (`mmap`'d, heap-allocated):
//!   frames on such a stack, and a stack pointer on it, are outside `[lo, hi)`, so they are
//!   probed, and so is a chain that goes from there back to the thread's stack (the walk's
//!   `sp` is not in `[lo, hi)`). A runtime that moves a registered thread's code onto another
//!   stack does not need to do anything: the check is per read.
//! - **Split (segmented) stacks** (`-fsplit-stack`): later segments are separate mappings
//!   outside `[lo, hi)`, handled like coroutine stacks.
//! - **Memory the application made unreadable inside its own live stack** (`mprotect`,
//!   `munmap`, `MADV_GUARD_INSTALL` above the stack pointer) breaks premise 3 and is not
//!   supported: such a program would crash on its own return.
//! - **A user-provided pthread stack** (`pthread_attr_setstack`) must stay mapped while the
//!   thread runs; registration checks it is mapped and readable at that moment.
//!
//! # Signal safety of the thread-local slot
//!
//! The slot is a `thread_local!` with a `const` initialiser holding two atomics: a type
//! without drop glue, so std neither initialises it lazily nor registers a destructor, and
//! reading it is one load from the thread's TLS block. Registration writes `hi = 0` first, then
//! `lo`, then `hi`, with compiler fences in between, and [`current`](StackBounds::current)
//! reads `hi` first: a handler that interrupts a registration sees either no bounds or
//! complete ones. If the crate is linked into a `dlopen`'d shared object, the first access to
//! a thread-local from a given thread may go through `__tls_get_addr`, which can allocate on
//! some libc versions: register (or call [`current`](StackBounds::current)) once on each
//! thread before signals can reach it.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering, compiler_fence};
use std::fmt;

/// The stack range `[lo, hi)` of the calling thread. See the [module docs](self) for how it is
/// learned and why reads between a stack pointer and `hi` need no probe.
///
/// A `StackBounds` is neither `Send` nor `Sync`: it describes the stack of the thread that got
/// it, and is only meaningful (and [`read`](Self::read) is only sound) on that thread.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StackBounds {
    lo: usize,
    hi: usize,
    kind: StackKind,
    _not_send: PhantomData<*const ()>,
}

/// How a thread's bounds were learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackKind {
    /// The main thread's `[stack]` mapping and `RLIMIT_STACK`.
    Main,
    /// A thread's stack block, from `pthread_getattr_np`.
    Thread,
}

/// Why [`StackBounds::register_current_thread`] could not learn the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackBoundsError {
    /// `/proc/self/maps` could not be read (no `/proc`, or a sandbox hides it).
    ProcMaps {
        /// The errno of the failed read, if the OS gave one.
        errno: Option<i32>,
    },
    /// `pthread_getattr_np` or `pthread_attr_getstack` failed with this error number.
    Pthread {
        /// The call that failed.
        call: &'static str,
        /// Its return value (an errno).
        errno: i32,
    },
    /// The stack pointer is not inside the range found: registration is running on a
    /// sigaltstack, a coroutine stack or a split-stack segment. Register on the thread's own
    /// stack instead.
    NotOnThreadStack {
        /// The stack pointer at registration.
        sp: usize,
        /// The range found.
        lo: usize,
        /// The range found.
        hi: usize,
    },
    /// Part of the range is not mapped readable in `/proc/self/maps`, so a plain load there
    /// could fault; the thread is not registered.
    NotReadable {
        /// The first address in the range that is not mapped readable.
        addr: usize,
    },
}

impl fmt::Display for StackBoundsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StackBoundsError::ProcMaps { errno } => {
                write!(f, "cannot read /proc/self/maps to find the stack")?;
                if let Some(e) = errno {
                    write!(f, " (errno {e})")?;
                }
                Ok(())
            }
            StackBoundsError::Pthread { call, errno } => {
                write!(f, "{call} failed with error {errno}")
            }
            StackBoundsError::NotOnThreadStack { sp, lo, hi } => write!(
                f,
                "the stack pointer {sp:#x} is outside the thread's stack [{lo:#x}, {hi:#x}): \
                 registration must run on the thread's own stack, not a sigaltstack or coroutine stack"
            ),
            StackBoundsError::NotReadable { addr } => write!(
                f,
                "the thread's stack is not mapped readable at {addr:#x} according to /proc/self/maps"
            ),
        }
    }
}

impl std::error::Error for StackBoundsError {}

/// The per-thread slot. `hi == 0` means "not registered".
struct Slot {
    lo: AtomicUsize,
    hi: AtomicUsize,
    main: AtomicUsize,
}

thread_local! {
    static SLOT: Slot = const {
        Slot {
            lo: AtomicUsize::new(0),
            hi: AtomicUsize::new(0),
            main: AtomicUsize::new(0),
        }
    };
}

/// The calling context's stack pointer. Async-signal-safe.
///
/// On x86_64 and aarch64 this is the `sp` register; elsewhere it is the address of a local
/// variable, which lies above the true stack pointer and so only makes
/// [`StackBounds::covers`] stricter.
#[inline(always)]
pub fn current_sp() -> usize {
    cfg_if::cfg_if! {
        if #[cfg(target_arch = "x86_64")] {
            let sp: usize;
            // SAFETY: copies the stack pointer register; touches no memory.
            unsafe {
                core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
            };
            sp
        } else if #[cfg(target_arch = "aarch64")] {
            let sp: usize;
            // SAFETY: copies the stack pointer register; touches no memory.
            unsafe {
                core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
            };
            sp
        } else {
            let local = 0u8;
            core::hint::black_box(&local) as *const u8 as usize
        }
    }
}

impl StackBounds {
    /// Learns the calling thread's stack (see the [module docs](self)) and records it in the
    /// thread's slot, so that [`current`](Self::current) returns it from then on, including
    /// in signal handlers on this thread. Calling it again refreshes the record.
    ///
    /// Not async-signal-safe: it reads `/proc/self/maps` and allocates. Call it when a thread
    /// starts, before its profiler timer is armed.
    pub fn register_current_thread() -> Result<StackBounds, StackBoundsError> {
        let bounds = Self::learn_current_thread()?;
        SLOT.with(|s| {
            s.hi.store(0, Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            s.lo.store(bounds.lo, Ordering::Relaxed);
            s.main.store(
                usize::from(bounds.kind == StackKind::Main),
                Ordering::Relaxed,
            );
            compiler_fence(Ordering::SeqCst);
            s.hi.store(bounds.hi, Ordering::Relaxed);
        });
        Ok(bounds)
    }

    /// Forgets the calling thread's bounds: later walks on this thread probe every frame.
    /// Async-signal-safe.
    pub fn unregister_current_thread() {
        let _ = SLOT.try_with(|s| s.hi.store(0, Ordering::Relaxed));
        compiler_fence(Ordering::SeqCst);
    }

    /// The bounds registered for the calling thread, or `None` if it was never registered
    /// (then skip the fast path: never guess a stack).
    ///
    /// Async-signal-safe: one thread-local load, no allocation, no lock, `errno` untouched.
    #[inline]
    pub fn current() -> Option<StackBounds> {
        SLOT.try_with(|s| {
            let hi = s.hi.load(Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            if hi == 0 {
                return None;
            }
            let lo = s.lo.load(Ordering::Relaxed);
            let kind = if s.main.load(Ordering::Relaxed) != 0 {
                StackKind::Main
            } else {
                StackKind::Thread
            };
            Some(StackBounds {
                lo,
                hi,
                kind,
                _not_send: PhantomData,
            })
        })
        .ok()
        .flatten()
    }

    /// Learns the calling thread's stack without recording it. Not async-signal-safe.
    pub fn learn_current_thread() -> Result<StackBounds, StackBoundsError> {
        let sp = current_sp();
        let maps = Maps::read()?;
        let here = maps.containing(sp);
        let (lo, hi, kind) = match here {
            Some(m) if m.name == "[stack]" => {
                let (lo, hi) = main_stack_range(&maps, m);
                (lo, hi, StackKind::Main)
            }
            _ => {
                let (lo, hi) = pthread_stack_range()?;
                (lo, hi, StackKind::Thread)
            }
        };
        if !(lo <= sp && sp < hi) {
            return Err(StackBoundsError::NotOnThreadStack { sp, lo, hi });
        }
        // The part that must be mapped now: all of it for a thread, the part from the current
        // stack pointer up for the main stack (below, it grows on demand).
        let must_map_from = match kind {
            StackKind::Thread => lo,
            StackKind::Main => sp & !(crate::range::page_size() - 1),
        };
        if let Some(addr) = maps.first_unreadable(must_map_from, hi) {
            return Err(StackBoundsError::NotReadable { addr });
        }
        Ok(StackBounds {
            lo,
            hi,
            kind,
            _not_send: PhantomData,
        })
    }

    /// Lowest address of the stack (for the main thread, the lowest it may grow to).
    pub const fn lo(&self) -> usize {
        self.lo
    }

    /// One past the highest address of the stack.
    pub const fn hi(&self) -> usize {
        self.hi
    }

    /// How the bounds were learned.
    pub const fn kind(&self) -> StackKind {
        self.kind
    }

    /// Whether `sp` lies on this stack (`lo <= sp < hi`).
    #[inline]
    pub const fn contains_sp(&self, sp: usize) -> bool {
        self.lo <= sp && sp < self.hi
    }

    /// Whether `[addr, addr + len)` is readable without a probe, given `sp`, a stack pointer
    /// of the calling thread: `lo <= sp <= addr` and `addr + len <= hi`, without overflow.
    /// See the [module docs](self) for why this is sound and when it says no.
    ///
    /// Pure arithmetic: async-signal-safe and costs a few compares.
    #[inline]
    pub const fn covers(&self, sp: usize, addr: usize, len: usize) -> bool {
        if !self.contains_sp(sp) || addr < sp {
            return false;
        }
        match addr.checked_add(len) {
            Some(end) => end <= self.hi,
            None => false,
        }
    }

    /// Copies `[addr, addr + dst.len())` into `dst` with plain loads if
    /// [`covers`](Self::covers) accepts it, and returns whether it did (`false`: nothing was
    /// read, use a [`Prober`](crate::Prober)). Async-signal-safe; no syscall.
    #[inline]
    pub fn read(&self, sp: usize, addr: usize, dst: &mut [u8]) -> bool {
        if !self.covers(sp, addr, dst.len()) {
            return false;
        }
        for (i, byte) in dst.iter_mut().enumerate() {
            // SAFETY: `covers` proved `[addr, addr + len)` lies between a live stack pointer
            // of this thread and the top of its stack, which is mapped and readable (module
            // docs). Volatile: the bytes may belong to frames the compiler knows nothing of.
            *byte = unsafe { core::ptr::read_volatile((addr + i) as *const u8) };
        }
        true
    }

    /// Loads the aligned machine word at `addr` with a plain load if
    /// [`covers`](Self::covers) accepts it; `None` means "not covered (or misaligned): probe it".
    /// Async-signal-safe; no syscall.
    #[inline]
    pub fn load_word(&self, sp: usize, addr: usize) -> Option<usize> {
        if !addr.is_multiple_of(core::mem::align_of::<usize>())
            || !self.covers(sp, addr, core::mem::size_of::<usize>())
        {
            return None;
        }
        // SAFETY: aligned, and inside `[sp, hi)`, which is mapped and readable (module docs).
        Some(unsafe { core::ptr::read_volatile(addr as *const usize) })
    }
    /// Loads the two aligned machine words at `addr` (a frame record: saved frame pointer and
    /// return address) with plain loads if [`covers`](Self::covers) accepts all of them;
    /// `None` means "not covered (or misaligned): probe it". Async-signal-safe; no syscall.
    #[inline]
    pub fn load_pair(&self, sp: usize, addr: usize) -> Option<[usize; 2]> {
        const W: usize = core::mem::size_of::<usize>();
        if !addr.is_multiple_of(W) || !self.covers(sp, addr, 2 * W) {
            return None;
        }
        let p = addr as *const usize;
        // SAFETY: aligned, and inside `[sp, hi)`, which is mapped and readable (module docs).
        Some(unsafe {
            [
                core::ptr::read_volatile(p),
                core::ptr::read_volatile(p.add(1)),
            ]
        })
    }
    /// The frame records that [`covers`](Self::covers) accepts for stack pointer `sp`,
    /// precomputed for a walk: `None` if `sp` is not on this stack. Async-signal-safe.
    #[inline]
    pub fn frame_window(&self, sp: usize) -> Option<FrameWindow> {
        const W: usize = core::mem::size_of::<usize>();
        if !self.contains_sp(sp) {
            return None;
        }
        Some(FrameWindow {
            first: sp,
            last: self.hi.checked_sub(2 * W)?,
            _not_send: PhantomData,
        })
    }
}

/// The addresses at which a two-word frame record lies inside `[sp, hi)` of the calling
/// thread's stack, precomputed by [`StackBounds::frame_window`] so that each frame of a walk
/// costs two compares. Neither `Send` nor `Sync`, like [`StackBounds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameWindow {
    /// Lowest accepted record address (the stack pointer).
    first: usize,
    /// Highest accepted record address (`hi` minus two words).
    last: usize,
    _not_send: PhantomData<*const ()>,
}

impl FrameWindow {
    /// Loads the two words at `addr` with plain loads if `addr` is word-aligned and
    /// `sp <= addr && addr + 2 words <= hi` (exactly [`StackBounds::covers`]); `None` means
    /// "probe it". Async-signal-safe; no syscall.
    #[inline(always)]
    pub fn load_pair(&self, addr: usize) -> Option<[usize; 2]> {
        const W: usize = core::mem::size_of::<usize>();
        if addr < self.first || addr > self.last || !addr.is_multiple_of(W) {
            return None;
        }
        let p = addr as *const usize;
        // SAFETY: `StackBounds::frame_window` checked that `first` is a stack pointer on this
        // thread's stack and `last + 2 words == hi`, so `[addr, addr + 2 words)` lies in
        // `[sp, hi)`, which is mapped and readable (module docs); `addr` is aligned.
        Some(unsafe {
            [
                core::ptr::read_volatile(p),
                core::ptr::read_volatile(p.add(1)),
            ]
        })
    }
}

impl fmt::Debug for StackBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBounds")
            .field("lo", &format_args!("{:#x}", self.lo))
            .field("hi", &format_args!("{:#x}", self.hi))
            .field("kind", &self.kind)
            .finish()
    }
}

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug)]
struct Mapping {
    start: usize,
    end: usize,
    readable: bool,
    name: String,
}

struct Maps(Vec<Mapping>);

impl Maps {
    fn read() -> Result<Maps, StackBoundsError> {
        let text =
            std::fs::read_to_string("/proc/self/maps").map_err(|e| StackBoundsError::ProcMaps {
                errno: e.raw_os_error(),
            })?;
        Ok(Maps(text.lines().filter_map(parse_maps_line).collect()))
    }

    fn containing(&self, addr: usize) -> Option<&Mapping> {
        self.0.iter().find(|m| m.start <= addr && addr < m.end)
    }

    /// The first address of `[from, to)` not inside a readable mapping, if any.
    fn first_unreadable(&self, from: usize, to: usize) -> Option<usize> {
        let mut at = from;
        while at < to {
            match self.containing(at) {
                Some(m) if m.readable => at = m.end,
                _ => return Some(at),
            }
        }
        None
    }
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    // offset, dev, inode, then the optional name (which may contain spaces).
    let name = line
        .splitn(6, |c: char| c.is_ascii_whitespace())
        .nth(5)
        .map(str::trim)
        .unwrap_or("");
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        readable: perms.starts_with('r'),
        name: name.to_owned(),
    })
}

/// The kernel's `stack_guard_gap` in bytes: `stack_guard_gap=<pages>` on the command line,
/// else 256 pages.
fn stack_guard_gap() -> usize {
    let pages = std::fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|c| {
            c.split_ascii_whitespace()
                .find_map(|w| w.strip_prefix("stack_guard_gap="))
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(256);
    pages.saturating_mul(crate::range::page_size())
}

/// `[lo, hi)` of the main thread's stack: the top of `[stack]`, and the lowest address the
/// mapping may grow to under `RLIMIT_STACK` and the guard gap below it.
fn main_stack_range(maps: &Maps, stack: &Mapping) -> (usize, usize) {
    let hi = stack.end;
    let mut lo = 0usize;
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut rl) } == 0
        && rl.rlim_cur != libc::RLIM_INFINITY
    {
        lo = hi.saturating_sub(rl.rlim_cur as usize);
    }
    let below = maps
        .0
        .iter()
        .filter(|m| m.end <= stack.start)
        .map(|m| m.end)
        .max()
        .unwrap_or(0);
    lo = lo.max(below.saturating_add(stack_guard_gap()));
    // Never claim less than what is mapped now (a lowered rlimit does not unmap anything).
    lo = lo.min(stack.start);
    let ps = crate::range::page_size();
    (lo.next_multiple_of(ps).min(stack.start), hi)
}

/// `[lo, hi)` of the calling thread's stack block from `pthread_getattr_np`.
fn pthread_stack_range() -> Result<(usize, usize), StackBoundsError> {
    let mut attr = core::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: pthread_getattr_np initialises `attr` for the calling thread on success.
    let ret = unsafe { libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) };
    if ret != 0 {
        return Err(StackBoundsError::Pthread {
            call: "pthread_getattr_np",
            errno: ret,
        });
    }
    let mut addr: *mut libc::c_void = core::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialised above; the out-pointers are valid.
    let ret = unsafe { libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) };
    // SAFETY: `attr` was initialised by pthread_getattr_np and is destroyed exactly once.
    unsafe { libc::pthread_attr_destroy(attr.as_mut_ptr()) };
    if ret != 0 {
        return Err(StackBoundsError::Pthread {
            call: "pthread_attr_getstack",
            errno: ret,
        });
    }
    let lo = addr as usize;
    Ok((lo, lo.saturating_add(size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let m = parse_maps_line(
            "7ffc1a2b3000-7ffc1a2d4000 rw-p 00000000 00:00 0                          [stack]",
        )
        .unwrap();
        assert_eq!((m.start, m.end), (0x7ffc1a2b3000, 0x7ffc1a2d4000));
        assert!(m.readable);
        assert_eq!(m.name, "[stack]");
        let m = parse_maps_line("1000-2000 ---p 00000000 00:00 0").unwrap();
        assert!(!m.readable);
        assert_eq!(m.name, "");
        let m = parse_maps_line("1000-2000 r--p 00000000 08:01 42   /a b/c d").unwrap();
        assert_eq!(m.name, "/a b/c d");
        assert!(parse_maps_line("garbage").is_none());
    }

    #[test]
    fn covers_is_exact_arithmetic() {
        let b = StackBounds {
            lo: 0x1000,
            hi: 0x9000,
            kind: StackKind::Thread,
            _not_send: PhantomData,
        };
        let sp = 0x4000;
        assert!(b.covers(sp, 0x4000, 16));
        assert!(b.covers(sp, 0x8ff0, 16));
        assert!(!b.covers(sp, 0x8ff8, 16), "crosses hi");
        assert!(!b.covers(sp, 0x3ff8, 8), "below sp");
        assert!(!b.covers(0x9000, 0x9000, 0), "sp at hi is not on the stack");
        assert!(!b.covers(0x800, 0x4000, 8), "sp below lo");
        assert!(!b.covers(sp, usize::MAX - 4, 16), "overflow");
        assert!(b.covers(sp, 0x9000, 0));
        assert_eq!(b.load_word(sp, 0x4001), None, "misaligned");
    }

    #[test]
    fn unregistered_thread_has_no_bounds() {
        std::thread::spawn(|| {
            assert!(StackBounds::current().is_none());
            let b = StackBounds::register_current_thread().unwrap();
            assert_eq!(StackBounds::current(), Some(b));
            StackBounds::unregister_current_thread();
            assert!(StackBounds::current().is_none());
        })
        .join()
        .unwrap();
    }
}
