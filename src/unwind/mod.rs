//! A frame-pointer unwinder whose every memory read is validated by a [`Prober`].
//!
//! This is the workload the crate exists for: a profiler's signal handler (or a crash
//! reporter, or a debugging aid) walks the chain of `(saved frame pointer, return address)`
//! pairs that functions compiled with frame pointers leave on the stack, and must not crash
//! when a frame pointer is corrupt, points into a `PROT_NONE` guard page or into unmapped
//! memory.
//!
//! # Frame layout
//!
//! On x86_64 and aarch64 a function compiled with frame pointers stores, at its frame pointer
//! `fp`, the caller's frame pointer, and at `fp + size_of::<usize>()` the return address into
//! the caller (on aarch64 the frame record `[x29, x30]`; a return address that code built
//! with pointer authentication signed is stripped, [`strip_return_address`]).
//! [`Unwinder::walk`] starts from its caller ([`Start::Current`]), from an explicit
//! `(pc, fp)` ([`Start::From`]) or from a signal's interrupted registers ([`Start::Regs`], taken
//! from its `ucontext` with [`regs_from_ucontext`]); [`Unwinder::walk_trusted`] is its `unsafe`
//! variant for a handler on a sigaltstack. Both fill a caller-provided `&mut [Frame]`, can
//! report how each frame was read ([`ReadStats`]) and never allocate, so they can run in a
//! signal handler.
//!
//! # Frame pointers are the caller's to turn on
//!
//! The walk follows frame records, which only code compiled with frame pointers keeps. This
//! repository's `.cargo/config.toml` forces them (`-C force-frame-pointers=yes`) for its own
//! builds, tests and benches only: it does **not** reach a crate that depends on `addrprobe`.
//! Build your program with the same flag (`RUSTFLAGS`, or a `.cargo/config.toml` of your
//! own). Frames of code built without them (the prebuilt std on x86_64, for one) can end
//! the walk early, which [`Walk::ending`] reports, unless that code is rebuilt with them
//! (`-Zbuild-std` for std). A DWARF unwinder (framehop through [`crate::reader::StackReader`]) needs no
//! frame pointers.
//!
//! # How reads are validated
//!
//! - With a [`Readable`](Guarantee::Readable) backend ([`Unwinder::new`]), each frame's two
//!   words are copied with [`Prober::read`]: race-free, sound on any stack, even a corrupt one.
//! - With a [`Mapped`](Guarantee::Mapped) or [`RegionReadable`](Guarantee::RegionReadable)
//!   backend ([`Unwinder::check_then_load`], which is `unsafe`), each frame is first checked
//!   with [`Prober::check`] and then loaded. That is **only sound on stacks known to be
//!   valid**: a "mapped" page may be `PROT_NONE`, a "region-readable" page may lie beyond the
//!   end of its file, and another thread may unmap the page between the check and the load.
//!   It exists to measure those backends in an unwinder, and for callers that vouch for the
//!   stack.
//! - With [`Unwinder::with_fast_path`], frames that lie between the calling thread's real stack
//!   pointer and the top of its registered stack ([`crate::stack_bounds`]) are read with plain
//!   loads and cost no syscall; the first frame outside falls back to the prober. [`Unwinder::with_batch_window`] makes each probe
//!   copy a window of frames at once ([`crate::batch`]).
//!
//! # Sanity checks
//!
//! The walk stops (and says why, in [`Walk::stop`]) at the first frame pointer that is zero,
//! not aligned to a machine word, not strictly greater than the previous one (stacks grow
//! down, so callers' frames lie above), at a zero return address, at an unreadable frame, after
//! [`Unwinder::max_depth`] frames, or when the output slice is full. Strict increase means a
//! loop in the chain always terminates.
//!
//! A chain that ends is not necessarily a whole stack: a function without a frame pointer
//! breaks it. [`Walk::ending`] tells, by a heuristic it documents exactly, a chain that
//! reached the thread's entry frames ([`StackBounds::entry_sp`], recorded when the thread
//! registered) from one that probably lost its outer frames ([`Ending::ProbablyTruncated`]).
//!
//! # Requirements
//!
//! Only code compiled with frame pointers (`-C force-frame-pointers=yes`, this repository's
//! `.cargo/config.toml` sets it) keeps the chain intact; a frame without one ends the walk
//! early, or (through a stale saved register) makes it report a few bogus frames. It never
//! crashes with a `Readable` backend.

use core::mem::size_of;

use crate::error::Error;
use crate::guarantee::Guarantee;
use crate::prober::Prober;
use crate::stack_bounds::{StackBounds, current_sp};

mod fast;
pub use fast::{MAX_BATCH_WINDOW, ReadStats};

/// Bytes in one machine word, the alignment every frame pointer must have.
const WORD: usize = size_of::<usize>();

/// One frame of a walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// The frame's program counter: the start `pc` for the first frame of a
    /// walk from [`Start::From`] or [`Start::Regs`], a return address (the instruction after the call) for every
    /// other frame. Symbolizers usually look up `pc - 1` for return addresses.
    pub pc: usize,
    /// The frame pointer of the function that `pc` lies in (`0` for the outermost frame).
    pub fp: usize,
}

/// Why a walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The chain ended normally: a zero frame pointer or a zero return address.
    EndOfChain,
    /// [`Unwinder::max_depth`] frames were recorded, or the output slice was full.
    MaxDepth,
    /// A frame pointer was not aligned to a machine word.
    Misaligned {
        /// The offending frame pointer.
        fp: usize,
    },
    /// A frame pointer was not strictly above the previous one (or, for
    /// [`Start::Current`], not above the walker's stack pointer).
    NotIncreasing {
        /// The previous frame pointer (or stack pointer).
        prev: usize,
        /// The offending frame pointer.
        fp: usize,
    },
    /// The two words at this frame pointer could not be read.
    Unreadable {
        /// The frame pointer whose words were unreadable.
        fp: usize,
    },
    /// The prober failed (this is not an answer: the walk could not be validated).
    Error(Error),
}

/// The result of a walk: `depth` frames were written to the start of the output slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// Number of frames written.
    pub depth: usize,
    /// Why the walk stopped.
    pub stop: Stop,
}

/// Where a walk's end lies relative to the calling thread's known stack bottom: see
/// [`Walk::ending`]. A heuristic, not a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The chain ended ([`Stop::EndOfChain`], [`Stop::Unreadable`], [`Stop::NotIncreasing`]
    /// or [`Stop::Misaligned`]) after it reached the thread's entry frames: the highest
    /// record it read on the stack lies at or above [`StackBounds::entry_sp`], below `hi`
    /// (records it read off the stack after that do not count). The walk reached the bottom
    /// of the stack as far as the thread's registration can tell.
    Bottom,
    /// The chain is intact from its start up to `reached`, on the thread's registered stack
    /// below its entry frames, and the frames between `reached` and
    /// [`StackBounds::entry_sp`] are missing: the chain ended there, or jumped from there
    /// into the entry frames (a function without a frame pointer, a corrupt record), or left
    /// the stack from there.
    ProbablyTruncated {
        /// Where the intact part of the chain ends: the highest frame pointer on the stack
        /// whose record the walk read, or the interrupted stack pointer of [`Start::Regs`]
        /// (see [`Walk::ending`]).
        reached: usize,
        /// [`StackBounds::entry_sp`] of the thread.
        entry: usize,
    },
    /// Cannot tell: the thread has no registered bounds, or the walk verified no address on
    /// them (it ran on a sigaltstack or a coroutine stack, or read no record at all).
    Unknown,
    /// The walk did not stop at the end of its chain: [`Stop::MaxDepth`] (more frames may
    /// follow) or [`Stop::Error`] (the backend failed; the stop says so).
    NotAtEnd,
}

