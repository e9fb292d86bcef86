//! [`StackReader`]: what an unwinder calls to read the stack of one sample.
//!
//! A DWARF unwinder (framehop, libunwind's `access_mem`, a hand-written CFI interpreter)
//! asks for one word of stack memory at a time: the saved return address at `CFA - 8`, a
//! callee-saved register's slot, a frame pointer. A [`StackReader`] answers those questions
//! for one sample, built from the interrupted context's stack pointer and, if the thread
//! registered them, its [`StackBounds`]:
//!
//! 1. **Snapshot** (optional, [`StackReader::with_snapshot`]): `[sp, sp + N)` copied once with
//!    one batched [`batch::read_prefix`] into a buffer the caller owns. Reads inside the
//!    copied prefix are served from it. This is for stacks the fast path cannot cover: a
//!    handler on a sigaltstack walking a coroutine's stack, a green thread, a stack sampled
//!    from another thread that is suspended.
//! 2. **Own-stack fast path**: [`StackBounds::load_word`] with the sample's `sp`. It loads
//!    only between the *real* stack pointer of the code doing the load and the top of the
//!    registered stack (see [`crate::stack_bounds`]); a SIGPROF handler running on the
//!    thread's own stack sits below the interrupted frames, so all of them are covered with
//!    plain loads. A made-up `sp` only narrows what is accepted.
//! 3. **The prober**: [`Prober::read`] of the 8 bytes, race-free (the kernel's copy or a
//!    guarded load).
//!
//! Every path is sound by construction: no safe function of this module loads an address
//! whose readability rests on an argument nobody checked. The snapshot is a copy made by the
//! prober; the fast path checks the real stack pointer; the rest is the prober's own copy.
//! The one `unsafe` constructor, [`StackReader::trusting_sp`], takes `sp` on trust for a
//! handler on a sigaltstack reading the thread stack it interrupted, exactly like
//! [`StackBounds::load_word_unchecked`].
//!
//! Everything here is async-signal-safe: no allocation, no lock, `errno` preserved (the
//! prober saves and restores it), and the buffer of the snapshot is the caller's.
//!
//! # Errors are not the end of the stack
//!
//! [`read_u64`](StackReader::read_u64) returns `Ok(None)` for memory that is not readable and
//! `Err` when the backend failed (a seccomp filter, a descriptor the application closed).
//! External unwinders only know `Result<u64, ()>`: [`StackReader::memory`] (and its alias
//! [`StackReader::framehop_memory`], which needs no feature) hands them that shape and latches
//! the first `Err` so that the caller can tell "the stack ended" from "the backend broke"
//! with [`StackReader::error`] after the walk.

//! # Addresses: `usize` in, `u64` for the unwinder
//!
//! The constructors take the stack pointer as `usize`, like every address of this process in
//! the crate ([`Prober`], [`StackBounds`]): it comes from this process's own `ucontext`. The
//! reads ([`read_u64`](StackReader::read_u64), the callbacks) take `u64`, the unwinder's type
//! (framehop's registers and CFA arithmetic are `u64`), so no cast sits in the walk; a `u64`
//! that is no address here (beyond `usize`, or wrapping) is unreadable, not an error.

use core::cell::Cell;

use crate::batch;
use crate::error::Error;
use crate::prober::Prober;
use crate::stack_bounds::StackBounds;

/// Bytes in one word read by [`StackReader::read_u64`].
const WORD: usize = 8;

/// The state of a [`StackReader::memory`] callback: the reader and the fast-path reads it
/// served, added to the reader's count on drop.
struct Counted<'r, 'a> {
    reader: &'r StackReader<'a>,
    fast: usize,
}

impl Counted<'_, '_> {
    #[inline(always)]
    fn read(&mut self, addr: u64) -> Result<u64, ()> {
        if self.reader.snapshot.is_empty()
            && let Ok(a) = usize::try_from(addr)
            && let Some(w) = self.reader.fast_window(a)
        {
            self.fast += 1;
            return Ok(w);
        }
        self.reader.read_or_latch(addr)
    }
}

impl Drop for Counted<'_, '_> {
    fn drop(&mut self) {
        let c = &self.reader.fast_reads;
        c.set(c.get().wrapping_add(self.fast));
    }
}

/// One more read served from where `counter` counts.
#[inline(always)]
fn bump(counter: &Cell<usize>) {
    counter.set(counter.get().wrapping_add(1));
}

