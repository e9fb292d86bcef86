//! The calling thread's own stack range, so that an unwinder can read its own frames with
//! plain loads instead of a probe.
//!
//! A frame-pointer walk of the thread's own stack spends nearly all of its validation cost
//! on memory that cannot fault: the thread's live stack. [`StackBounds`] records that stack's
//! range `[lo, hi)` once per thread, outside signal context, in a thread-local slot. A signal
//! handler on the same thread reads it back with [`StackBounds::current`], which is one
//! thread-local load: async-signal-safe, allocation-free and lock-free. A read that
//! [`StackBounds::read`] (or [`load_word`](StackBounds::load_word),
//! [`load_pair`](StackBounds::load_pair), [`frame_window`](StackBounds::frame_window)) accepts
//! needs no probe at all; anything else goes through a [`Prober`](crate::Prober).
//!
//! # How the range is learned ([`StackBounds::register_current_thread`])
//!
//! - **Main thread** (the thread whose id is the process id): `[lo, hi)` is the `[stack]`
//!   mapping of `/proc/self/maps` *as it is at registration*. The mapping grows down on demand,
//!   but the bounds do not follow: `lo` is never below what is mapped, so no read the fast path
//!   makes can make the kernel grow the stack, and `RLIMIT_STACK` and the kernel's guard gap
//!   play no part. Frames the stack grows to later lie below `lo` and are read through the
//!   prober (correct, just slower); registering again refreshes `lo`.
//! - **Every other thread**: `pthread_getattr_np` and `pthread_attr_getstack` give the stack
//!   block that glibc (or the application, through `pthread_attr_setstack`) allocated; the
//!   guard pages below it are excluded.
//!
//! Either way, registration then checks `/proc/self/maps`: the current stack pointer must lie
//! in `[lo, hi)` (it does not when registration runs on a sigaltstack or a coroutine stack:
//! that is [`StackBoundsError::NotOnThreadStack`]), and all of `[lo, hi)` must be mapped
//! readable. A thread that was never registered has no bounds: [`StackBounds::current`]
//! returns `None` and the unwinder probes every frame. The fast path is skipped, never
//! guessed.
//!
//! # Why a read between the thread's real stack pointer and `hi` is readable without a probe
//!
//! The safe loaders ([`read`](StackBounds::read), [`load_word`](StackBounds::load_word),
//! [`load_pair`](StackBounds::load_pair), [`frame_window`](StackBounds::frame_window) and
//! [`FrameWindow::load_pair`]) load `[addr, addr + len)` only when
//!
//! ```text
//! lo <= real_sp <= addr,   sp <= addr,   addr + len <= hi
//! ```
//!
//! where `real_sp` is the stack pointer register of the code doing the load, read by
//! [`current_sp`] at that moment, and `sp` is the caller's argument. The argument can only
//! narrow the range: whatever it says (`lo`, below the real stack pointer, `hi` or beyond,
//! made up), it never makes a safe function load an address below the real stack pointer.
//! Such a read cannot fault because:
//!
//! 1. **`[lo, hi)` was mapped and readable at registration and stays mapped while its thread
//!    runs.** For a thread it is the stack block glibc `mmap`ed read-write when the thread was
//!    created; glibc unmaps (or caches) it only after the thread has exited. For the main
//!    thread it is the `[stack]` mapping as it was at registration: the kernel never shrinks
//!    it. The bounds live in a thread-local slot, and [`StackBounds`] and [`FrameWindow`] are
//!    neither `Send` nor `Sync`, so they are only ever used on the thread they describe,
//!    while it runs.
//! 2. **Everything from the real stack pointer up to `hi` is live stack.** `real_sp` lies in
//!    `[lo, hi)`, so the code is running on this stack, and every byte between its stack
//!    pointer and the top holds the frames of the function doing the load, its callers and
//!    whatever they interrupted: the thread will return through them, so they are readable.
//!    (Memory the application made unreadable *inside its own live stack* is not supported:
//!    such a program would crash on its own return.) The page at `real_sp` itself is mapped
//!    because `real_sp >= lo` and `[lo, hi)` was mapped at registration (premise 1): the
//!    check never relies on the kernel growing the stack to reach it.
//! 3. **Below the real stack pointer is dead stack**, which a program may legitimately make
//!    unreadable (a runtime's guard zone inside a thread's stack, `MADV_GUARD_INSTALL`) or, on
//!    the main thread, which may not be mapped at all. The safe loaders never read it, whatever
//!    `sp` they are given: a frame record there is corrupt by definition and goes to the
//!    prober.
//!
//! When the real stack pointer is outside `[lo, hi)` (a handler on a sigaltstack, code on a
//! coroutine stack or a split-stack segment, a main thread whose stack grew below `lo` since
//! registration), the safe loaders accept nothing and the unwinder probes every frame.
//!
//! # The `unsafe` variants: a stack pointer the caller vouches for
//!
//! A handler running on a sigaltstack has its real stack pointer off the thread's stack, but
//! the interrupted context's stack pointer (which the kernel wrote into the `ucontext`) is a
//! live stack pointer of this thread: everything between it and `hi` is that context's frames,
//! suspended while the handler runs. [`StackBounds::read_unchecked`],
//! [`load_word_unchecked`](StackBounds::load_word_unchecked),
//! [`frame_window_unchecked`](StackBounds::frame_window_unchecked) and
//! [`Unwinder::walk_trusted`](crate::unwind::Unwinder::walk_trusted)
//! take such a stack pointer on trust instead of reading the real one; their `# Safety`
//! sections state the contract. Even they load only inside `[sp, hi)` with `lo <= sp`: the
//! registered, mapped range, never below it.
//!
//! # Exceptions: when the fast path does not apply
//!
//! The bounds describe the *thread's* stack, not whatever stack the code happens to run on.
//! In each of these cases the frames lie outside `[lo, hi)` (or the stack pointer does), so
//! the loaders say no and the unwinder falls back to its [`Prober`](crate::Prober). The test
//! suite (`tests/fast_path.rs`, `tests/stack_soundness.rs`) builds each one:
//!
//! - **sigaltstack**: a handler with `SA_ONSTACK` runs on the alternate stack. Its own frames,
//!   and its own stack pointer, are outside `[lo, hi)`: every safe walk and read from the
//!   handler probes. A walk from the interrupted context (the `ucontext`'s stack and frame
//!   pointers) is back on the thread's stack and uses the fast path through
//!   [`walk_trusted`](crate::unwind::Unwinder::walk_trusted). A handler *without*
//!   `SA_ONSTACK` runs on the thread's stack, below the interrupted frames, and the safe
//!   [`walk`](crate::unwind::Unwinder::walk) from
//!   [`Start::Regs`](crate::unwind::Start::Regs) reads them with the fast path.
//! - **Coroutines and green threads** with their own stacks (`mmap`'d, heap-allocated):
//!   frames on such a stack, and a stack pointer on it, are outside `[lo, hi)`, so they are
//!   probed, and so is a chain that goes from there back to the thread's stack (the walk's
//!   stack pointer is not in `[lo, hi)`). A runtime that moves a registered thread's code onto
//!   another stack does not need to do anything: the check is per read.
//! - **Split (segmented) stacks** (`-fsplit-stack`): later segments are separate mappings
//!   outside `[lo, hi)`, handled like coroutine stacks.
//! - **The main thread's stack grown below `lo`** after registration: frames below `lo` are
//!   probed, and while the real stack pointer is below `lo` everything is. Register again (at
//!   a depth the thread has reached) to move `lo` down.
//! - **Memory the application made unreadable inside its own live stack** (`mprotect`,
//!   `munmap`, `MADV_GUARD_INSTALL` above the stack pointer) breaks premise 2 and is not
//!   supported: such a program would crash on its own return. Below the stack pointer it is
//!   fine (premise 3).
//! - **A user-provided pthread stack** (`pthread_attr_setstack`) must stay mapped while the
//!   thread runs; registration checks it is mapped and readable at that moment.
//!
//! # Async-signal safety
//!
//! [`StackBounds::current`], [`unregister_current_thread`](StackBounds::unregister_current_thread),
//! [`current_sp`], [`contains_sp`](StackBounds::contains_sp),
//! [`covers`](StackBounds::covers), the safe loaders, [`FrameWindow::load_pair`] and the
//! `_unchecked` variants are async-signal-safe: no syscall, no allocation, no lock, `errno`
//! untouched. [`register_current_thread`](StackBounds::register_current_thread) and
//! [`learn_current_thread`](StackBounds::learn_current_thread) are not: they read
//! `/proc/self/maps` and allocate.
//!
//! # Signal safety of the thread-local slot
//!
//! The slot is a `thread_local!` with a `const` initialiser holding atomics: a type without
//! drop glue, so std neither initialises it lazily nor registers a destructor, and reading it
//! is one load from the thread's TLS block. Registration writes `hi = 0` first, then `lo`,
//! then `hi`, with compiler fences in between, and [`current`](StackBounds::current) reads `hi`
//! first: a handler that interrupts a registration sees either no bounds or complete ones. If
//! the crate is linked into a `dlopen`'d shared object, the first access to a thread-local from
//! a given thread may go through `__tls_get_addr`, which can allocate on some libc versions:
//! register (or call [`current`](StackBounds::current)) once on each thread before signals can
//! reach it.
//!
//! A [`StackBounds`] cannot leave its thread:
//!
//! ```compile_fail,E0277
//! use addrprobe::stack_bounds::StackBounds;
//! fn needs_send<T: Send>(_: T) {}
//! needs_send(StackBounds::current());
//! ```