impl Walk {
    /// Whether this walk, of `out[..self.depth]` from `start`, reached the bottom of the
    /// calling thread's stack or probably lost its outer frames: a heuristic for profilers,
    /// which should count or mark a sample whose frame-pointer chain broke early instead of
    /// taking its few frames for a whole stack. `bounds` is the calling thread's
    /// [`StackBounds::current`] (call it on the thread that walked, e.g. in the same signal
    /// handler). Async-signal-safe, no memory access beyond `out`.
    ///
    /// Exactly:
    ///
    /// - [`Ending::NotAtEnd`] if the walk stopped at [`Stop::MaxDepth`] or [`Stop::Error`].
    /// - Otherwise `reached` is the higher of two addresses, each taken only if it lies on
    ///   the registered stack `[lo, hi)`: the highest frame pointer on it whose record the
    ///   walk read (the records read are at `out[..depth - 1]`'s frame pointers, and at
    ///   `out[depth - 1].fp` too when the chain ended on a zero return address read there)
    ///   and, for [`Start::Regs`], `regs.sp`. [`Ending::Unknown`] if `bounds` is `None` or
    ///   neither address is on the stack (the walk ran on a sigaltstack or a coroutine
    ///   stack, or read no record and had no `sp`). A chain that left the stack counts what
    ///   it read on it before: a thread's outermost frame whose frame-pointer register still
    ///   held its creator's (musl's aarch64 `clone` does not clear it) leads the walk off the
    ///   stack after the entry frames, which is still the bottom.
    /// - [`Ending::ProbablyTruncated`] with `reached = regs.sp` if the walk started from
    ///   [`Start::Regs`] below the entry frames (`lo <= regs.sp < entry_sp`) and the first
    ///   record it read at or above `regs.sp` on the stack lies in the entry frames: the chain
    ///   jumped from the interrupted context straight into the thread's start code, skipping
    ///   every frame in between. This is what a build without frame pointers looks like: the
    ///   frame-pointer register still holds the frame pointer of the last code that set one
    ///   up, often the thread's start code.
    /// - Otherwise [`Ending::Bottom`] if `entry_sp <= reached < hi`,
    ///   [`Ending::ProbablyTruncated`] if `lo <= reached < entry_sp`.
    ///
    /// Why it is only a heuristic: the entry frames are those that were live when the thread
    /// registered ([`StackBounds::entry_sp`]); a thread that registered deep in its code has
    /// a large entry region and gets `Bottom` for chains that broke inside it (a false "clean
    /// end"), and a chain whose last record was corrupt but pointed into the entry region
    /// looks clean too, as does one that reached the entry frames and then followed a stale
    /// or corrupt record off the stack (which is what the outermost frame of a musl thread
    /// on aarch64 looks like, and why that counts as the bottom). In the other direction, a
    /// chain that really ended below the entry
    /// frames (code that deliberately zeroes its frame pointer to mark an outermost frame,
    /// a stack switched to and back) is reported as truncated. A frame-pointer chain that
    /// skips frames without ending (the interrupted function's `fp` still holds a caller's
    /// frame pointer, or a function without frame pointers left an older frame pointer in
    /// the register) is not detected at all: the chain ends normally, only with frames
    /// missing in the middle, except for the jump from [`Start::Regs`] described above. The
    /// jump rule misfires when the interrupted function was called directly by the function
    /// that registered the thread and had not set up its frame pointer yet (or never does):
    /// one frame is really missing then, but the rest of the chain is whole.
    pub fn ending(&self, start: &Start, out: &[Frame], bounds: Option<&StackBounds>) -> Ending {
        if matches!(self.stop, Stop::MaxDepth | Stop::Error(_)) {
            return Ending::NotAtEnd;
        }
        let Some(bounds) = bounds else {
            return Ending::Unknown;
        };
        let (hi, entry) = (bounds.hi(), bounds.entry_sp());
        let on_stack = |a: usize| bounds.lo() <= a && a < hi;
        let frames = &out[..self.depth.min(out.len())];
        // The records read are at each frame's fp but the last one's, and at the last one's
        // too when the chain ended on a zero return address read there.
        let read = match frames {
            [.., last] if self.stop == Stop::EndOfChain && last.fp != 0 => frames,
            [head @ .., _] => head,
            [] => frames,
        };
        let sp = match start {
            Start::Regs(regs) if on_stack(regs.sp) => Some(regs.sp),
            _ => None,
        };
        // A chain from interrupted registers below the entry frames whose first record on the
        // stack lies in the entry frames skipped every frame in between.
        if let Some(sp) = sp
            && sp < entry
            && read
                .iter()
                .map(|f| f.fp)
                .find(|&fp| on_stack(fp) && fp >= sp)
                .is_some_and(|fp| fp >= entry)
        {
            return Ending::ProbablyTruncated { reached: sp, entry };
        }
        // The highest record read on the stack: records read after the chain left it (such as
        // a thread's outermost frame, whose frame-pointer register still held its creator's
        // because musl's aarch64 `clone` does not clear it) do not count.
        let highest_read = read.iter().map(|f| f.fp).filter(|&a| on_stack(a)).max();
        let Some(reached) = [highest_read, sp]
            .into_iter()
            .flatten()
            .filter(|&a| on_stack(a))
            .max()
        else {
            return Ending::Unknown;
        };
        if reached >= entry {
            Ending::Bottom
        } else {
            Ending::ProbablyTruncated { reached, entry }
        }
    }

    /// `matches!(self.ending(start, out, bounds), Ending::ProbablyTruncated { .. })`: see
    /// [`ending`](Self::ending) for exactly when, and why it is a heuristic.
    pub fn probably_truncated(
        &self,
        start: &Start,
        out: &[Frame],
        bounds: Option<&StackBounds>,
    ) -> bool {
        matches!(
            self.ending(start, out, bounds),
            Ending::ProbablyTruncated { .. }
        )
    }
}

/// How an [`Unwinder`] validates its reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// [`Prober::read`]: race-free, sound on any stack.
    Read,
    /// [`Prober::check`], then a plain load: only sound on stacks known to be valid.
    CheckThenLoad,
}

/// A frame-pointer unwinder validating every read through a [`Prober`]. Cheap to create and
/// `Copy`; holds only a reference to the prober.
#[derive(Clone, Copy, Debug)]
pub struct Unwinder<'p> {
    prober: &'p Prober,
    mode: ReadMode,
    max_depth: usize,
    /// Read frames inside the thread's [`StackBounds`](crate::stack_bounds::StackBounds)
    /// with plain loads (see [`Unwinder::with_fast_path`]).
    fast_path: bool,
    /// Batch window in bytes for probed frames, 0 for none (see
    /// [`Unwinder::with_batch_window`]).
    batch: usize,
}

/// The default [`Unwinder::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 1024;

impl<'p> Unwinder<'p> {
    /// An unwinder that copies every frame with [`Prober::read`]. Sound on any stack, corrupt
    /// or not. Returns [`Error::Unsupported`] unless the prober's guarantee is
    /// [`Guarantee::Readable`] (use [`check_then_load`](Self::check_then_load) for the others).
    /// Async-signal-safe (it only checks the prober and fills a small struct), so it may be
    /// built inside a handler for each sample.
    pub fn new(prober: &'p Prober) -> Result<Self, Error> {
        if prober.guarantee() != Guarantee::Readable {
            return Err(Error::Unsupported {
                backend: prober.backend(),
                operation: "Unwinder::new: only `readable` backends can copy frames race-free; \
                            see Unwinder::check_then_load",
            });
        }
        Ok(Unwinder {
            prober,
            mode: ReadMode::Read,
            max_depth: DEFAULT_MAX_DEPTH,
            fast_path: false,
            batch: 0,
        })
    }

    /// An unwinder that checks each frame with [`Prober::check`] and then loads it, for any
    /// backend (the `Readable` ones included, which then skip the copy).
    ///
    /// # Safety
    ///
    /// A "yes" from the check does not make the load safe unless the prober's guarantee is
    /// [`Guarantee::Readable`] *and* nothing unmaps the memory in between. The caller must
    /// guarantee that every frame pointer the walk can reach that passes the check points
    /// into memory that stays readable for the walk: in practice, that the stack being walked
    /// is a live stack whose frame chain is intact (every function on it was compiled with
    /// frame pointers). A `PROT_NONE` page, a page beyond the end of a file or an
    /// `MADV_GUARD_INSTALL` page reached through a corrupt chain crashes the process with a
    /// [`Mapped`](Guarantee::Mapped) or [`RegionReadable`](Guarantee::RegionReadable)
    /// backend, and a [`Unsound`](Guarantee::Unsound) backend validates nothing at all.
    pub unsafe fn check_then_load(prober: &'p Prober) -> Self {
        Unwinder {
            prober,
            mode: ReadMode::CheckThenLoad,
            max_depth: DEFAULT_MAX_DEPTH,
            fast_path: false,
            batch: 0,
        }
    }

