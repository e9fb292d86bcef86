//! The [`Unwinder`]'s stack-bounds fast path and batched reads.
//!
//! With [`Unwinder::with_fast_path`], a frame whose 16 bytes lie between the walking thread's
//! real stack pointer and the top of its registered stack is read with two plain loads
//! ([`FrameWindow::load_pair`]): no syscall, no signal handler. The
//! [`stack_bounds`](crate::stack_bounds) module says why that cannot fault. Every other frame —
//! one on a sigaltstack, a coroutine stack, a split-stack segment, below the real stack
//! pointer, or behind a corrupt frame pointer — goes through the [`Prober`] exactly as without
//! the fast path. A thread that never called [`StackBounds::register_current_thread`] gets no
//! fast path at all. The walk's sanity checks (alignment, strictly increasing frame pointers,
//! depth) are the same either way.
//!
//! With [`Unwinder::with_batch_window`], a probed frame is read together with the bytes that
//! follow it, in one [`batch::read_prefix`] call, and later frames that fall inside that copy
//! are served from it: a chain of frames off the thread's stack costs one syscall per window
//! instead of one (or, through a pipe, three) per frame.

use core::mem::MaybeUninit;

use super::{Frame, Unwinder, WORD, Walk, walk_chain};
use crate::backend_kind::Backend;
use crate::batch;
use crate::error::Error;
use crate::prober::Prober;
use crate::stack_bounds::{FrameWindow, StackBounds};

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
    /// whose two words lie between the walker's real stack pointer and the top of its stack
    /// costs no syscall; see [`crate::stack_bounds`] for why that cannot fault. Every other
    /// frame (on a sigaltstack, a coroutine or split stack, below the real stack pointer,
    /// behind a corrupt frame pointer) goes through the prober. The sanity checks are
    /// unchanged. Off by default. Only threads that called
    /// [`StackBounds::register_current_thread`] benefit; on others every frame is probed as
    /// before.
    ///
    /// The lower bound is the stack pointer of [`walk`](Self::walk) itself, read from the
    /// register, raised for [`Start::Regs`](super::Start::Regs) to the interrupted context's
    /// (when it lies on the registered stack; otherwise no frame takes the fast path). A
    /// `Regs::sp` that is made up can therefore only narrow the fast path. A handler on a
    /// sigaltstack runs off the thread's stack, so its safe walks probe every frame; it gets
    /// the fast path for the interrupted frames through
    /// [`walk_trusted`](Self::walk_trusted), vouching for the `ucontext`'s stack pointer.
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
}

/// Runs one walk: `first` (if any) into `out[0]`, then the chain from `fp`, each frame pointer
/// above `prev` (`0` for no bound), read through `window` (the fast path), a batch window and
/// the prober; the read statistics go to `stats` if given. Always inlined into the walk
/// function that made `window`, so the window is used only while that function runs.
#[inline(always)]
pub(super) fn run(
    unwinder: &Unwinder<'_>,
    window: Option<FrameWindow>,
    first: Option<Frame>,
    fp: usize,
    prev: usize,
    out: &mut [Frame],
    stats: Option<&mut ReadStats>,
) -> Walk {
    let limit = out.len().min(unwinder.max_depth);
    let start = match first {
        Some(_) if limit == 0 => {
            return Walk {
                depth: 0,
                stop: super::Stop::MaxDepth,
            };
        }
        Some(frame) => {
            out[0] = frame;
            1
        }
        None => 0,
    };
    let mut slot = WindowSlot::new();
    let (mut reader, mut slow) = reader(unwinder, window, &mut slot);
    let walk = walk_chain(fp, prev, &mut out[..limit], start, |fp| {
        reader.read(&mut slow, fp)
    });
    if let Some(stats) = stats {
        *stats = reader.stats(&slow);
    }
    walk
}

/// The last batch window a walk copied.
pub(super) struct Window {
    buf: [u8; MAX_BATCH_WINDOW],
    start: usize,
    len: usize,
}

impl Window {
    fn new() -> Window {
        Window {
            buf: [0; MAX_BATCH_WINDOW],
            start: 0,
            len: 0,
        }
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
        Some([word_at(&self.buf, off), word_at(&self.buf, off + WORD)])
    }
}

fn word_at(buf: &[u8], off: usize) -> usize {
    let mut w = [0u8; WORD];
    w.copy_from_slice(&buf[off..off + WORD]);
    usize::from_ne_bytes(w)
}

/// The memory access of one walk: the fast path, then a batch window, then the prober.
pub(super) struct FrameReader {
    /// The frame records the fast path may load: between the walk's stack pointer on the
    /// thread's stack and its top, and (checked per load for a safe walk) above the real
    /// stack pointer.
    fast: Option<FrameWindow>,
    /// Frames read on the fast path. The reader is a separate value from the [`SlowPath`]
    /// (which the out-of-line slow path borrows) so that the compiler keeps the count and the
    /// bounds in registers: a counter in memory would add a store-to-load chain to every
    /// frame.
    fast_count: usize,
}