use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering, compiler_fence};
use std::fmt;

/// The stack range `[lo, hi)` of the calling thread. See the [module docs](self) for how it is
/// learned and why reads between the thread's real stack pointer and `hi` need no probe.
///
/// A `StackBounds` is neither `Send` nor `Sync`: it describes the stack of the thread that got
/// it and is only meaningful on that thread (the safe loaders also check, at each load, that
/// the code runs on this stack).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StackBounds {
    lo: usize,
    hi: usize,
    /// The stack pointer at registration (see [`StackBounds::entry_sp`]).
    entry: usize,
    kind: StackKind,
    _not_send: PhantomData<*const ()>,
}

/// How a thread's bounds were learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackKind {
    /// The main thread's `[stack]` mapping, as it was mapped at registration (never what
    /// it may grow to).
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
    entry: AtomicUsize,
    main: AtomicUsize,
}

thread_local! {
    static SLOT: Slot = const {
        Slot {
            lo: AtomicUsize::new(0),
            hi: AtomicUsize::new(0),
            entry: AtomicUsize::new(0),
            main: AtomicUsize::new(0),
        }
    };
}

/// The stack pointer of the function this is inlined into (it always is), read from the
/// register at this point. Async-signal-safe.
///
/// On x86_64 and aarch64 this is the `sp` register; elsewhere it is the address of a local
/// variable, which lies above the true stack pointer and so only makes the safe loaders of
/// [`StackBounds`] stricter.
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
    /// starts, before its profiler timer is armed. On the main thread the bounds are the
    /// `[stack]` mapping as it is now: frames below it (the stack grows on demand) are
    /// probed, so register where the thread has already used the stack it will need, or again
    /// later.
    // Always inlined, so that `current_sp` reads the caller's stack pointer: the entry frames
    // (`entry_sp`) are then exactly the caller's frame and those above it.
    #[inline(always)]
    pub fn register_current_thread() -> Result<StackBounds, StackBoundsError> {
        Self::register_at(current_sp())
    }

    /// [`register_current_thread`](Self::register_current_thread) with the caller's stack
    /// pointer `sp`.
    #[inline(never)]
    fn register_at(sp: usize) -> Result<StackBounds, StackBoundsError> {
        let mut bounds = Self::learn_at(sp)?;
        SLOT.with(|s| {
            // Registering again (e.g. deeper, to move the main thread's `lo` down) keeps the
            // shallowest entry stack pointer: the frames above it are still the entry frames.
            if s.hi.load(Ordering::Relaxed) == bounds.hi {
                bounds.entry = bounds.entry.max(s.entry.load(Ordering::Relaxed));
            }
            s.hi.store(0, Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            s.lo.store(bounds.lo, Ordering::Relaxed);
            s.entry.store(bounds.entry, Ordering::Relaxed);
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
            let entry = s.entry.load(Ordering::Relaxed);
            let kind = if s.main.load(Ordering::Relaxed) != 0 {
                StackKind::Main
            } else {
                StackKind::Thread
            };
            Some(StackBounds {
                lo,
                hi,
                entry,
                kind,
                _not_send: PhantomData,
            })
        })
        .ok()
        .flatten()
    }

    /// Learns the calling thread's stack without recording it. Not async-signal-safe.
    #[inline(always)]
    pub fn learn_current_thread() -> Result<StackBounds, StackBoundsError> {
        Self::learn_at(current_sp())
    }

    /// [`learn_current_thread`](Self::learn_current_thread) with the caller's stack pointer
    /// `sp` (on the thread's stack, or registration fails).
    #[inline(never)]
    fn learn_at(sp: usize) -> Result<StackBounds, StackBoundsError> {
        let maps = Maps::read()?;
        let (lo, hi, kind) = if is_main_thread() {
            // What is mapped now, never what the stack may grow to.
            let (lo, hi) = maps
                .0
                .iter()
                .find(|m| m.name == "[stack]")
                .map_or((0, 0), |m| (m.start, m.end));
            (lo, hi, StackKind::Main)
        } else {
            let (lo, hi) = pthread_stack_range()?;
            (lo, hi, StackKind::Thread)
        };
        if !(lo <= sp && sp < hi) {
            return Err(StackBoundsError::NotOnThreadStack { sp, lo, hi });
        }
        if let Some(addr) = maps.first_unreadable(lo, hi) {
            return Err(StackBoundsError::NotReadable { addr });
        }
        Ok(StackBounds {
            lo,
            hi,
            entry: sp,
            kind,
            _not_send: PhantomData,
        })
    }

    /// Lowest address of the stack (for the main thread, the start of `[stack]` when it was
    /// registered).
    pub const fn lo(&self) -> usize {
        self.lo
    }

    /// One past the highest address of the stack.
    pub const fn hi(&self) -> usize {
        self.hi
    }

    /// The stack pointer of the code that called
    /// [`register_current_thread`](Self::register_current_thread) (or
    /// [`learn_current_thread`](Self::learn_current_thread) for bounds that were only learned),
    /// at the call; after several registrations of the same stack, the highest of them. The
    /// frames at and above it were live when the thread registered: if
    /// it registered where its code starts (the recommended place: first thing in the
    /// thread's function, or in `main`), they are the thread's start code (`_start`,
    /// `__libc_start_main`, `start_thread`, the Rust runtime's thread and `main` entry), which
    /// is often compiled without frame pointers. [`Walk::ending`](crate::unwind::Walk::ending)
    /// uses it to tell a frame-pointer chain that ended there from one that broke earlier.
    pub const fn entry_sp(&self) -> usize {
        self.entry
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

    /// Whether `[addr, addr + len)` lies between `sp` and the top of this stack:
    /// `lo <= sp <= addr` and `addr + len <= hi`, without overflow.
    ///
    /// Pure arithmetic on the arguments (async-signal-safe, a few compares): it does not make
    /// a read sound by itself, because nothing here checks that `sp` is a live stack pointer.
    /// The safe loaders ([`read`](Self::read) and the others) apply it to the larger of `sp`
    /// and the thread's real stack pointer, after checking that the real one is on this
    /// stack; the `_unchecked` loaders apply it to an `sp` their caller vouches for. See the
    /// [module docs](self).
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

    /// The lowest address the safe loaders may read for the stack pointer argument `sp`: the
    /// larger of `sp` and the real stack pointer of the code this is inlined into, if both lie
    /// on this stack. Everything from it up to `hi` is live stack of this thread (module docs).
    #[inline(always)]
    fn live_floor(&self, sp: usize) -> Option<usize> {
        let real = current_sp();
        if self.contains_sp(real) && self.contains_sp(sp) {
            Some(if sp > real { sp } else { real })
        } else {
            None
        }
    }

    /// Copies `[addr, addr + dst.len())` into `dst` with plain loads if it lies between `sp`
    /// and `hi` *and* above the calling thread's real stack pointer, which must itself be on
    /// this stack; returns whether it did (`false`: nothing was read, use a
    /// [`Prober`](crate::Prober)). `sp` can only narrow what is read: a made-up value never
    /// makes this load below the real stack pointer. Async-signal-safe; no syscall.
    ///
    /// On a sigaltstack the real stack pointer is off this stack and this says no; see
    /// [`read_unchecked`](Self::read_unchecked).
    #[inline]
    pub fn read(&self, sp: usize, addr: usize, dst: &mut [u8]) -> bool {
        match self.live_floor(sp) {
            Some(floor) if self.covers(floor, addr, dst.len()) => {
                // SAFETY: `floor` is at or above this thread's real stack pointer, which lies
                // on the registered stack, and `covers` put the bytes in `[floor, hi)`: live
                // stack inside the range mapped at registration (module docs, premises 1-2).
                unsafe { copy_from(addr, dst) };
                true
            }
            _ => false,
        }
    }

    /// [`read`](Self::read) with `sp` taken on trust instead of the real stack pointer: for a
    /// handler on a sigaltstack reading the context it interrupted. Reads only if
    /// [`covers(sp, addr, dst.len())`](Self::covers), so never outside the registered stack.
    /// Async-signal-safe; no syscall.
    ///
    /// # Safety
    ///
    /// For the whole call, every byte of `[sp, hi)` must be live stack of the calling thread:
    /// `sp` must be the stack pointer of a context of this thread that is suspended while the
    /// call runs (in practice the `sp` that
    /// [`regs_from_ucontext`](crate::unwind::regs_from_ucontext) read from the `ucontext` of
    /// the signal whose handler is running on this thread), or the calling code's own stack
    /// pointer. A made-up `sp` can make this load dead stack that the program made unreadable
    /// (a guard zone below the live stack), which is undefined behaviour and crashes.
    #[inline]
    pub unsafe fn read_unchecked(&self, sp: usize, addr: usize, dst: &mut [u8]) -> bool {
        if !self.covers(sp, addr, dst.len()) {
            return false;
        }
        // SAFETY: `covers` put the bytes in `[sp, hi)` with `lo <= sp`, inside the range
        // mapped at registration, and the caller vouches that all of it is live stack.
        unsafe { copy_from(addr, dst) };
        true
    }

    /// Loads the aligned machine word at `addr` with a plain load under the same conditions
    /// as [`read`](Self::read); `None` means "not accepted (or misaligned): probe it".
    /// Async-signal-safe; no syscall.
    #[inline]
    pub fn load_word(&self, sp: usize, addr: usize) -> Option<usize> {
        let floor = self.live_floor(sp)?;
        if !addr.is_multiple_of(core::mem::align_of::<usize>())
            || !self.covers(floor, addr, core::mem::size_of::<usize>())
        {
            return None;
        }
        // SAFETY: aligned, and inside `[floor, hi)`: live stack of this thread above its real
        // stack pointer, inside the range mapped at registration (module docs).
        Some(unsafe { core::ptr::read_volatile(addr as *const usize) })
    }

    /// [`load_word`](Self::load_word) with `sp` taken on trust, like
    /// [`read_unchecked`](Self::read_unchecked). Async-signal-safe; no syscall.
    ///
    /// # Safety
    ///
    /// As for [`read_unchecked`](Self::read_unchecked): every byte of `[sp, hi)` must be live
    /// stack of the calling thread for the whole call.
    #[inline]
    pub unsafe fn load_word_unchecked(&self, sp: usize, addr: usize) -> Option<usize> {
        if !addr.is_multiple_of(core::mem::align_of::<usize>())
            || !self.covers(sp, addr, core::mem::size_of::<usize>())
        {
            return None;
        }
        // SAFETY: aligned, inside `[sp, hi)` with `lo <= sp` (mapped at registration), which
        // the caller vouches is live stack.
        Some(unsafe { core::ptr::read_volatile(addr as *const usize) })
    }

    /// Loads the two aligned machine words at `addr` (a frame record: saved frame pointer and
    /// return address) with plain loads under the same conditions as [`read`](Self::read);
    /// `None` means "not accepted (or misaligned): probe it". Async-signal-safe; no syscall.
    #[inline]
    pub fn load_pair(&self, sp: usize, addr: usize) -> Option<[usize; 2]> {
        self.frame_window(sp)?.load_pair(addr)
    }

    /// The frame records the safe loaders accept for the stack pointer argument `sp`,
    /// precomputed for a walk: `None` if `sp` or the calling thread's real stack pointer is
    /// not on this stack. The window starts at the larger of the two, and each
    /// [`FrameWindow::load_pair`] checks the real stack pointer again (a window kept and used
    /// later, from a shallower frame or a sigaltstack, never reads dead stack).
    /// Async-signal-safe.
    #[inline]
    pub fn frame_window(&self, sp: usize) -> Option<FrameWindow> {
        let floor = self.live_floor(sp)?;
        Some(FrameWindow {
            first: floor,
            last: self.hi.checked_sub(2 * WORD)?,
            sp_lo: self.lo,
            sp_mask: usize::MAX,
            _not_send: PhantomData,
        })
    }

    /// A window of the frame records in `[sp, hi)`, with `sp` taken on trust instead of the
    /// real stack pointer (which is not checked, at creation or per load): for a handler on
    /// a sigaltstack walking the context it interrupted. `None` if `sp` is not on this stack,
    /// so the window never reaches outside the registered range. Async-signal-safe.
    ///
    /// # Safety
    ///
    /// As long as the window is used, every byte of `[sp, hi)` must be live stack of the
    /// calling thread: `sp` must be the stack pointer of a context of this thread that stays
    /// suspended while the window is used (in practice the `sp` that
    /// [`regs_from_ucontext`](crate::unwind::regs_from_ucontext) read from the `ucontext` of
    /// the signal whose handler is running, used only until the handler returns), or the
    /// stack pointer of a function that is still running. A made-up `sp`, or a window kept
    /// after that context resumed, can load dead stack that the program made unreadable,
    /// which is undefined behaviour and crashes.
    #[inline]
    pub unsafe fn frame_window_unchecked(&self, sp: usize) -> Option<FrameWindow> {
        if !self.contains_sp(sp) {
            return None;
        }
        Some(FrameWindow {
            first: sp,
            last: self.hi.checked_sub(2 * WORD)?,
            sp_lo: 0,
            sp_mask: 0,
            _not_send: PhantomData,
        })
    }
}

/// Bytes in a machine word.
const WORD: usize = core::mem::size_of::<usize>();

/// Copies `dst.len()` bytes from `addr` with volatile byte loads.
///
/// # Safety
///
/// `[addr, addr + dst.len())` must be readable for the whole call.
#[inline]
unsafe fn copy_from(addr: usize, dst: &mut [u8]) {
    for (i, byte) in dst.iter_mut().enumerate() {
        // SAFETY: readable (the caller's contract). Volatile: the bytes may belong to frames
        // the compiler knows nothing of.
        *byte = unsafe { core::ptr::read_volatile((addr + i) as *const u8) };
    }
}

/// The addresses at which a two-word frame record may be loaded from the calling thread's
/// stack, precomputed by [`StackBounds::frame_window`] (or
/// [`frame_window_unchecked`](StackBounds::frame_window_unchecked)) so that each frame of a
/// walk costs a few compares. Neither `Send` nor `Sync`, like [`StackBounds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameWindow {
    /// Lowest accepted record address.
    first: usize,
    /// Highest accepted record address (`hi` minus two words).
    last: usize,
    /// The registered `lo`, which the real stack pointer must not be below (`0` for a window
    /// from [`StackBounds::frame_window_unchecked`]).
    sp_lo: usize,
    /// `usize::MAX` if each load checks the real stack pointer, `0` for a window from
    /// [`StackBounds::frame_window_unchecked`] (the real stack pointer then reads as `0`:
    /// no check, without a branch).
    sp_mask: usize,
    _not_send: PhantomData<*const ()>,
}