/// Reads the stack of one sample: snapshot, own-stack fast path, then the prober. See the
/// [module docs](self). Not `Send`: it may hold the thread's [`StackBounds`].
#[derive(Debug)]
pub struct StackReader<'a> {
    prober: &'a Prober,
    sp: usize,
    bounds: Option<StackBounds>,
    /// `sp` was vouched for by the caller of [`StackReader::trusting_sp`].
    trusted: bool,
    /// The copied prefix of `[sp, sp + N)` and its start address.
    snapshot: &'a [u8],
    snapshot_base: usize,
    /// The fast path's window, computed once: words at `[win_lo, win_last + 8)` may be loaded
    /// directly, and (unless `trusted`) only at or above the real stack pointer of the load,
    /// which must itself be at or above `lo`. Empty (`win_lo > win_last`) without bounds or
    /// with `sp` off the registered stack.
    win_lo: usize,
    win_last: usize,
    lo: usize,
    error: Cell<Option<Error>>,
    snapshot_reads: Cell<usize>,
    fast_reads: Cell<usize>,
    probed_reads: Cell<usize>,
}

/// Where the reads of a [`StackReader`] were served from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Words served from the snapshot.
    pub snapshot: usize,
    /// Words loaded with the own-stack fast path.
    pub fast: usize,
    /// Words read through the prober (readable or not, or failed).
    pub probed: usize,
}

impl<'a> StackReader<'a> {
    /// A reader for a sample whose stack pointer is `sp` (the interrupted context's, from
    /// [`regs_from_ucontext`](crate::unwind::regs_from_ucontext), or the caller's own), using
    /// the calling thread's registered bounds ([`StackBounds::current`]) if any.
    /// Async-signal-safe: one thread-local load.
    #[inline]
    pub fn new(prober: &'a Prober, sp: usize) -> Self {
        Self::with_bounds(prober, sp, StackBounds::current())
    }

    /// A reader with explicit bounds (`None`: no fast path). The bounds are the calling
    /// thread's own ([`StackBounds`] cannot leave its thread), and the fast path still checks
    /// the real stack pointer at each load.
    #[inline]
    pub fn with_bounds(prober: &'a Prober, sp: usize, bounds: Option<StackBounds>) -> Self {
        let (win_lo, win_last, lo) = match &bounds {
            Some(b) if b.contains_sp(sp) && b.hi() - sp >= WORD => (sp, b.hi() - WORD, b.lo()),
            _ => (usize::MAX, 0, usize::MAX),
        };
        StackReader {
            prober,
            sp,
            bounds,
            trusted: false,
            snapshot: &[],
            snapshot_base: 0,
            win_lo,
            win_last,
            lo,
            error: Cell::new(None),
            snapshot_reads: Cell::new(0),
            fast_reads: Cell::new(0),
            probed_reads: Cell::new(0),
        }
    }

    /// Takes `sp` on trust for the fast path instead of the real stack pointer: for a handler
    /// on a sigaltstack, whose own stack pointer is off the thread's stack, reading the frames
    /// of the context it interrupted with plain loads. Reads are still accepted only inside
    /// `[sp, hi)` of the registered bounds.
    ///
    /// # Safety
    ///
    /// As for [`StackBounds::load_word_unchecked`]: for as long as the reader is used, every
    /// byte of `[sp, hi)` must be live stack of the calling thread, i.e. `sp` must be the
    /// stack pointer the kernel saved in the `ucontext` of the signal whose handler is
    /// running on this thread (and the reader must not outlive the handler), or the stack
    /// pointer of a function of this thread that is still running.
    #[inline]
    pub unsafe fn trusting_sp(mut self) -> Self {
        self.trusted = true;
        self
    }