    /// Stop after `max_depth` frames (default [`DEFAULT_MAX_DEPTH`]).
    pub fn with_max_depth(mut self, max_depth: usize) -> Self {
        self.max_depth = max_depth;
        self
    }

    /// The maximum number of frames a walk records.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// How this unwinder validates reads.
    pub fn mode(&self) -> ReadMode {
        self.mode
    }

    /// The prober behind it.
    pub fn prober(&self) -> &'p Prober {
        self.prober
    }

    /// Reads the `(saved fp, return address)` pair at `fp`: `Ok(None)` if unreadable.
    /// This is the unwinder's whole memory access; async-signal-safe. With
    /// [`with_fast_path`](Self::with_fast_path), a pair between the calling code's real stack
    /// pointer and the top of the thread's registered stack is loaded directly
    /// ([`StackBounds::load_pair`]), anything else goes through the prober.
    #[inline]
    pub fn read_frame(&self, fp: usize) -> Result<Option<[usize; 2]>, Error> {
        if self.fast_path
            && let Some(words) = StackBounds::current().and_then(|b| b.load_pair(current_sp(), fp))
        {
            return Ok(Some(words));
        }
        self.probe_frame(fp)
    }

    /// [`read_frame`](Self::read_frame) through the prober alone (the walk's slow path, after
    /// its own fast path said no).
    #[inline]
    fn probe_frame(&self, fp: usize) -> Result<Option<[usize; 2]>, Error> {
        let mut buf = [0u8; 2 * WORD];
        match self.mode {
            ReadMode::Read => {
                if !self.prober.read(fp, &mut buf)? {
                    return Ok(None);
                }
                let (a, b) = buf.split_at(WORD);
                Ok(Some([word(a), word(b)]))
            }
            ReadMode::CheckThenLoad => {
                if !self.prober.check(fp, 2 * WORD)? {
                    return Ok(None);
                }
                let p = fp as *const usize;
                // SAFETY: `fp` is word-aligned (checked by the walk, and by `read_word`'s
                // caller contract below) and the check said the 16 bytes are mapped / in a
                // readable region; the caller of `check_then_load` vouched that such memory
                // on this stack is readable.
                Ok(Some(unsafe {
                    [
                        core::ptr::read_volatile(p),
                        core::ptr::read_volatile(p.add(1)),
                    ]
                }))
            }
        }
    }

    /// Reads one word at `addr` (any alignment) through the same validation as the walk:
    /// `Ok(None)` if unreadable. This is the shape of an external unwinder's memory-read
    /// callback (framehop's `read_stack`, libunwind's `access_mem`); see
    /// `examples/unwind.rs`. Async-signal-safe.
    ///
    /// With [`with_fast_path`](Self::with_fast_path), a word between the calling code's real
    /// stack pointer and the top of the thread's registered stack is loaded directly, with no
    /// probe ([`StackBounds::load_word`], or [`StackBounds::read`] when unaligned; sound for
    /// every `addr`, see [`crate::stack_bounds`]): a handler on the thread's own stack reads
    /// the frames it interrupted for the cost of a thread-local load and a few compares.
    /// Anything else (a sigaltstack, a coroutine stack, below the real stack pointer, an
    /// unregistered thread) goes through the prober. [`StackReader`](crate::reader::StackReader)
    /// does the same for one sample, with a snapshot and error latching on top.
    #[inline]
    pub fn read_word(&self, addr: usize) -> Result<Option<usize>, Error> {
        if self.fast_path
            && let Some(w) = StackBounds::current().and_then(|b| own_stack_word(&b, addr))
        {
            return Ok(Some(w));
        }
        let mut buf = [0u8; WORD];
        match self.mode {
            ReadMode::Read => Ok(self.prober.read(addr, &mut buf)?.then(|| word(&buf))),
            ReadMode::CheckThenLoad => {
                if !self.prober.check(addr, WORD)? {
                    return Ok(None);
                }
                // SAFETY: as in `read_frame`: checked, and vouched for by the caller of
                // `check_then_load`; `read_unaligned` accepts any alignment.
                Ok(Some(unsafe {
                    core::ptr::read_unaligned(addr as *const usize)
                }))
            }
        }
    }

    /// Walks a stack from `start` into `out`, and, if `stats` is given, reports there how the
    /// frames were read. Async-signal-safe, no allocation. Sound for every argument: a made-up
    /// `pc`, `fp` or [`Regs`] can only end the walk early or make it probe more frames.
    ///
    /// - [`Start::Current`] walks the calling thread's stack, starting with the return
    ///   address into the caller of `walk` (so `out[0].pc` lies in the caller; this function is
    ///   never inlined). Needs the caller and this crate to be compiled with frame pointers.
    /// - [`Start::From`] starts from an explicit program counter and frame pointer: `out[0]` is
    ///   `Frame { pc, fp }`; each later frame is a return address and its function's frame
    ///   pointer.
    /// - [`Start::Regs`] starts from a signal's interrupted registers
    ///   ([`regs_from_ucontext`]) like `From`, but the fast path
    ///   ([`with_fast_path`](Self::with_fast_path)) starts at `regs.sp` instead of the walker's
    ///   own stack pointer, so the interrupted frames (a handler on the thread's own stack runs
    ///   below them) are read without probes. It is taken only when both `regs.sp` and the
    ///   walker's real stack pointer are on the registered stack, and never below the real one.
    ///   A handler on a sigaltstack gets it through [`walk_trusted`](Self::walk_trusted).
    ///
    /// ```
    /// use addrprobe::unwind::{Frame, ReadStats, Start, Unwinder};
    /// use addrprobe::{Backend, Prober};
    ///
    /// let prober = Prober::new(Backend::ProcessVmReadv).unwrap();
    /// let unwinder = Unwinder::new(&prober).unwrap();
    /// let mut out = [Frame::default(); 64];
    /// let walk = unwinder.walk(Start::Current, &mut out, None);
    /// let mut stats = ReadStats::default();
    /// let bogus = unwinder.walk(Start::From { pc: 1, fp: 0x10 }, &mut out, Some(&mut stats));
    /// assert_eq!(bogus.depth, 1);
    /// # let _ = walk;
    /// ```
    // Never inlined: `Start::Current` starts from this function's own frame, and the fast
    // path's window is made here, at or above this function's own stack pointer, and used only
    // while this function runs (`fast::FrameReader::read`).
    #[inline(never)]
    pub fn walk(&self, start: Start, out: &mut [Frame], stats: Option<&mut ReadStats>) -> Walk {
        let (own_fp, own_sp) = current_fp_sp();
        match start {
            Start::Current => {
                let window = fast::window(self, |b| b.frame_window(own_sp));
                fast::run(self, window, None, own_fp, own_sp, out, stats)
            }
            Start::From { pc, fp } => {
                let window = fast::window(self, |b| b.frame_window(own_sp));
                fast::run(self, window, Some(Frame { pc, fp }), fp, 0, out, stats)
            }
            Start::Regs(regs) => {
                let window = fast::window(self, |b| {
                    if b.contains_sp(regs.sp) {
                        b.frame_window(regs.sp.max(own_sp))
                    } else {
                        None
                    }
                });
                let first = Frame {
                    pc: regs.pc,
                    fp: regs.fp,
                };
                fast::run(self, window, Some(first), regs.fp, 0, out, stats)
            }
        }
    }

    /// [`walk`](Self::walk) from `Start::Regs(*regs)` for a handler running on a sigaltstack:
    /// the fast path trusts `regs.sp` instead of the walker's real stack pointer (which is off
    /// the thread's stack there), so the interrupted thread-stack frames are read without
    /// probes. Frames are still read with plain loads only inside `[regs.sp, hi)` of the
    /// registered stack, none if `regs.sp` is not on it. Async-signal-safe, no allocation.
    ///
    /// Stack use: the walk's own frame is about 1.3 KiB in an optimized aarch64 build but
    /// 31 KiB unoptimized (both read in the disassembly), so a debug build needs a sigaltstack
    /// well above `SIGSTKSZ`.
    ///
    /// # Safety
    ///
    /// `regs.sp` must be the stack pointer of a context of the calling thread that stays
    /// suspended for the whole walk, so that every byte between it and the top of the
    /// thread's registered stack is live stack: in practice, `regs` is what
    /// [`regs_from_ucontext`] read, unmodified, from the `ucontext` of the signal whose
    /// handler is running this walk on this thread. A made-up `regs.sp` can make the walk load
    /// dead stack below the live stack pointer, which a program may have made unreadable (a
    /// guard zone): undefined behaviour, a crash.
    /// [`StackBounds::frame_window_unchecked`](crate::stack_bounds::StackBounds::frame_window_unchecked)
    /// states the same contract.
    pub unsafe fn walk_trusted(
        &self,
        regs: &Regs,
        out: &mut [Frame],
        stats: Option<&mut ReadStats>,
    ) -> Walk {
        // SAFETY: the caller vouches that `regs.sp` is the stack pointer of a context of this
        // thread suspended for the whole walk, which is `frame_window_unchecked`'s contract;
        // the window lives only for this walk.
        let window = fast::window(self, |b| unsafe { b.frame_window_unchecked(regs.sp) });
        let first = Frame {
            pc: regs.pc,
            fp: regs.fp,
        };
        fast::run(self, window, Some(first), regs.fp, 0, out, stats)
    }
}