impl FrameWindow {
    /// Loads the two words at `addr` with plain loads if `addr` is word-aligned, lies in the
    /// window (`first <= addr`, `addr + 2 words <= hi`) and, for a window from
    /// [`StackBounds::frame_window`], at or above the real stack pointer of the code this is
    /// inlined into, which must be on the registered stack; `None` means "probe it".
    /// Async-signal-safe; no syscall.
    #[inline(always)]
    pub fn load_pair(&self, addr: usize) -> Option<[usize; 2]> {
        let real = current_sp() & self.sp_mask;
        let floor = if real > self.first { real } else { self.first };
        if real < self.sp_lo || addr < floor || addr > self.last || !addr.is_multiple_of(WORD) {
            return None;
        }
        let p = addr as *const usize;
        // Why this is live stack: `addr` is aligned and `[addr, addr + 2 words)` lies in
        // `[first, hi)` with `lo <= first`, inside the range mapped at registration. A checked
        // window also has `lo <= real stack pointer <= addr` (`sp_mask` keeps the register
        // value, `sp_lo` is `lo`); an unchecked one has `first` vouched for as a live stack
        // pointer by the caller of `frame_window_unchecked`.
        // SAFETY: so the two aligned words are mapped, readable stack of this thread.
        Some(unsafe {
            [
                core::ptr::read_volatile(p),
                core::ptr::read_volatile(p.add(1)),
            ]
        })
    }