    /// Copies the readable prefix of `[sp, sp + 8 * buf.len())` into `buf` with one batched
    /// read ([`batch::read_prefix`]: one `process_vm_readv` per 64 pages, or one
    /// [`Prober::read`] per page) and serves later reads inside that prefix from the copy.
    /// Returns the reader and how many bytes were copied (fewer when the stack ends or a page
    /// is not readable). The copy is a snapshot of the sample's stack, which an unwinder of an
    /// interrupted or suspended stack wants anyway.
    ///
    /// The copy stops at the known top of the stack: when `sp` lies in the reader's
    /// registered [`StackBounds`], nothing at or above their `hi` is read (it is not this
    /// stack, and reading past it costs a probe of whatever lies there, a guard page's fault
    /// with `SignalGuard`). Without bounds, or with `sp` outside them, the whole buffer's
    /// range is tried.
    ///
    /// On `Err` (the backend failed: not an answer) the reader comes back unchanged, without
    /// a snapshot, with the error, so the walk can go on without one.
    ///
    /// Worth it for stacks the fast path does not cover (a sigaltstack, a coroutine stack);
    /// on the thread's own stack the fast path is cheaper. Async-signal-safe; the buffer is
    /// the caller's (e.g. a `static` or a preallocated array), nothing is allocated.
    // The reader comes back by value on both paths: a signal handler cannot box it.
    #[allow(clippy::result_large_err)]
    pub fn with_snapshot(mut self, buf: &'a mut [u64]) -> Result<(Self, usize), (Self, Error)> {
        let mut len = buf.len() * WORD;
        if let Some(b) = &self.bounds
            && (b.lo()..b.hi()).contains(&self.sp)
        {
            len = len.min(b.hi() - self.sp);
        }
        // SAFETY: `buf` holds at least `len` bytes of initialised `u64`s, exclusively borrowed
        // for 'a; viewing them as bytes (alignment 1, every bit pattern valid both ways) is
        // sound.
        let bytes: &'a mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), len) };
        match batch::read_prefix(self.prober, self.sp, bytes) {
            Ok(copied) => {
                self.snapshot = &bytes[..copied];
                self.snapshot_base = self.sp;
                Ok((self, copied))
            }
            Err(e) => Err((self, e)),
        }
    }

    /// The sample's stack pointer.
    pub fn sp(&self) -> usize {
        self.sp
    }

