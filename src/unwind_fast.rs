//! The [`Unwinder`]'s stack-bounds fast path and batched reads.
//!
//! With [`Unwinder::with_fast_path`], a frame whose 16 bytes lie between a stack pointer of the
//! calling thread and the top of its registered stack
//! ([`StackBounds::covers`](crate::stack_bounds::StackBounds::covers)) is read with two plain
//! loads: no syscall, no signal handler. The [`stack_bounds`](crate::stack_bounds) module says
//! why that cannot fault. Every other frame — one on a sigaltstack, a coroutine stack, a
//! split-stack segment, or behind a corrupt frame pointer — goes through the [`Prober`]
//! exactly as without the fast path. A thread that never called
//! [`StackBounds::register_current_thread`] gets no fast path at all. The walk's sanity checks
//! (alignment, strictly increasing frame pointers, depth) are the same either way.
//!
//! With [`Unwinder::with_batch_window`], a probed frame is read together with the bytes that
//! follow it, in one [`batch::read_prefix`] call, and later frames that fall inside that copy
//! are served from it: a chain of frames off the thread's stack costs one syscall per window
//! instead of one (or, through a pipe, three) per frame.

use core::mem::MaybeUninit;

use super::{Frame, Regs, Unwinder, WORD, Walk, current_fp_sp, walk_chain};
use crate::batch;
use crate::stack_bounds::{StackBounds, current_sp};
use crate::{Backend, Error, Prober};

/// The largest batch window [`Unwinder::with_batch_window`] accepts (it lives on the walking
/// thread's stack, which may be a small sigaltstack).
pub const MAX_BATCH_WINDOW: usize = 1024;

/// How the frames of one walk were read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Frames read with plain loads inside the thread's stack bounds: no probe, no syscall.
    pub fast: usize,
    /// Frames read through the prober (each one a [`Prober::read`], a
    /// [`Prober::check`](crate::Prober::check) or a new batch window).
    pub probed: usize,
    /// Frames served from a batch window an earlier probe had copied.
    pub batched: usize,
    /// Calls into the prober, including the one that found a frame unreadable.
    pub probes: usize,
}

impl<'p> Unwinder<'p> {
    /// Reads frames inside the calling thread's registered stack with plain loads: a frame
    /// whose two words lie between a stack pointer of this thread and the top of its stack
    /// ([`StackBounds::covers`]) costs no syscall; see [`crate::stack_bounds`] for why that
    /// cannot fault. Every other frame (on a sigaltstack, a coroutine or split stack, behind a
    /// corrupt frame pointer) goes through the prober. The sanity checks are unchanged. Off
    /// by default. Only threads that called [`StackBounds::register_current_thread`] benefit;
    /// on others every frame is probed as before.
    pub fn with_fast_path(mut self, on: bool) -> Self {
        self.fast_path = on;
        self
    }

    /// Whether the stack-bounds fast path is on.
    pub fn fast_path(&self) -> bool {
        self.fast_path
    }

    /// Reads each probed frame together with up to `bytes` bytes from its frame pointer
    /// (clamped to [`MAX_BATCH_WINDOW`]; `0`, the default, turns batching off) and serves later
    /// frames inside that copy without another probe. Used only in the
    /// [`Read`](super::ReadMode::Read) mode, and not with [`Backend::SignalGuard`], whose reads
    /// make no syscall. For backends other than `ProcessVmReadv` the window also stops at the
    /// end of the frame's page, so that it stays one copy.
    pub fn with_batch_window(mut self, bytes: usize) -> Self {
        self.batch = bytes.min(MAX_BATCH_WINDOW);
        self
    }

    /// The batch window in bytes (0: off).
    pub fn batch_window(&self) -> usize {
        self.batch
    }

    /// Walks from a signal's interrupted registers ([`regs_from_ucontext`](super::regs_from_ucontext)).
    /// Like [`walk_from`](Self::walk_from), but the fast path can also use `regs.sp`, so a
    /// handler running on a sigaltstack still reads the interrupted thread-stack frames
    /// without probes. Async-signal-safe, no allocation.
    pub fn walk_from_regs(&self, regs: &Regs, out: &mut [Frame]) -> Walk {
        self.walk_from_regs_counted(regs, out, &mut ReadStats::default())
    }

    /// [`walk_from_regs`](Self::walk_from_regs), also reporting how the frames were read.
    pub fn walk_from_regs_counted(
        &self,
        regs: &Regs,
        out: &mut [Frame],
        stats: &mut ReadStats,
    ) -> Walk {
        let limit = out.len().min(self.max_depth);
        if limit == 0 {
            return Walk {
                depth: 0,
                stop: super::Stop::MaxDepth,
            };
        }
        out[0] = Frame {
            pc: regs.pc,
            fp: regs.fp,
        };
        let mut reader = FrameReader::new(self, &[regs.sp]);
        let walk = walk_chain(regs.fp, 0, &mut out[..limit], 1, |fp| reader.read(fp));
        *stats = reader.stats;
        walk
    }