/// The entry points [`Unwinder::walk`] and [`Unwinder::walk_trusted`] replaced, kept so that
/// code written against them still builds (with a deprecation warning that names the
/// replacement). They will be removed in a later minor version; see `CHANGELOG.md`.
impl Unwinder<'_> {
    /// Walks from an explicit program counter and frame pointer.
    #[deprecated(
        since = "0.1.0",
        note = "use `walk(Start::From { pc, fp }, out, None)`"
    )]
    pub fn walk_from(&self, pc: usize, fp: usize, out: &mut [Frame]) -> Walk {
        self.walk(Start::From { pc, fp }, out, None)
    }

    /// Walks the calling thread's stack from the return address into the caller.
    #[deprecated(since = "0.1.0", note = "use `walk(Start::Current, out, None)`")]
    #[inline(always)]
    pub fn walk_current(&self, out: &mut [Frame]) -> Walk {
        self.walk(Start::Current, out, None)
    }

    /// [`walk_current`](Self::walk_current), counting the reads.
    #[deprecated(since = "0.1.0", note = "use `walk(Start::Current, out, Some(stats))`")]
    #[inline(always)]
    pub fn walk_current_counted(&self, out: &mut [Frame], stats: &mut ReadStats) -> Walk {
        self.walk(Start::Current, out, Some(stats))
    }

    /// Walks from a signal's interrupted registers.
    #[deprecated(since = "0.1.0", note = "use `walk(Start::Regs(*regs), out, None)`")]
    pub fn walk_from_regs(&self, regs: &Regs, out: &mut [Frame]) -> Walk {
        self.walk(Start::Regs(*regs), out, None)
    }

    /// [`walk_from_regs`](Self::walk_from_regs), counting the reads.
    #[deprecated(
        since = "0.1.0",
        note = "use `walk(Start::Regs(*regs), out, Some(stats))` (safe), or `walk_trusted` for \
                a stack pointer taken on trust"
    )]
    pub fn walk_from_regs_counted(
        &self,
        regs: &Regs,
        out: &mut [Frame],
        stats: &mut ReadStats,
    ) -> Walk {
        self.walk(Start::Regs(*regs), out, Some(stats))
    }

    /// Walks from a signal's interrupted registers, taking `regs.sp` on trust.
    ///
    /// # Safety
    /// As for [`walk_trusted`](Self::walk_trusted).
    #[deprecated(since = "0.1.0", note = "use `walk_trusted(regs, out, None)`")]
    pub unsafe fn walk_from_regs_unchecked(&self, regs: &Regs, out: &mut [Frame]) -> Walk {
        // SAFETY: the caller keeps `walk_trusted`'s contract.
        unsafe { self.walk_trusted(regs, out, None) }
    }

    /// [`walk_from_regs_unchecked`](Self::walk_from_regs_unchecked), counting the reads.
    ///
    /// # Safety
    /// As for [`walk_trusted`](Self::walk_trusted).
    #[deprecated(since = "0.1.0", note = "use `walk_trusted(regs, out, Some(stats))`")]
    pub unsafe fn walk_from_regs_counted_unchecked(
        &self,
        regs: &Regs,
        out: &mut [Frame],
        stats: &mut ReadStats,
    ) -> Walk {
        // SAFETY: the caller keeps `walk_trusted`'s contract.
        unsafe { self.walk_trusted(regs, out, Some(stats)) }
    }
}

/// Where [`Unwinder::walk`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The calling thread's stack, from the return address into the caller of
    /// [`Unwinder::walk`]. Every frame pointer must lie above the walker's stack pointer.
    Current,
    /// An explicit program counter and frame pointer, e.g. those of an interrupted thread.
    From {
        /// The first frame's program counter, recorded as `out[0].pc`.
        pc: usize,
        /// The frame pointer the chain starts at.
        fp: usize,
    },
    /// A signal's interrupted registers ([`regs_from_ucontext`]): `pc` and `fp` as for
    /// [`From`](Start::From), and `sp` as where the fast path may start.
    Regs(Regs),
}

/// The generic walk under [`Unwinder`]: starting at frame pointer `fp`, with `out[..start]`
/// already filled, reads each frame's `[saved fp, return address]` with `read_frame` and
/// applies the sanity checks described in the [module docs](self). `prev` is a lower bound
/// that `fp` must exceed (`0` for none; the current stack pointer for the calling thread).
///
/// `read_frame` returns `Ok(None)` for an unreadable frame. It must not crash on any
/// word-aligned, non-zero `fp`, or the walk is not safe. Use this to plug in a different
/// memory source (a copied stack, a bounds-checked fast path) or no validation at all (the
/// benchmarks' baseline).
#[inline]
pub fn walk_chain(
    mut fp: usize,
    mut prev: usize,
    out: &mut [Frame],
    start: usize,
    mut read_frame: impl FnMut(usize) -> Result<Option<[usize; 2]>, Error>,
) -> Walk {
    let mut depth = start.min(out.len());
    loop {
        if fp == 0 {
            return Walk {
                depth,
                stop: Stop::EndOfChain,
            };
        }
        if !fp.is_multiple_of(WORD) {
            return Walk {
                depth,
                stop: Stop::Misaligned { fp },
            };
        }
        if fp <= prev {
            return Walk {
                depth,
                stop: Stop::NotIncreasing { prev, fp },
            };
        }
        if depth >= out.len() {
            return Walk {
                depth,
                stop: Stop::MaxDepth,
            };
        }
        let [next, ra] = match read_frame(fp) {
            Ok(Some(words)) => words,
            Ok(None) => {
                return Walk {
                    depth,
                    stop: Stop::Unreadable { fp },
                };
            }
            Err(e) => {
                return Walk {
                    depth,
                    stop: Stop::Error(e),
                };
            }
        };
        // The stored word ends the chain when it is zero; a non-zero one is a frame, even if
        // stripping a made-up code leaves nothing of it.
        if ra == 0 {
            return Walk {
                depth,
                stop: Stop::EndOfChain,
            };
        }
        out[depth] = Frame {
            pc: strip_return_address(ra),
            fp: next,
        };
        depth += 1;
        prev = fp;
        fp = next;
    }
}

/// The word at `addr` if the safe own-stack loaders of `bounds` accept it (at or above the real
/// stack pointer of the code this is inlined into): `None` means "probe it".
#[inline(always)]
fn own_stack_word(bounds: &StackBounds, addr: usize) -> Option<usize> {
    let sp = current_sp();
    if addr.is_multiple_of(WORD) {
        return bounds.load_word(sp, addr);
    }
    let mut buf = [0u8; WORD];
    bounds.read(sp, addr, &mut buf).then(|| word(&buf))
}

#[inline]
fn word(bytes: &[u8]) -> usize {
    let mut w = [0u8; WORD];
    w.copy_from_slice(&bytes[..WORD]);
    usize::from_ne_bytes(w)
}