/// Everything a probed (or batched) read needs.
pub(super) struct SlowPath<'a, 'p> {
    unwinder: &'a Unwinder<'p>,
    batch: usize,
    /// Present when batching is on (the 1 KiB buffer is only set up then).
    window: Option<&'a mut Window>,
    stats: ReadStats,
}

/// Stack space for a walk's batch window, written only when batching is on (so a walk
/// without batching never touches the 1 KiB).
pub(super) struct WindowSlot(MaybeUninit<Window>);

impl WindowSlot {
    #[inline(always)]
    pub(super) const fn new() -> WindowSlot {
        WindowSlot(MaybeUninit::uninit())
    }
}

/// The fast path's window for one walk: `make` applied to the calling thread's bounds, or
/// `None` if the fast path is off or the thread is not registered. The walk function calls
/// it itself, with a stack pointer at or above its own (or under the unchecked contract):
/// [`FrameReader::read`] relies on that.
#[inline(always)]
pub(super) fn window(
    unwinder: &Unwinder<'_>,
    make: impl FnOnce(StackBounds) -> Option<FrameWindow>,
) -> Option<FrameWindow> {
    if unwinder.fast_path {
        StackBounds::current().and_then(make)
    } else {
        None
    }
}

/// The reader for one walk, with the fast path's window (from [`window`]).
#[inline(always)]
pub(super) fn reader<'a, 'p>(
    unwinder: &'a Unwinder<'p>,
    fast: Option<FrameWindow>,
    slot: &'a mut WindowSlot,
) -> (FrameReader, SlowPath<'a, 'p>) {
    let batch = batch_len(unwinder);
    let window = if batch == 0 {
        None
    } else {
        Some(slot.0.write(Window::new()))
    };
    (
        FrameReader {
            fast,
            fast_count: 0,
        },
        SlowPath {
            unwinder,
            batch,
            window,
            stats: ReadStats::default(),
        },
    )
}

/// The batch window a walk uses: 0 unless the mode copies (`Read`) and the backend makes
/// syscalls.
fn batch_len(unwinder: &Unwinder<'_>) -> usize {
    if unwinder.mode == super::ReadMode::Read
        && unwinder.prober.backend() != Backend::SignalGuard
        && unwinder.batch >= 2 * WORD
    {
        unwinder.batch
    } else {
        0
    }
}

impl FrameReader {
    /// How the frames read so far were read.
    pub(super) fn stats(&self, slow: &SlowPath<'_, '_>) -> ReadStats {
        ReadStats {
            fast: self.fast_count,
            ..slow.stats
        }
    }

    /// Reads the `(saved fp, return address)` pair at `fp` (word-aligned and non-zero, as
    /// `walk_chain` guarantees): `Ok(None)` if unreadable.
    #[inline(always)]
    pub(super) fn read(
        &mut self,
        slow: &mut SlowPath<'_, '_>,
        fp: usize,
    ) -> Result<Option<[usize; 2]>, Error> {
        if let Some(window) = self.fast
            // SAFETY: every walk makes its window (`window`) in the function that runs the
            // walk, from `frame_window` with a stack pointer at or above that function's own,
            // or from `frame_window_unchecked` under `walk_trusted`'s contract,
            // and the reader lives only for that walk.
            && let Some(words) = unsafe { window.load_pair_in_frame(fp) }
        {
            self.fast_count += 1;
            return Ok(Some(words));
        }
        slow.read(fp)
    }
}

impl SlowPath<'_, '_> {
    /// Everything but the fast path: kept out of line so the fast loop stays small.
    #[inline(never)]
    fn read(&mut self, fp: usize) -> Result<Option<[usize; 2]>, Error> {
        if self.window.is_some() {
            return self.read_batched(fp);
        }
        self.stats.probes += 1;
        let got = self.unwinder.probe_frame(fp)?;
        if got.is_some() {
            self.stats.probed += 1;
        }
        Ok(got)
    }

    fn read_batched(&mut self, fp: usize) -> Result<Option<[usize; 2]>, Error> {
        let prober: &Prober = self.unwinder.prober;
        let mut len = self.batch;
        if !prober.state.batches_pages() {
            let ps = crate::range::page_size();
            let to_page_end = ps - (fp & (ps - 1));
            len = len.min(to_page_end).max(2 * WORD);
        }
        let Some(window) = self.window.as_deref_mut() else {
            return Ok(None);
        };
        if let Some(words) = window.get(fp) {
            self.stats.batched += 1;
            return Ok(Some(words));
        }
        self.stats.probes += 1;
        window.len = 0;
        let n = batch::read_prefix(prober, fp, &mut window.buf[..len])?;
        if n < 2 * WORD {
            return Ok(None);
        }
        window.start = fp;
        window.len = n;
        self.stats.probed += 1;
        Ok(Some([word_at(&window.buf, 0), word_at(&window.buf, WORD)]))
    }
}