    /// [`walk_current`](Self::walk_current), also reporting how the frames were read.
    #[inline(never)]
    pub fn walk_current_counted(&self, out: &mut [Frame], stats: &mut ReadStats) -> Walk {
        let limit = out.len().min(self.max_depth);
        let (fp, sp) = current_fp_sp();
        let mut reader = FrameReader::new(self, &[sp]);
        let walk = walk_chain(fp, sp, &mut out[..limit], 0, |fp| reader.read(fp));
        *stats = reader.stats;
        walk
    }
}

/// A frame's words as read from a batch window.
struct Window {
    buf: MaybeUninit<[u8; MAX_BATCH_WINDOW]>,
    initialised: bool,
    start: usize,
    len: usize,
}

impl Window {
    const fn new() -> Window {
        Window {
            buf: MaybeUninit::uninit(),
            initialised: false,
            start: 0,
            len: 0,
        }
    }

    /// The buffer, zeroed on first use (a walk that never batches never pays for it).
    fn buf(&mut self) -> &mut [u8; MAX_BATCH_WINDOW] {
        if !self.initialised {
            self.buf.write([0; MAX_BATCH_WINDOW]);
            self.initialised = true;
        }
        // SAFETY: written just above, or on an earlier call.
        unsafe { self.buf.assume_init_mut() }
    }

    /// The two words at `fp` if the last copy holds them.
    fn get(&mut self, fp: usize) -> Option<[usize; 2]> {
        if self.len == 0 || fp < self.start {
            return None;
        }
        let off = fp - self.start;
        if off.checked_add(2 * WORD)? > self.len {
            return None;
        }
        let buf = self.buf();
        Some([word_at(buf, off), word_at(buf, off + WORD)])
    }
}

fn word_at(buf: &[u8], off: usize) -> usize {
    let mut w = [0u8; WORD];
    w.copy_from_slice(&buf[off..off + WORD]);
    usize::from_ne_bytes(w)
}

/// The memory access of one walk: the fast path, then a batch window, then the prober.
pub(super) struct FrameReader<'a, 'p> {
    unwinder: &'a Unwinder<'p>,
    /// The thread's bounds and the lowest known stack pointer on that stack.
    fast: Option<(StackBounds, usize)>,
    batch: usize,
    window: Window,
    stats: ReadStats,
}

impl<'a, 'p> FrameReader<'a, 'p> {
    /// `sps`: stack pointers of this thread's contexts that the walk may use as the lower
    /// bound (the walker's own is always added).
    #[inline]
    pub(super) fn new(unwinder: &'a Unwinder<'p>, sps: &[usize]) -> Self {
        let fast = if unwinder.fast_path {
            StackBounds::current().and_then(|b| {
                // Any stack pointer of this thread that lies on its stack is a sound lower
                // bound: everything between it and `hi` is live stack. Take the lowest.
                sps.iter()
                    .copied()
                    .chain([current_sp()])
                    .filter(|&sp| b.contains_sp(sp))
                    .min()
                    .map(|sp| (b, sp))
            })
        } else {
            None
        };
        let batch = if unwinder.mode == super::ReadMode::Read
            && unwinder.prober.backend() != Backend::SignalGuard
            && unwinder.batch >= 2 * WORD
        {
            unwinder.batch
        } else {
            0
        };
        FrameReader {
            unwinder,
            fast,
            batch,
            window: Window::new(),
            stats: ReadStats::default(),
        }
    }

    /// Reads the `(saved fp, return address)` pair at `fp` (word-aligned and non-zero, as
    /// `walk_chain` guarantees): `Ok(None)` if unreadable.
    #[inline]
    pub(super) fn read(&mut self, fp: usize) -> Result<Option<[usize; 2]>, Error> {
        if let Some((bounds, sp)) = self.fast
            && let Some(words) = bounds.load_pair(sp, fp)
        {
            self.stats.fast += 1;
            return Ok(Some(words));
        }
        if self.batch != 0 {
            return self.read_batched(fp);
        }
        self.stats.probes += 1;
        let got = self.unwinder.read_frame(fp)?;
        if got.is_some() {
            self.stats.probed += 1;
        }
        Ok(got)
    }

    #[cold]
    fn read_batched(&mut self, fp: usize) -> Result<Option<[usize; 2]>, Error> {
        if let Some(words) = self.window.get(fp) {
            self.stats.batched += 1;
            return Ok(Some(words));
        }
        let prober: &Prober = self.unwinder.prober;
        let mut len = self.batch;
        if prober.backend() != Backend::ProcessVmReadv {
            let ps = crate::range::page_size();
            let to_page_end = ps - (fp & (ps - 1));
            len = len.min(to_page_end).max(2 * WORD);
        }
        self.stats.probes += 1;
        self.window.len = 0;
        let buf = self.window.buf();
        let n = batch::read_prefix(prober, fp, &mut buf[..len])?;
        if n < 2 * WORD {
            return Ok(None);
        }
        let words = [word_at(buf, 0), word_at(buf, WORD)];
        self.window.start = fp;
        self.window.len = n;
        self.stats.probed += 1;
        Ok(Some(words))
    }
}