    /// The prober behind the slow path.
    pub fn prober(&self) -> &'a Prober {
        self.prober
    }

    /// The bytes the snapshot holds (empty without one).
    pub fn snapshot_len(&self) -> usize {
        self.snapshot.len()
    }

    /// Where the reads so far were served from.
    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            snapshot: self.snapshot_reads.get(),
            fast: self.fast_reads.get(),
            probed: self.probed_reads.get(),
        }
    }

    /// Reads the 8 bytes at `addr` (any alignment): `Ok(Some(word))` if readable, `Ok(None)`
    /// if not, `Err` if the backend failed (which is not an answer). Snapshot first, then the
    /// own-stack fast path, then [`Prober::read`]. Async-signal-safe.
    ///
    /// The snapshot and the fast path's window check are inlined into the caller; everything
    /// else (a misaligned word, a read off the window, the prober) is one call.
    #[inline(always)]
    pub fn read_u64(&self, addr: u64) -> Result<Option<u64>, Error> {
        match self.read_inline(addr) {
            Some(w) => Ok(Some(w)),
            None => self.read_out_of_line(addr),
        }
    }

    /// The word at `addr` if the snapshot holds it or the fast path's window covers it.
    #[inline(always)]
    fn read_inline(&self, addr: u64) -> Option<u64> {
        // On 64-bit targets every `u64` is a `usize`; elsewhere a larger one is no address.
        let addr = usize::try_from(addr).ok()?;
        if !self.snapshot.is_empty()
            && let Some(w) = self.in_snapshot(addr)
        {
            bump(&self.snapshot_reads);
            return Some(w);
        }
        let w = self.fast_window(addr)?;
        bump(&self.fast_reads);
        Some(w)
    }

    /// The rest of [`read_u64`](Self::read_u64), after `read_inline` said no.
    #[inline(never)]
    fn read_out_of_line(&self, addr: u64) -> Result<Option<u64>, Error> {
        // A word that wraps past the end of the address space is unreadable, not an error
        // (a corrupt CFA must end the walk like any other bad address).
        let Some(addr) = usize::try_from(addr)
            .ok()
            .filter(|a| a.checked_add(WORD).is_some())
        else {
            return Ok(None);
        };
        if let Some(w) = self.fast_general(addr) {
            bump(&self.fast_reads);
            return Ok(Some(w));
        }
        bump(&self.probed_reads);
        let mut buf = [0u8; WORD];
        Ok(self
            .prober
            .read(addr, &mut buf)?
            .then(|| u64::from_ne_bytes(buf)))
    }

    /// [`read_u64`](Self::read_u64) in the shape external unwinders take
    /// (`FnMut(u64) -> Result<u64, ()>`): unreadable memory and a failed backend both become
    /// `Err(())`, and the first backend error is latched for [`error`](Self::error).
    // `Result<u64, ()>` is the callback shape framehop and other unwinders take.
    #[allow(clippy::result_unit_err)]
    #[inline(always)]
    pub fn read_or_latch(&self, addr: u64) -> Result<u64, ()> {
        match self.read_inline(addr) {
            Some(w) => Ok(w),
            None => self.read_or_latch_out_of_line(addr),
        }
    }

    #[inline(never)]
    fn read_or_latch_out_of_line(&self, addr: u64) -> Result<u64, ()> {
        match self.read_out_of_line(addr) {
            Ok(Some(w)) => Ok(w),
            Ok(None) => Err(()),
            Err(e) => {
                if self.error.get().is_none() {
                    self.error.set(Some(e));
                }
                Err(())
            }
        }
    }

    /// A memory callback for an external unwinder: `FnMut(u64) -> Result<u64, ()>`, latching
    /// the first backend error (see [`error`](Self::error)). Borrows the reader, which stays
    /// usable for [`error`](Self::error) and [`stats`](Self::stats) once the closure is dropped.
    ///
    /// The callback counts its fast-path reads itself and adds them to [`stats`](Self::stats)
    /// when it is dropped: a counter in the reader, incremented on every word, would chain
    /// each read to the previous one through memory (a store and a reload, ~1 ns a word).
    #[inline]
    pub fn memory(&self) -> impl FnMut(u64) -> Result<u64, ()> + '_ {
        let mut counted = Counted {
            reader: self,
            fast: 0,
        };
        move |addr| counted.read(addr)
    }

    /// The first backend error a callback from [`memory`](Self::memory) turned into `Err(())`,
    /// if any: `Some` means a walk that ended early may have been cut short by the backend,
    /// not by the end of the stack.
    pub fn error(&self) -> Option<Error> {
        self.error.get()
    }

    /// Forgets the latched error (to reuse the reader for another walk of the same sample).
    pub fn clear_error(&self) {
        self.error.set(None);
    }

    #[inline(always)]
    fn in_snapshot(&self, addr: usize) -> Option<u64> {
        let off = addr.checked_sub(self.snapshot_base)?;
        let bytes = self.snapshot.get(off..off.checked_add(WORD)?)?;
        let mut w = [0u8; WORD];
        w.copy_from_slice(bytes);
        Some(u64::from_ne_bytes(w))
    }

    /// The own-stack fast path. An aligned word inside the window computed at construction
    /// is loaded after a few compares: at or above the real stack pointer of this load, which
    /// is at or above the registered stack's `lo` (so `[real, hi)` is live stack of this
    /// thread, mapped since registration), or, for a trusted `sp`, anywhere in `[sp, hi)`.
    /// Anything else (misaligned, or the real stack pointer elsewhere) is `fast_general`'s.
    #[inline(always)]
    fn fast_window(&self, addr: usize) -> Option<u64> {
        if addr.is_multiple_of(WORD) && addr >= self.win_lo && addr <= self.win_last {
            if self.trusted {
                // SAFETY: the caller of `trusting_sp` vouched that `[sp, hi)` is live stack of
                // this thread while the reader is used; `[win_lo, win_last + 8)` lies in it.
                return Some(unsafe { core::ptr::read_volatile(addr as *const u64) });
            }
            let real = crate::stack_bounds::current_sp();
            if real >= self.lo && addr >= real {
                // SAFETY: aligned, inside `[real, hi)` with `lo <= real`: live stack of this
                // thread above its real stack pointer, inside the range mapped at
                // registration (the module docs of `stack_bounds`).
                return Some(unsafe { core::ptr::read_volatile(addr as *const u64) });
            }
        }
        None
    }

    /// The fast path's general checks, those of [`StackBounds`], for what `fast_window` did
    /// not take (a misaligned word, a real stack pointer outside the window's assumptions).
    #[inline]
    fn fast_general(&self, addr: usize) -> Option<u64> {
        let bounds = self.bounds.as_ref()?;
        let mut w = [0u8; WORD];
        if self.trusted {
            if addr.is_multiple_of(WORD) {
                // SAFETY: the caller of `trusting_sp` vouched that `[sp, hi)` is live stack
                // of this thread while the reader is used; `load_word_unchecked` loads only
                // inside it.
                return unsafe { bounds.load_word_unchecked(self.sp, addr) }.map(|w| w as u64);
            }
            // SAFETY: as above; `read_unchecked` copies only inside `[sp, hi)`.
            return unsafe { bounds.read_unchecked(self.sp, addr, &mut w) }
                .then(|| u64::from_ne_bytes(w));
        }
        if addr.is_multiple_of(WORD) {
            return bounds.load_word(self.sp, addr).map(|w| w as u64);
        }
        bounds
            .read(self.sp, addr, &mut w)
            .then(|| u64::from_ne_bytes(w))
    }
}