/// `ra` without a pointer-authentication code: the address a signed return address stands
/// for. Always inlined, async-signal-safe, sound for every value.
///
/// On aarch64, code built with return-address signing (`-mbranch-protection=pac-ret` or
/// `standard`, the default of several distributions; Rust's `-Z branch-protection=pac-ret`)
/// signs the link register before it saves it in the frame record, so the word at `fp + 8`
/// carries a pointer-authentication code in the bits above the virtual-address size. This
/// removes it with `XPACLRI`, which uses the running kernel's own layout (the address size,
/// whether the top byte is ignored) and is a no-op on a CPU without pointer authentication,
/// where no address is signed. A word that was never signed comes back unchanged when it is
/// a user-space address; a made-up word may change, which only makes a bogus frame another
/// bogus frame. Elsewhere it returns `ra` unchanged.
///
/// [`walk_chain`] (so every [`Unwinder`] walk) applies it to each return address it reads.
/// It strips with the running CPU's and kernel's layout, so it is right for stacks of this
/// process, not for an aarch64 stack copied from another machine with another layout.
/// A DWARF unwinder that reads saved return addresses through [`crate::reader::StackReader`]
/// strips them itself: framehop does it with the `PtrAuthMask` it is given
/// (`UnwindRegsAarch64::new_with_ptr_auth_mask`).
#[inline(always)]
pub fn strip_return_address(ra: usize) -> usize {
    cfg_if::cfg_if! {
        if #[cfg(target_arch = "aarch64")] {
            let mut lr = ra;
            // SAFETY: XPACLRI (`hint #7`, a hint-space instruction that CPUs without pointer
            // authentication execute as a no-op) only rewrites x30, declared here as an
            // in-out operand; no memory access, no flags, no stack.
            unsafe {
                core::arch::asm!("hint #7", inout("x30") lr,
                    options(nomem, nostack, preserves_flags));
            }
            lr
        } else {
            ra
        }
    }
}

/// The frame pointer and stack pointer of the calling function (always inlined into it);
/// `(0, 0)` on architectures without a known frame-pointer register.
#[inline(always)]
pub fn current_fp_sp() -> (usize, usize) {
    cfg_if::cfg_if! {
        if #[cfg(target_arch = "x86_64")] {
            let (fp, sp): (usize, usize);
            // SAFETY: reads two registers; no memory access, no side effects.
            unsafe {
                core::arch::asm!("mov {}, rbp", "mov {}, rsp", out(reg) fp, out(reg) sp,
                    options(nomem, nostack, preserves_flags));
            }
            (fp, sp)
        } else if #[cfg(target_arch = "aarch64")] {
            let (fp, sp): (usize, usize);
            // SAFETY: reads two registers; no memory access, no side effects.
            unsafe {
                core::arch::asm!("mov {}, x29", "mov {}, sp", out(reg) fp, out(reg) sp,
                    options(nomem, nostack, preserves_flags));
            }
            (fp, sp)
        } else {
            // No frame-pointer convention known here: the walk ends at once.
            (0, 0)
        }
    }
}

/// Registers an unwinder starts from, taken from a signal's `ucontext`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    /// Program counter of the interrupted instruction.
    pub pc: usize,
    /// Frame pointer (`rbp` / `x29`).
    pub fp: usize,
    /// Stack pointer.
    pub sp: usize,
}