    /// [`load_pair`](Self::load_pair) without the per-load check of the real stack pointer:
    /// for the unwinder's walk loop, which makes its window once and uses it only while the
    /// function that made it runs.
    ///
    /// # Safety
    ///
    /// The window must come from [`StackBounds::frame_window`] called with a stack pointer at
    /// or above the stack pointer of a function that is still running on this thread, and be
    /// used only while that function runs (its frame and everything above it stay live); or
    /// from [`StackBounds::frame_window_unchecked`], within that function's contract.
    #[inline(always)]
    pub(crate) unsafe fn load_pair_in_frame(&self, addr: usize) -> Option<[usize; 2]> {
        if addr < self.first || addr > self.last || !addr.is_multiple_of(WORD) {
            return None;
        }
        let p = addr as *const usize;
        // SAFETY: `addr` is aligned and `[addr, addr + 2 words)` lies in `[first, hi)`, inside
        // the range mapped at registration; `first` is at or above a live stack pointer of
        // this thread for as long as the window is used (the caller's contract), so the
        // record is live stack (module docs).
        Some(unsafe {
            [
                core::ptr::read_volatile(p),
                core::ptr::read_volatile(p.add(1)),
            ]
        })
    }
}

#[cfg(test)]
impl StackBounds {
    /// Bounds for pure-arithmetic tests (fake stacks): never used to load.
    pub(crate) fn for_test(lo: usize, hi: usize, entry: usize) -> StackBounds {
        StackBounds {
            lo,
            hi,
            entry,
            kind: StackKind::Thread,
            _not_send: PhantomData,
        }
    }
}