impl StackReader<'_> {
    /// framehop's `read_stack` callback (`FnMut(u64) -> Result<u64, ()>`), for
    /// `Unwinder::iter_frames(pc, regs, cache, &mut read_stack)` and `unwind_frame`. The first
    /// backend error is latched: after the walk, [`error`](Self::error) returning `Some` means
    /// the walk's `Err` came from a broken backend, not from the end of the stack.
    ///
    /// Needs no crate feature and no framehop dependency of this crate: the closure's shape is
    /// all framehop asks for, so it works with whatever framehop version the caller uses (the
    /// same as [`memory`](Self::memory)).
    ///
    /// The words are returned as stored: on aarch64, saved return addresses that code built
    /// with pointer authentication signed still carry their code. framehop strips them with
    /// the mask its registers carry (`UnwindRegsAarch64::new_with_ptr_auth_mask`);
    /// [`crate::unwind::strip_return_address`] strips one the way the CPU does.
    #[inline]
    pub fn framehop_memory(&self) -> impl FnMut(u64) -> Result<u64, ()> + '_ {
        self.memory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;
    use crate::range::page_size;

    /// Two readable pages filled with their own addresses, then a PROT_NONE page.
    struct Fixture {
        base: usize,
        ps: usize,
    }

    impl Fixture {
        fn new() -> Fixture {
            let ps = page_size();
            // SAFETY: a fresh private anonymous mapping.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    3 * ps,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            let base = p as usize;
            for a in (base..base + 2 * ps).step_by(8) {
                // SAFETY: inside the two writable pages just mapped.
                unsafe { *(a as *mut u64) = a as u64 };
            }
            // SAFETY: the third page is ours.
            let r = unsafe { libc::mprotect((base + 2 * ps) as *mut _, ps, libc::PROT_NONE) };
            assert_eq!(r, 0);
            Fixture { base, ps }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.base as *mut _, 3 * self.ps) };
        }
    }

    fn probers() -> Vec<Prober> {
        [Backend::SigprocMask, Backend::ProcessVmReadv, Backend::Pipe]
            .into_iter()
            .filter_map(|b| Prober::new(b).ok())
            .collect()
    }

    #[test]
    fn reads_through_the_prober_off_the_stack() {
        let f = Fixture::new();
        for p in probers() {
            let r = StackReader::with_bounds(&p, f.base, None);
            assert_eq!(r.read_u64(f.base as u64 + 16), Ok(Some(f.base as u64 + 16)));
            // Unaligned: the high bytes of one word and the low bytes of the next.
            let a = f.base + 8;
            let want = ((a as u64) >> 24) | ((a as u64 + 8) << 40);
            assert_eq!(r.read_u64(a as u64 + 3), Ok(Some(want)));
            assert_eq!(r.read_u64((f.base + 2 * f.ps) as u64), Ok(None));
            assert_eq!(
                r.read_u64((f.base + 2 * f.ps - 4) as u64),
                Ok(None),
                "straddles"
            );
            assert_eq!(r.read_u64(0), Ok(None));
            assert_eq!(r.read_u64(u64::MAX - 3), Ok(None));
            assert_eq!(
                r.stats().probed,
                5,
                "the wrapping word is refused before any probe"
            );
            assert_eq!(r.stats().fast + r.stats().snapshot, 0);
        }
    }

    #[test]
    fn snapshot_serves_its_prefix_and_stops_at_the_unreadable_page() {
        let f = Fixture::new();
        for p in probers() {
            let mut buf = [0u64; 1024];
            let sp = f.base + f.ps - 64;
            let (r, copied) = StackReader::with_bounds(&p, sp, None)
                .with_snapshot(&mut buf)
                .unwrap();
            assert_eq!(copied, 64 + f.ps, "{}", p.backend());
            assert_eq!(r.snapshot_len(), copied);
            for a in (sp..sp + copied).step_by(8) {
                assert_eq!(r.read_u64(a as u64), Ok(Some(a as u64)));
            }
            assert_eq!(r.stats().snapshot, copied / 8);
            // Past the copy: the prober, which says no for the PROT_NONE page.
            assert_eq!(r.read_u64((sp + copied) as u64), Ok(None));
            // Below sp: not in the snapshot, read through the prober.
            assert_eq!(r.read_u64(f.base as u64), Ok(Some(f.base as u64)));
            assert_eq!(r.stats().probed, 2);
        }
    }

    /// The snapshot stops at the registered stack's top, however large the buffer; and a
    /// backend that fails hands the reader back, without a snapshot.
    #[test]
    fn snapshot_stops_at_the_stack_top_and_an_error_returns_the_reader() {
        std::thread::spawn(|| {
            let b = StackBounds::register_current_thread().unwrap();
            let p = Prober::new(Backend::SigprocMask).unwrap();
            let x = core::hint::black_box([17u64; 4]);
            let sp = &x as *const [u64; 4] as usize;
            let room = b.hi() - sp;
            // Far more words than lie between sp and the top.
            let mut buf = vec![0u64; room / 8 + 4096];
            let (r, copied) = StackReader::with_bounds(&p, sp, Some(b))
                .with_snapshot(&mut buf)
                .map_err(|(_, e)| e)
                .unwrap();
            assert!(
                copied <= room,
                "copied {copied} bytes, the stack has {room} above sp"
            );
            assert!(copied >= 32, "copied {copied}");
            assert_eq!(r.snapshot_len(), copied);
            assert_eq!(r.read_u64(sp as u64), Ok(Some(17)));
            assert_eq!(r.stats().snapshot, 1);
            // Msync cannot read: the reader comes back with the error.
            let msync = Prober::new(Backend::Msync).unwrap();
            let mut small = [0u64; 4];
            let Err((back, e)) = StackReader::new(&msync, sp).with_snapshot(&mut small) else {
                panic!("msync cannot copy");
            };
            assert_eq!((back.sp(), back.snapshot_len()), (sp, 0));
            assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
            core::hint::black_box(&x);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn fast_path_never_reads_below_the_real_stack_pointer() {
        std::thread::spawn(|| {
            let b = StackBounds::register_current_thread().unwrap();
            let p = Prober::new(Backend::SigprocMask).unwrap();
            let x = core::hint::black_box([11u64, 13u64]);
            let a = &x as *const [u64; 2] as usize;
            // A made-up sp at `lo` claims the whole stack: only what is above the real stack
            // pointer is loaded directly; `lo` itself goes to the prober.
            let r = StackReader::with_bounds(&p, b.lo(), Some(b));
            assert_eq!(r.read_u64(a as u64), Ok(Some(11)));
            assert_eq!(r.read_u64(a as u64 + 8), Ok(Some(13)));
            assert_eq!(r.stats().fast, 2);
            let _ = r.read_u64(b.lo() as u64);
            assert_eq!(r.stats().probed, 1, "below the real sp: probed");
            // The same through the callback, which counts its fast reads itself and hands
            // them over when dropped.
            let r = StackReader::with_bounds(&p, b.lo(), Some(b));
            let mut mem = r.memory();
            assert_eq!(mem(a as u64), Ok(11));
            assert_eq!(mem(a as u64 + 8), Ok(13));
            let _ = mem(b.lo() as u64);
            drop(mem);
            assert_eq!((r.stats().fast, r.stats().probed), (2, 1));
            core::hint::black_box(&x);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn memory_latches_the_first_backend_error() {
        // Msync cannot read: every read is `Err(Unsupported)`, which must not look like
        // the end of the stack.
        let p = Prober::new(Backend::Msync).unwrap();
        let x = 5u64;
        let r = StackReader::with_bounds(&p, 0, None);
        let mut mem = r.memory();
        assert_eq!(mem(&x as *const u64 as u64), Err(()));
        assert_eq!(mem(0), Err(()));
        drop(mem);
        assert!(matches!(r.error(), Some(Error::Unsupported { .. })));
        r.clear_error();
        assert_eq!(r.error(), None);
        // An unreadable address is not an error.
        let q = Prober::new(Backend::SigprocMask).unwrap();
        let r = StackReader::with_bounds(&q, 0, None);
        assert_eq!(r.read_or_latch(0), Err(()));
        assert_eq!(r.error(), None);
    }
}
