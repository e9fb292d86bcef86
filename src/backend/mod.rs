//! The eight probing techniques, one module each, and the `State` that dispatches to them.
//! Private to the crate: the public face of a technique is [`Backend`] and
//! [`Prober`](crate::Prober).
//!
//! Each module's first paragraph says what its technique proves and cites the kernel code
//! that makes it so. Every technique has the same shape, the [`Technique`] trait, implemented
//! below by the state a [`Prober`](crate::Prober) holds for it (a unit type where it needs
//! none): opening acquires what the technique needs (a descriptor, a signal handler),
//! `check()` answers for a validated [`PageRange`], and the
//! [`Readable`](crate::Guarantee::Readable) ones have a race-free `read()`. Probe functions
//! never allocate, never lock and are async-signal-safe.
//!
//! [`process`] holds what the backends keep per process: the page that tells a new process
//! (`fork`, `_Fork`, `clone`) from its parent, and the process-wide descriptors they hold.

use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;

/// One-byte iovecs per syscall for the backends that hand the kernel one byte per page
/// (`dev-null`, `pipe`, `process-vm-readv`): 64 pages per call, a 1 KiB array on the stack.
pub(crate) const IOVECS: usize = 64;

/// Calls `f` with the one-byte iovecs of `r`'s probe points (its first byte, then the first
/// byte of every later page), at most [`IOVECS`] at a time, in address order. Stops at, and
/// returns, the first `Ok(false)` or error; `Ok(true)` if every batch said yes. No allocation.
#[inline]
pub(crate) fn for_each_probe_batch(
    r: &PageRange,
    mut f: impl FnMut(&[libc::iovec]) -> Result<bool, Error>,
) -> Result<bool, Error> {
    const EMPTY: libc::iovec = libc::iovec {
        iov_base: core::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [EMPTY; IOVECS];
    let mut n = 0;
    let mut points = r.probe_points().peekable();
    while let Some(point) = points.next() {
        iov[n] = libc::iovec {
            iov_base: point as *mut libc::c_void,
            iov_len: 1,
        };
        n += 1;
        if n == IOVECS || points.peek().is_none() {
            if !f(&iov[..n])? {
                return Ok(false);
            }
            n = 0;
        }
    }
    Ok(true)
}

mod dev_null;
mod mincore;
mod msync;
pub(crate) mod pipe;
pub(crate) mod process;
mod process_vm_readv;
mod procmap_query;
pub(crate) mod signal_guard;
mod sigprocmask;

/// The shape of a probing technique. Every method is a probe path: async-signal-safe, no
/// allocation, no lock; the caller ([`Prober`](crate::Prober)) preserves `errno` and
/// validates the range.
pub(crate) trait Technique {
    /// The backend this technique implements.
    const BACKEND: Backend;

    /// Whether probes make syscalls (and so may change `errno`, which the caller must then
    /// save and restore).
    const MAKES_SYSCALLS: bool = true;

    /// Whether [`read_prefix`](Self::read_prefix) copies a window of several pages with one
    /// syscall (per 64 pages), so that a wider window costs no extra call. The others copy
    /// page by page.
    const BATCHES_PAGES: bool = false;

    /// Answers for every page of `r`; what a "yes" proves is the backend's guarantee.
    fn check(&self, r: &PageRange) -> Result<bool, Error>;

    /// Copies `r` into `dst` (as long as `r`) if, and only if, every byte is readable. Only
    /// the [`Readable`](crate::Guarantee::Readable) techniques implement it.
    fn read(&self, r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
        let _ = (r, dst);
        Err(Error::Unsupported {
            backend: Self::BACKEND,
            operation: "read",
        })
    }

    /// Whether `read` has what it needs (only `SigprocMask` can lack it: its pipe pool).
    fn can_read(&self) -> bool {
        true
    }

    /// Copies the longest readable prefix of `r` into `dst` (as long as `r`) and returns its
    /// length: the byte after it, if any, lies in a page that was not readable. By default
    /// one [`read`](Self::read) per page-sized piece.
    fn read_prefix(&self, r: &PageRange, dst: &mut [u8]) -> Result<usize, Error> {
        let mut off = 0;
        for piece in r.pieces() {
            let len = piece.len();
            if !self.read(&piece, &mut dst[off..off + len])? {
                break;
            }
            off += len;
        }
        Ok(off)
    }
}

/// `msync(MS_ASYNC)` needs no state.
#[derive(Debug)]
pub(crate) struct Msync;

impl Technique for Msync {
    const BACKEND: Backend = Backend::Msync;

    #[inline]
    fn check(&self, r: &PageRange) -> Result<bool, Error> {
        msync::check(r)
    }
}

/// `mincore` needs no state.
#[derive(Debug)]
pub(crate) struct Mincore;

impl Technique for Mincore {
    const BACKEND: Backend = Backend::Mincore;

    #[inline]
    fn check(&self, r: &PageRange) -> Result<bool, Error> {
        mincore::check(r)
    }
}

impl Technique for dev_null::DevNull {
    const BACKEND: Backend = Backend::DevNull;

    #[inline]
    fn check(&self, r: &PageRange) -> Result<bool, Error> {
        dev_null::DevNull::check(self, r)
    }
}

impl Technique for pipe::PipeUser {
    const BACKEND: Backend = Backend::Pipe;

    #[inline]
    fn check(&self, r: &PageRange) -> Result<bool, Error> {
        pipe::check(Backend::Pipe, r)
    }

    #[inline]
    fn read(&self, r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
        pipe::read(Backend::Pipe, r, dst)
    }
}

impl Technique for sigprocmask::SigprocMask {
    const BACKEND: Backend = Backend::SigprocMask;

    #[inline]
    fn check(&self, r: &PageRange) -> Result<bool, Error> {
        sigprocmask::check(r)
    }

    #[inline]
    fn read(&self, r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
        sigprocmask::SigprocMask::read(self, r, dst)
    }

    fn can_read(&self) -> bool {
        sigprocmask::SigprocMask::can_read(self)
    }
}

/// `process_vm_readv` needs no state (the pid is kept current across `fork` by `process`).
#[derive(Debug)]
pub(crate) struct ProcessVmReadv;

impl Technique for ProcessVmReadv {
    const BACKEND: Backend = Backend::ProcessVmReadv;
    const BATCHES_PAGES: bool = true;

    #[inline]
    fn check(&self, r: &PageRange) -> Result<bool, Error> {
        process_vm_readv::check(r)
    }

    #[inline]
    fn read(&self, r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
        process_vm_readv::read(r, dst)
    }

    /// One `process_vm_readv` per 64 pages; a short count gives the readable prefix.
    #[inline]
    fn read_prefix(&self, r: &PageRange, dst: &mut [u8]) -> Result<usize, Error> {
        process_vm_readv::read_prefix(r, dst)
    }
}

impl Technique for signal_guard::Installed {
    const BACKEND: Backend = Backend::SignalGuard;
    // Its fault path only runs the crate's handler, which touches no `errno` when it
    // redirects a probe.
    const MAKES_SYSCALLS: bool = false;

    #[inline]
    fn check(&self, r: &PageRange) -> Result<bool, Error> {
        signal_guard::check(*self, r)
    }

    #[inline]
    fn read(&self, r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
        signal_guard::read(*self, r, dst)
    }
}

impl Technique for procmap_query::ProcMaps {
    const BACKEND: Backend = Backend::ProcmapQuery;

    #[inline]
    fn check(&self, r: &PageRange) -> Result<bool, Error> {
        procmap_query::ProcMaps::check(self, r)
    }
}

/// What a [`Prober`](crate::Prober) holds for its backend.
#[derive(Debug)]
pub(crate) enum State {
    Msync(Msync),
    Mincore(Mincore),
    DevNull(dev_null::DevNull),
    Pipe(pipe::PipeUser),
    SigprocMask(sigprocmask::SigprocMask),
    ProcessVmReadv(ProcessVmReadv),
    /// Holds the proof that the handler is installed, which the guarded loads need.
    SignalGuard(signal_guard::Installed),
    ProcmapQuery(procmap_query::ProcMaps),
}

/// `dispatch!(state, t => expr)`: evaluates `expr` with `t` bound to the state's
/// [`Technique`], one `match` arm per backend (static dispatch, no vtable).
macro_rules! dispatch {
    ($state:expr, $t:ident => $body:expr) => {
        match $state {
            State::Msync($t) => $body,
            State::Mincore($t) => $body,
            State::DevNull($t) => $body,
            State::Pipe($t) => $body,
            State::SigprocMask($t) => $body,
            State::ProcessVmReadv($t) => $body,
            State::SignalGuard($t) => $body,
            State::ProcmapQuery($t) => $body,
        }
    };
}

/// The backend of a technique, from a value (for [`dispatch!`]).
#[inline(always)]
fn backend_of<T: Technique>(_: &T) -> Backend {
    T::BACKEND
}

/// [`Technique::MAKES_SYSCALLS`] from a value (for [`dispatch!`]).
#[inline(always)]
fn makes_syscalls<T: Technique>(_: &T) -> bool {
    T::MAKES_SYSCALLS
}

/// [`Technique::BATCHES_PAGES`] from a value (for [`dispatch!`]).
#[inline(always)]
fn batches_pages<T: Technique>(_: &T) -> bool {
    T::BATCHES_PAGES
}

impl State {
    pub(crate) fn open(backend: Backend) -> Result<State, Error> {
        process::init();
        Ok(match backend {
            Backend::Msync => State::Msync(Msync),
            Backend::Mincore => State::Mincore(Mincore),
            Backend::DevNull => State::DevNull(dev_null::DevNull::open()?),
            Backend::Pipe => State::Pipe(pipe::PipeUser::open(Backend::Pipe)?),
            Backend::SigprocMask => State::SigprocMask(sigprocmask::SigprocMask::open()),
            Backend::ProcessVmReadv => State::ProcessVmReadv(ProcessVmReadv),
            Backend::SignalGuard => State::SignalGuard(signal_guard::install()?),
            Backend::ProcmapQuery => State::ProcmapQuery(procmap_query::ProcMaps::open()?),
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        dispatch!(self, t => backend_of(t))
    }

    /// Whether probes make syscalls (and so may change `errno`, which the caller must then
    /// save and restore).
    #[inline(always)]
    pub(crate) fn makes_syscalls(&self) -> bool {
        dispatch!(self, t => makes_syscalls(t))
    }

    /// Whether [`read_prefix`](Self::read_prefix) copies several pages per syscall (see
    /// [`Technique::BATCHES_PAGES`]).
    #[inline]
    pub(crate) fn batches_pages(&self) -> bool {
        dispatch!(self, t => batches_pages(t))
    }

    /// Whether `read` has what it needs.
    pub(crate) fn can_read(&self) -> bool {
        dispatch!(self, t => t.can_read())
    }

    #[inline]
    pub(crate) fn check(&self, r: &PageRange) -> Result<bool, Error> {
        dispatch!(self, t => t.check(r))
    }

    /// `Err(Unsupported)` for backends whose guarantee is not `Readable`.
    #[inline]
    pub(crate) fn read(&self, r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
        dispatch!(self, t => t.read(r, dst))
    }

    /// The longest readable prefix of `r`, copied into `dst` (as long as `r`); see
    /// [`Technique::read_prefix`].
    #[inline]
    pub(crate) fn read_prefix(&self, r: &PageRange, dst: &mut [u8]) -> Result<usize, Error> {
        dispatch!(self, t => t.read_prefix(r, dst))
    }
}