/// Reads the interrupted thread's `pc`, `fp` and `sp` from the `ucontext` an `SA_SIGINFO`
/// handler receives as its third argument. Returns `None` for a null pointer or on an
/// architecture this module does not know. Async-signal-safe.
///
/// # Safety
///
/// `uc` must be null or the `ucontext_t` pointer the kernel passed to a signal handler that
/// is still running.
pub unsafe fn regs_from_ucontext(uc: *const libc::c_void) -> Option<Regs> {
    if uc.is_null() {
        return None;
    }
    cfg_if::cfg_if! {
        if #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
            // SAFETY: the caller passes the kernel's ucontext_t for a running handler.
            let gregs = unsafe { &(*(uc as *const libc::ucontext_t)).uc_mcontext.gregs };
            Some(Regs {
                pc: gregs[libc::REG_RIP as usize] as usize,
                fp: gregs[libc::REG_RBP as usize] as usize,
                sp: gregs[libc::REG_RSP as usize] as usize,
            })
        } else if #[cfg(all(target_os = "linux", target_arch = "aarch64"))] {
            // SAFETY: the caller passes the kernel's ucontext_t for a running handler.
            let mc = unsafe { &(*(uc as *const libc::ucontext_t)).uc_mcontext };
            Some(Regs { pc: mc.pc as usize, fp: mc.regs[29] as usize, sp: mc.sp as usize })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend_kind::Backend;

    fn readable_probers() -> Vec<Prober> {
        [Backend::Pipe, Backend::SigprocMask, Backend::ProcessVmReadv]
            .into_iter()
            .filter_map(|b| Prober::new(b).ok())
            .collect()
    }

    /// Maps `pages` pages read-write, the last `guard` of them made `PROT_NONE`.
    struct Region {
        base: usize,
        len: usize,
    }

    impl Region {
        fn new(pages: usize, guard_from: usize) -> Region {
            let ps = crate::range::page_size();
            let len = pages * ps;
            let base = crate::testing::map_anonymous(len).expect("mmap");
            if guard_from < pages {
                // SAFETY: the range lies inside the mapping made above.
                let r = unsafe {
                    libc::mprotect(
                        (base + guard_from * ps) as *mut libc::c_void,
                        (pages - guard_from) * ps,
                        libc::PROT_NONE,
                    )
                };
                assert_eq!(r, 0);
            }
            Region { base, len }
        }

        fn put(&self, addr: usize, next: usize, ra: usize) {
            assert!(addr >= self.base && addr + 2 * WORD <= self.base + self.len);
            // SAFETY: inside the read-write part of the mapping (asserted by the callers'
            // layout) and aligned.
            unsafe {
                *(addr as *mut usize) = next;
                *((addr + WORD) as *mut usize) = ra;
            }
        }
    }

    impl Drop for Region {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping this Region made.
            unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
        }
    }

    #[test]
    fn hand_made_chain_ends_at_prot_none_frame() {
        let ps = crate::range::page_size();
        // Pages 0..2 read-write, page 2 PROT_NONE.
        let region = Region::new(3, 2);
        let f1 = region.base + 64;
        let f2 = region.base + 512;
        let f3 = region.base + ps + 128;
        let guard = region.base + 2 * ps + 16;
        region.put(f1, f2, 0x1111);
        region.put(f2, f3, 0x2222);
        region.put(f3, guard, 0x3333);
        for prober in readable_probers() {
            let unwinder = Unwinder::new(&prober).unwrap();
            let mut out = [Frame::default(); 16];
            let walk = unwinder.walk(Start::From { pc: 0xaaaa, fp: f1 }, &mut out, None);
            assert_eq!(
                walk.stop,
                Stop::Unreadable { fp: guard },
                "{}",
                prober.backend()
            );
            assert_eq!(walk.depth, 4);
            assert_eq!(
                &out[..4],
                &[
                    Frame { pc: 0xaaaa, fp: f1 },
                    Frame { pc: 0x1111, fp: f2 },
                    Frame { pc: 0x2222, fp: f3 },
                    Frame {
                        pc: 0x3333,
                        fp: guard
                    },
                ]
            );
        }
    }

    #[test]
    fn hand_made_chain_into_unmapped_memory_with_check_then_load() {
        // An unmapped page is refused by every guarantee, Mapped included, so even the
        // check-then-load mode ends the walk there without loading.
        let ps = crate::range::page_size();
        // Three pages in the crate's quiet window, where the kernel's own placements do not
        // reach, so that no other test's mmap can take the hole made in them while the walks
        // run (one did, in an arm64 guest, when the region came from plain mmap).
        let base = crate::selftest::mmap_quiet(
            3 * ps,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        )
        .expect("mmap");
        let mut region = Region { base, len: 3 * ps };
        let hole_addr = region.base + 2 * ps + 32;
        assert_eq!(
            // SAFETY: unmaps the last page of `region`'s own mapping; the region shrinks so that
            // Drop never unmaps the hole.
            unsafe { libc::munmap((region.base + 2 * ps) as *mut libc::c_void, ps) },
            0
        );
        region.len = 2 * ps;
        let f1 = region.base + 8;
        let f2 = region.base + ps + 8;
        region.put(f1, f2, 0x10);
        region.put(f2, hole_addr, 0x20);
        for backend in [Backend::Msync, Backend::Mincore, Backend::ProcmapQuery] {
            let Ok(prober) = Prober::new(backend) else {
                continue;
            };
            // SAFETY: every frame the walk can reach is in `region` (read-write) or in the
            // unmapped hole, which every backend refuses.
            let unwinder = unsafe { Unwinder::check_then_load(&prober) };
            let mut out = [Frame::default(); 40];
            let walk = unwinder.walk(Start::From { pc: 1, fp: f1 }, &mut out, None);
            assert_eq!(walk.stop, Stop::Unreadable { fp: hole_addr }, "{backend}");
            assert_eq!(walk.depth, 3);
            assert_eq!(
                out[2],
                Frame {
                    pc: 0x20,
                    fp: hole_addr
                }
            );
        }
    }

    #[test]
    fn sanity_checks_stop_the_walk() {
        let region = Region::new(1, 1);
        let (a, b) = (region.base + 256, region.base + 128);
        let prober = Prober::new(Backend::SigprocMask).unwrap();
        let unwinder = Unwinder::new(&prober).unwrap();
        let mut out = [Frame::default(); 8];

        // Backwards pointer (a loop a -> b -> a would be caught the same way).
        region.put(a, b, 7);
        let w = unwinder.walk(Start::From { pc: 1, fp: a }, &mut out, None);
        assert_eq!(w.stop, Stop::NotIncreasing { prev: a, fp: b });
        assert_eq!(w.depth, 2);

        // Self loop.
        region.put(a, a, 7);
        assert_eq!(
            unwinder
                .walk(Start::From { pc: 1, fp: a }, &mut out, None)
                .stop,
            Stop::NotIncreasing { prev: a, fp: a }
        );

        // Misaligned.
        region.put(a, a + 3 + 64, 7);
        assert_eq!(
            unwinder
                .walk(Start::From { pc: 1, fp: a }, &mut out, None)
                .stop,
            Stop::Misaligned { fp: a + 67 }
        );

        // Zero return address ends the chain without a frame; zero fp after a frame too.
        region.put(a, a + 64, 0);
        assert_eq!(
            unwinder.walk(Start::From { pc: 1, fp: a }, &mut out, None),
            Walk {
                depth: 1,
                stop: Stop::EndOfChain
            }
        );
        region.put(a, 0, 9);
        assert_eq!(
            unwinder.walk(Start::From { pc: 1, fp: a }, &mut out, None),
            Walk {
                depth: 2,
                stop: Stop::EndOfChain
            }
        );

        // Kernel address and NULL-page frame pointers.
        region.put(a, 0xffff_ffff_8000_0000, 9);
        assert_eq!(
            unwinder
                .walk(Start::From { pc: 1, fp: a }, &mut out, None)
                .stop,
            Stop::Unreadable {
                fp: 0xffff_ffff_8000_0000
            }
        );

        // Max depth, and a too-short output slice.
        region.put(a, a + 64, 9);
        region.put(a + 64, a + 128, 9);
        region.put(a + 128, a + 192, 9);
        let w = unwinder
            .with_max_depth(2)
            .walk(Start::From { pc: 1, fp: a }, &mut out, None);
        assert_eq!(
            w,
            Walk {
                depth: 2,
                stop: Stop::MaxDepth
            }
        );
        assert_eq!(
            unwinder.walk(Start::From { pc: 1, fp: a }, &mut [], None),
            Walk {
                depth: 0,
                stop: Stop::MaxDepth
            }
        );
        // Mapped backends are refused by the safe constructor.
        let msync = Prober::new(Backend::Msync).unwrap();
        assert!(matches!(
            Unwinder::new(&msync),
            Err(Error::Unsupported { .. })
        ));
    }

    /// A fake stack of two pages (then a `PROT_NONE` page) with fake bounds
    /// `[base, base + 2 pages)` whose entry region starts at `base + 2 pages - 256`: a chain
    /// that ends below it is reported as probably truncated, one that reaches it as a clean
    /// end.
    #[test]
    fn ending_tells_a_broken_chain_from_one_that_reached_the_entry_frames() {
        let ps = crate::range::page_size();
        let region = Region::new(3, 2);
        let (lo, hi) = (region.base, region.base + 2 * ps);
        let entry = hi - 256;
        let bounds = StackBounds::for_test(lo, hi, entry);
        let prober = Prober::new(Backend::SigprocMask).unwrap();
        let unwinder = Unwinder::new(&prober).unwrap();
        let mut out = [Frame::default(); 16];
        let (f1, f2, f3, top) = (lo + 64, lo + 512, lo + ps + 64, hi - 128);
        let from = Start::From { pc: 1, fp: f1 };

        // fp = 0 in the middle of the stack: truncated, reached = the last record read.
        region.put(f1, f2, 0x11);
        region.put(f2, 0, 0x22);
        let w = unwinder.walk(from, &mut out, None);
        assert_eq!(
            w,
            Walk {
                depth: 3,
                stop: Stop::EndOfChain
            }
        );
        assert_eq!(
            w.ending(&from, &out, Some(&bounds)),
            Ending::ProbablyTruncated { reached: f2, entry }
        );
        assert!(w.probably_truncated(&from, &out, Some(&bounds)));
        // Without bounds nobody can tell.
        assert_eq!(w.ending(&from, &out, None), Ending::Unknown);

        // The same chain continued into the entry region, ending at fp = 0 there: clean.
        region.put(f2, f3, 0x22);
        region.put(f3, top, 0x33);
        region.put(top, 0, 0x44);
        let w = unwinder.walk(from, &mut out, None);
        assert_eq!(
            w,
            Walk {
                depth: 5,
                stop: Stop::EndOfChain
            }
        );
        assert_eq!(w.ending(&from, &out, Some(&bounds)), Ending::Bottom);
        assert!(!w.probably_truncated(&from, &out, Some(&bounds)));

        // Ending on a zero return address read in the entry region: clean; mid-stack: not.
        region.put(top, top + 64, 0);
        let w = unwinder.walk(from, &mut out, None);
        assert_eq!(
            w,
            Walk {
                depth: 4,
                stop: Stop::EndOfChain
            }
        );
        assert_eq!(w.ending(&from, &out, Some(&bounds)), Ending::Bottom);
        region.put(f3, top, 0);
        let w = unwinder.walk(from, &mut out, None);
        assert_eq!(
            w,
            Walk {
                depth: 3,
                stop: Stop::EndOfChain
            }
        );
        assert_eq!(
            w.ending(&from, &out, Some(&bounds)),
            Ending::ProbablyTruncated { reached: f3, entry }
        );

        // A chain that goes backwards mid-stack, or into unreadable memory: truncated.
        region.put(f3, f2, 0x33);
        let w = unwinder.walk(from, &mut out, None);
        assert_eq!(w.stop, Stop::NotIncreasing { prev: f3, fp: f2 });
        assert_eq!(
            w.ending(&from, &out, Some(&bounds)),
            Ending::ProbablyTruncated { reached: f3, entry }
        );
        region.put(f3, hi + 16, 0x33);
        let w = unwinder.walk(from, &mut out, None);
        assert_eq!(w.stop, Stop::Unreadable { fp: hi + 16 });
        assert!(w.probably_truncated(&from, &out, Some(&bounds)));

        // Max depth is not the end of the chain.
        let w = unwinder.with_max_depth(2).walk(from, &mut out, None);
        assert_eq!(w.stop, Stop::MaxDepth);
        assert_eq!(w.ending(&from, &out, Some(&bounds)), Ending::NotAtEnd);

        // From interrupted registers whose fp is garbage (a build without frame pointers):
        // no record is read, and the interrupted sp decides.
        let regs = |sp| {
            Start::Regs(Regs {
                pc: 1,
                fp: 0x13,
                sp,
            })
        };
        for (sp, want) in [
            (
                f1 - 32,
                Ending::ProbablyTruncated {
                    reached: f1 - 32,
                    entry,
                },
            ),
            (entry + 8, Ending::Bottom),
            (hi + 64, Ending::Unknown),
        ] {
            let start = regs(sp);
            let w = unwinder.walk(start, &mut out, None);
            assert_eq!(
                w,
                Walk {
                    depth: 1,
                    stop: Stop::Misaligned { fp: 0x13 }
                }
            );
            assert_eq!(w.ending(&start, &out, Some(&bounds)), want, "sp {sp:#x}");
        }
        // From interrupted registers below the entry frames: a chain that climbs through
        // records below them to the entry frames is whole; one whose first record is in the
        // entry frames skipped everything in between (a build without frame pointers).
        region.put(f1, f2, 0x11);
        region.put(f2, f3, 0x22);
        region.put(f3, top, 0x33);
        region.put(top, 0, 0x44);
        let whole = Start::Regs(Regs {
            pc: 1,
            fp: f1,
            sp: f1 - 32,
        });
        let w = unwinder.walk(whole, &mut out, None);
        assert_eq!(
            w,
            Walk {
                depth: 5,
                stop: Stop::EndOfChain
            }
        );
        assert_eq!(w.ending(&whole, &out, Some(&bounds)), Ending::Bottom);
        let jump = Start::Regs(Regs {
            pc: 1,
            fp: top,
            sp: f1 - 32,
        });
        let w = unwinder.walk(jump, &mut out, None);
        assert_eq!(
            w,
            Walk {
                depth: 2,
                stop: Stop::EndOfChain
            }
        );
        assert_eq!(
            w.ending(&jump, &out, Some(&bounds)),
            Ending::ProbablyTruncated {
                reached: f1 - 32,
                entry
            }
        );
        // The same jump from an explicit (pc, fp) has no stack pointer to tell.
        let from_top = Start::From { pc: 1, fp: top };
        let w = unwinder.walk(from_top, &mut out, None);
        assert_eq!(w.ending(&from_top, &out, Some(&bounds)), Ending::Bottom);

        // A chain that leaves the stack at once from a start on it counts only its start.
        let off = Region::new(1, 1);
        off.put(off.base + 64, 0, 0x55);
        let start = Start::Regs(Regs {
            pc: 1,
            fp: off.base + 64,
            sp: f1,
        });
        let w = unwinder.walk(start, &mut out, None);
        assert_eq!(
            w,
            Walk {
                depth: 2,
                stop: Stop::EndOfChain
            }
        );
        assert_eq!(
            w.ending(&start, &out, Some(&bounds)),
            Ending::ProbablyTruncated { reached: f1, entry }
        );
        // A chain that reads records off the stack after the entry frames (a thread whose
        // outermost frame pointer was its creator's: musl's aarch64 clone) reached the
        // bottom; one that leaves the stack below them is truncated where it left.
        let frame = |fp| Frame { pc: 0x1000, fp };
        let stale = [
            frame(f1),
            frame(f2),
            frame(top),
            frame(hi + 0x1000),
            frame(1),
        ];
        let left = Walk {
            depth: stale.len(),
            stop: Stop::Misaligned { fp: 1 },
        };
        let current = Start::From { pc: 1, fp: f1 };
        assert_eq!(left.ending(&current, &stale, Some(&bounds)), Ending::Bottom);
        let early = [frame(f1), frame(f2), frame(hi + 0x1000), frame(1)];
        let left = Walk {
            depth: early.len(),
            stop: Stop::Misaligned { fp: 1 },
        };
        assert_eq!(
            left.ending(&current, &early, Some(&bounds)),
            Ending::ProbablyTruncated { reached: f2, entry }
        );
        // ... and a walk entirely off the stack is unknown.
        let from_off = Start::From {
            pc: 1,
            fp: off.base + 64,
        };
        let w = unwinder.walk(from_off, &mut out, None);
        assert_eq!(w.ending(&from_off, &out, Some(&bounds)), Ending::Unknown);
    }

    /// A registered thread's own walk from deep in a recursion ends in its entry frames.
    #[test]
    fn own_walk_of_a_registered_thread_reaches_its_entry_frames() {
        std::thread::spawn(|| {
            let bounds = StackBounds::register_current_thread().unwrap();
            assert!(bounds.lo() < bounds.entry_sp() && bounds.entry_sp() < bounds.hi());
            let prober = Prober::new(Backend::SigprocMask).unwrap();
            let unwinder = Unwinder::new(&prober).unwrap();
            let mut fps = Vec::new();
            let (walk, frames) = recurse(20, &mut fps, &mut || {
                let mut out = vec![Frame::default(); 256];
                let w = unwinder.walk(Start::Current, &mut out, None);
                (w, out)
            });
            assert!(walk.depth > 20, "{walk:?}");
            let current = StackBounds::current();
            assert_eq!(
                walk.ending(&Start::Current, &frames, current.as_ref()),
                Ending::Bottom,
                "{walk:?} {current:?} {:x?}",
                &frames[..walk.depth]
            );
            // Registering again deeper keeps the shallowest entry.
            let again = recurse(4, &mut Vec::new(), &mut || {
                let b = StackBounds::register_current_thread().unwrap();
                (
                    Walk {
                        depth: b.entry_sp(),
                        stop: Stop::MaxDepth,
                    },
                    Vec::new(),
                )
            });
            assert_eq!(again.0.depth, bounds.entry_sp());
        })
        .join()
        .unwrap();
    }

    /// With the fast path, `read_word` and `read_frame` load the thread's own live stack
    /// directly: a prober that cannot read at all is never asked.
    #[test]
    fn read_word_and_read_frame_use_the_own_stack_fast_path() {
        std::thread::spawn(|| {
            let msync = Prober::new(Backend::Msync).unwrap();
            // A Read-mode unwinder over a prober whose `read` always fails (only possible
            // inside the crate): any read that reaches the prober is an error.
            let u = Unwinder {
                prober: &msync,
                mode: ReadMode::Read,
                max_depth: DEFAULT_MAX_DEPTH,
                fast_path: false,
                batch: 0,
            };
            let x = core::hint::black_box([0x1111_2222_3333_4444usize, 0x5555]);
            let a = &x as *const [usize; 2] as usize;
            assert!(u.read_word(a).is_err(), "no fast path: the prober");
            let fast = u.with_fast_path(true);
            assert!(
                fast.read_word(a).is_err(),
                "unregistered thread: the prober"
            );
            let b = StackBounds::register_current_thread().unwrap();
            assert_eq!(fast.read_word(a), Ok(Some(0x1111_2222_3333_4444)));
            assert_eq!(fast.read_word(a + 4), Ok(Some(0x5555_1111_2222)));
            assert_eq!(
                fast.read_frame(a),
                Ok(Some([0x1111_2222_3333_4444, 0x5555]))
            );
            // Below the real stack pointer: never loaded directly.
            assert!(fast.read_word(b.lo()).is_err());
            assert!(fast.read_frame(b.lo()).is_err());
            core::hint::black_box(&x);
        })
        .join()
        .unwrap();
    }

    type WalkResult = (Walk, Vec<Frame>);

    /// Recurses `depth` times, recording each level's own frame pointer, then walks.
    #[inline(never)]
    fn recurse(
        depth: usize,
        fps: &mut Vec<usize>,
        f: &mut dyn FnMut() -> WalkResult,
    ) -> WalkResult {
        let (fp, _) = current_fp_sp();
        fps.push(fp);
        let r = if depth == 0 {
            f()
        } else {
            recurse(depth - 1, fps, f)
        };
        core::hint::black_box(&r);
        r
    }

    #[test]
    fn real_recursion_is_walked_frame_by_frame() {
        const DEPTH: usize = 40;
        for prober in readable_probers() {
            let unwinder = Unwinder::new(&prober).unwrap();
            let mut fps = Vec::new();
            let (walk, frames) = recurse(DEPTH, &mut fps, &mut || {
                let mut out = vec![Frame::default(); 256];
                let w = unwinder.walk(Start::Current, &mut out, None);
                out.truncate(w.depth);
                (w, out)
            });
            // fps[i] is the frame pointer of recursion level i (outermost first). The walk
            // starts in the closure called by the innermost level, so somewhere in the walk
            // the recorded frame pointers appear innermost first, consecutively.
            let want: Vec<usize> = fps.iter().rev().copied().collect();
            let start = frames
                .iter()
                .position(|f| f.fp == want[0])
                .unwrap_or_else(|| {
                    panic!("{}: innermost fp not found: {walk:?}", prober.backend())
                });
            let got: Vec<usize> = frames[start..]
                .iter()
                .map(|f| f.fp)
                .take(want.len())
                .collect();
            assert_eq!(got, want, "{}", prober.backend());
            // Every recursive call returns to the same call site.
            let ras: Vec<usize> = frames[start + 1..start + DEPTH]
                .iter()
                .map(|f| f.pc)
                .collect();
            assert!(ras.iter().all(|&r| r == ras[0] && r != 0), "{ras:x?}");
            // ... which lies inside `recurse` itself (a signed return address, on aarch64
            // code built with pac-ret, would lie far above it if it were not stripped).
            let entry = recurse
                as fn(usize, &mut Vec<usize>, &mut dyn FnMut() -> WalkResult) -> WalkResult
                as usize;
            assert!(
                (entry..entry + 4096).contains(&ras[0]),
                "return address {:#x} not in recurse ({entry:#x})",
                ras[0]
            );
            assert!(walk.depth > DEPTH, "{walk:?}");
        }
    }

    /// Signs `addr` the way pac-ret code signs its link register (key IA, a modifier), with
    /// `PACIA1716`: a no-op where the CPU or the kernel gives no pointer authentication.
    #[cfg(target_arch = "aarch64")]
    fn sign_ia(addr: usize, modifier: usize) -> usize {
        let mut x17 = addr;
        // SAFETY: PACIA1716 (`hint #8`) only rewrites x17 from x17 and x16; no memory access.
        unsafe {
            core::arch::asm!("hint #8", inout("x17") x17, in("x16") modifier,
                options(nomem, nostack, preserves_flags));
        }
        x17
    }

    #[test]
    fn signed_return_addresses_are_stripped() {
        // A user-space address that was never signed comes back unchanged.
        let code = signed_return_addresses_are_stripped as fn() as usize;
        for ra in [code, code + 4, 0x40_0000, 1] {
            assert_eq!(strip_return_address(ra), ra);
        }
        // A chain of 32 frame records whose return addresses are signed as pac-ret code signs
        // them (the frame's stack pointer as the modifier).
        let region = Region::new(1, 1);
        let fps: Vec<usize> = (0..32).map(|i| region.base + 64 + 96 * i).collect();
        let want: Vec<usize> = (0..32).map(|i| code + 16 * (i + 1)).collect();
        #[cfg(target_arch = "aarch64")]
        let stored: Vec<usize> = want
            .iter()
            .zip(&fps)
            .map(|(&ra, &fp)| sign_ia(ra, fp + 16))
            .collect();
        #[cfg(not(target_arch = "aarch64"))]
        let stored = want.to_vec();
        #[cfg(target_arch = "aarch64")]
        {
            // SAFETY: getauxval has no preconditions.
            let hwcap = unsafe { libc::getauxval(libc::AT_HWCAP) };
            if hwcap & libc::HWCAP_PACA != 0 {
                // A code can be all zeros (with 48-bit addresses QEMU's codes often are), but
                // not for 32 different modifiers.
                let signed = stored.iter().zip(&want).filter(|(s, w)| s != w).count();
                assert!(
                    signed > 0,
                    "the kernel offers PACA but PACIA1716 signed nothing: {stored:x?}"
                );
                eprintln!("{signed} of {} return addresses carry a code", want.len());
            } else {
                eprintln!("no pointer authentication here (HWCAP_PACA): stripping is a no-op");
            }
        }
        for (i, &fp) in fps.iter().enumerate() {
            region.put(fp, fps.get(i + 1).copied().unwrap_or(0), stored[i]);
        }
        for prober in readable_probers() {
            let unwinder = Unwinder::new(&prober).unwrap();
            let mut out = [Frame::default(); 40];
            let walk = unwinder.walk(Start::From { pc: 1, fp: fps[0] }, &mut out, None);
            assert_eq!(walk.stop, Stop::EndOfChain, "{}", prober.backend());
            let pcs: Vec<usize> = out[1..walk.depth].iter().map(|f| f.pc).collect();
            assert_eq!(pcs, want, "{}", prober.backend());
        }
    }

    #[test]
    fn read_word_matches_memory_and_refuses_bad_addresses() {
        let region = Region::new(2, 1);
        region.put(region.base + 40, 0x0123_4567_89ab_cdef, 5);
        // any backend that reads (process_vm_readv may be missing: seccomp, qemu-user)
        let prober = Prober::auto().unwrap();
        let u = Unwinder::new(&prober).unwrap();
        assert_eq!(
            u.read_word(region.base + 40),
            Ok(Some(0x0123_4567_89ab_cdef))
        );
        // Unaligned read across two words.
        assert_eq!(
            u.read_word(region.base + 44),
            Ok(Some((0x0123_4567usize) | (5usize << 32)))
        );
        let ps = crate::range::page_size();
        assert_eq!(u.read_word(region.base + ps), Ok(None)); // PROT_NONE page
        assert_eq!(u.read_word(region.base + ps - 4), Ok(None)); // straddles into it
        assert_eq!(u.read_word(0), Ok(None));
    }

    mod in_signal {
        use super::*;
        use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

        pub static PROBER: AtomicPtr<Prober> = AtomicPtr::new(core::ptr::null_mut());
        pub static mut FRAMES: [Frame; 64] = [Frame { pc: 0, fp: 0 }; 64];
        pub static DEPTH: AtomicUsize = AtomicUsize::new(0);
        pub static mut FPS: [usize; 16] = [0; 16];

        pub extern "C" fn handler(
            _sig: libc::c_int,
            _info: *mut libc::siginfo_t,
            uc: *mut libc::c_void,
        ) {
            // SAFETY: set before the signal is raised; the Prober outlives the child.
            let prober = unsafe { &*PROBER.load(Ordering::Acquire) };
            let Ok(unwinder) = Unwinder::new(prober) else {
                return;
            };
            // SAFETY: the kernel's ucontext for this running handler.
            let Some(regs) = (unsafe { regs_from_ucontext(uc) }) else {
                return;
            };
            // SAFETY: only this handler touches FRAMES, and the child is single-threaded.
            let out = unsafe { &mut *core::ptr::addr_of_mut!(FRAMES) };
            let walk = unwinder.walk(
                Start::From {
                    pc: regs.pc,
                    fp: regs.fp,
                },
                out,
                None,
            );
            DEPTH.store(walk.depth, Ordering::Release);
        }

        /// Recurses, recording each level's fp, and raises SIGUSR1 at the bottom.
        #[inline(never)]
        pub fn recurse(level: usize) {
            let (fp, _) = current_fp_sp();
            // SAFETY: single-threaded child; FPS has 16 slots and level < 16.
            unsafe { (*core::ptr::addr_of_mut!(FPS))[level] = fp };
            if level + 1 < 16 {
                recurse(level + 1);
            } else {
                // A tgkill made here: the interrupted frame pointer is this level's.
                crate::testing::raise_here(libc::SIGUSR1);
            }
            core::hint::black_box(level);
        }
    }

    /// In a forked child (the test installs a signal handler): a SIGUSR1 handler walks the
    /// interrupted stack from its ucontext and finds every recursion level's frame pointer.
    #[test]
    fn walk_from_ucontext_in_a_signal_handler() {
        use core::sync::atomic::Ordering;
        // any backend that reads (process_vm_readv may be missing: seccomp, qemu-user)
        let prober = Box::new(Prober::auto().unwrap());
        in_signal::PROBER.store(&*prober as *const Prober as *mut Prober, Ordering::Release);
        // SAFETY: fork; the child only makes async-signal-safe calls and then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: a zeroed sigaction with an SA_SIGINFO handler is valid.
            let code = unsafe {
                let mut sa: libc::sigaction = core::mem::zeroed();
                sa.sa_sigaction = in_signal::handler
                    as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                    as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(libc::SIGUSR1, &sa, core::ptr::null_mut());
                in_signal::recurse(0);
                let depth = in_signal::DEPTH.load(Ordering::Acquire);
                let frames = &*core::ptr::addr_of!(in_signal::FRAMES);
                let fps = &*core::ptr::addr_of!(in_signal::FPS);
                // The innermost recursion level's fp must appear, followed by the other 15
                // levels in order.
                match frames[..depth].iter().position(|f| f.fp == fps[15]) {
                    Some(i) if depth >= i + 16 => {
                        if (0..16).all(|k| frames[i + k].fp == fps[15 - k]) {
                            0
                        } else {
                            3
                        }
                    }
                    Some(_) => 4,
                    None => 5,
                }
            };
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "3: wrong order, 4: too short, 5: not found"
        );
        drop(prober);
    }

    #[test]
    fn regs_from_null_ucontext_is_none() {
        // SAFETY: null is explicitly allowed.
        assert_eq!(unsafe { regs_from_ucontext(core::ptr::null()) }, None);
    }
}