impl fmt::Debug for StackBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBounds")
            .field("lo", &format_args!("{:#x}", self.lo))
            .field("hi", &format_args!("{:#x}", self.hi))
            .field("entry", &format_args!("{:#x}", self.entry))
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

/// Whether the calling thread is the process's main thread (its thread id is the process id).
fn is_main_thread() -> bool {
    // SAFETY: gettid and getpid take no arguments and cannot fail.
    let (tid, pid) = unsafe { (libc::syscall(libc::SYS_gettid), libc::getpid()) };
    tid == libc::c_long::from(pid)
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
            entry: 0x8000,
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
    fn safe_loaders_need_the_real_stack_pointer_on_the_stack() {
        // Bounds that the running code is not on: whatever `sp` says, nothing is loaded (a
        // load here would fault: the range is the unmapped low end of the address space).
        let b = StackBounds {
            lo: 0x1000,
            hi: 0x9000,
            entry: 0x8000,
            kind: StackKind::Thread,
            _not_send: PhantomData,
        };
        let mut buf = [0u8; 16];
        for sp in [0x1000, 0x4000, 0x8ff0] {
            assert!(
                b.covers(sp, 0x8ff0, 16),
                "the arithmetic alone would accept it"
            );
            assert!(!b.read(sp, 0x8ff0, &mut buf));
            assert_eq!(b.load_word(sp, 0x8ff0), None);
            assert_eq!(b.load_pair(sp, 0x8ff0), None);
            assert_eq!(b.frame_window(sp), None);
        }
    }

    #[test]
    fn safe_loaders_never_read_below_the_real_stack_pointer() {
        std::thread::spawn(|| {
            let b = StackBounds::register_current_thread().unwrap();
            let lo = b.lo();
            let mut buf = [0u8; 16];
            // `sp = lo` claims the whole stack is live; only the real stack pointer counts.
            assert!(!b.read(lo, lo, &mut buf));
            assert_eq!(b.load_word(lo, lo), None);
            assert_eq!(b.load_pair(lo, lo), None);
            let w = b.frame_window(lo).expect("the real sp is on the stack");
            assert_eq!(w.load_pair(lo), None);
            assert_eq!(b.frame_window(b.hi()), None, "sp at hi is not on the stack");
            // A live local is read, whatever lower `sp` is given.
            let x = core::hint::black_box([7usize, 9usize]);
            let a = &x as *const [usize; 2] as usize;
            assert_eq!(b.load_pair(lo, a), Some([7, 9]));
            assert_eq!(w.load_pair(a), Some([7, 9]));
            assert!(b.read(lo, a, &mut buf));
            assert_eq!(&buf[..8], &7usize.to_ne_bytes());
            let sp = current_sp();
            // SAFETY: `sp` is this function's own stack pointer, live for the whole call.
            assert_eq!(unsafe { b.load_word_unchecked(sp, a) }, Some(7));
            // SAFETY: as above; the window is used only inside this function.
            let uw = unsafe { b.frame_window_unchecked(sp) }.unwrap();
            assert_eq!(uw.load_pair(a), Some([7, 9]));
            // SAFETY: as above.
            assert!(unsafe { b.read_unchecked(sp, a, &mut buf) });
            // Even the unchecked forms stay inside the registered range.
            // SAFETY: refused before any load (`sp` is not on the stack).
            assert_eq!(unsafe { b.frame_window_unchecked(lo - 16) }, None);
            // SAFETY: refused before any load (the range ends above `hi`).
            assert!(!unsafe { b.read_unchecked(sp, b.hi() - 8, &mut buf) });
            core::hint::black_box(&x);
        })
        .join()
        .unwrap();
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
