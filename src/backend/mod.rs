//! The eight probing techniques, one module each, and the `State` that dispatches to them.
//!
//! Each module's first paragraph says what its technique proves and cites the kernel code
//! that makes it so. Every module exposes the same shape: `open()` acquires what the
//! technique needs (a descriptor, a signal handler), `check()` answers for a validated
//! [`PageRange`], and the [`Readable`](crate::Guarantee::Readable) ones have a race-free
//! `read()`. Probe functions never allocate, never lock and are async-signal-safe.

use crate::range::PageRange;
use crate::{Backend, Error};

pub mod dev_null;
pub mod mincore;
pub mod msync;
pub mod pipe;
pub mod process_vm_readv;
pub mod procmap_query;
pub mod signal_guard;
pub mod sigprocmask;

/// What a [`Prober`](crate::Prober) holds for its backend.
#[derive(Debug)]
pub(crate) enum State {
    Msync,
    Mincore,
    DevNull(dev_null::DevNull),
    Pipe(pipe::PipeUser),
    SigprocMask(sigprocmask::SigprocMask),
    ProcessVmReadv,
    /// Holds the proof that the handler is installed, which the guarded loads need.
    SignalGuard(signal_guard::Installed),
    ProcmapQuery(procmap_query::ProcMaps),
}

impl State {
    pub(crate) fn open(backend: Backend) -> Result<State, Error> {
        crate::sys::register_atfork();
        Ok(match backend {
            Backend::Msync => State::Msync,
            Backend::Mincore => State::Mincore,
            Backend::DevNull => State::DevNull(dev_null::DevNull::open()?),
            Backend::Pipe => State::Pipe(pipe::PipeUser::open(Backend::Pipe)?),
            Backend::SigprocMask => State::SigprocMask(sigprocmask::SigprocMask::open()),
            Backend::ProcessVmReadv => State::ProcessVmReadv,
            Backend::SignalGuard => State::SignalGuard(signal_guard::install()?),
            Backend::ProcmapQuery => State::ProcmapQuery(procmap_query::ProcMaps::open()?),
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            State::Msync => Backend::Msync,
            State::Mincore => Backend::Mincore,
            State::DevNull(_) => Backend::DevNull,
            State::Pipe(_) => Backend::Pipe,
            State::SigprocMask(_) => Backend::SigprocMask,
            State::ProcessVmReadv => Backend::ProcessVmReadv,
            State::SignalGuard(_) => Backend::SignalGuard,
            State::ProcmapQuery(_) => Backend::ProcmapQuery,
        }
    }

    /// Whether probes make syscalls (and so may change `errno`, which the caller must then
    /// save and restore). The guarded load makes none: its fault path only runs the crate's
    /// handler, which touches no `errno` when it redirects a probe.
    #[inline(always)]
    pub(crate) fn makes_syscalls(&self) -> bool {
        !matches!(self, State::SignalGuard(_))
    }

    /// Whether `read` has what it needs (only `SigprocMask` can lack it: its pipe pool).
    pub(crate) fn can_read(&self) -> bool {
        match self {
            State::SigprocMask(s) => s.can_read(),
            _ => true,
        }
    }

    #[inline]
    pub(crate) fn check(&self, r: &PageRange) -> Result<bool, Error> {
        match self {
            State::Msync => msync::check(r),
            State::Mincore => mincore::check(r),
            State::DevNull(d) => d.check(r),
            State::Pipe(_) => pipe::check(Backend::Pipe, r),
            State::SigprocMask(_) => sigprocmask::check(r),
            State::ProcessVmReadv => process_vm_readv::check(r),
            State::SignalGuard(i) => signal_guard::check(*i, r),
            State::ProcmapQuery(m) => m.check(r),
        }
    }

    /// Only called for backends whose guarantee is `Readable`.
    #[inline]
    pub(crate) fn read(&self, r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
        match self {
            State::Pipe(_) => pipe::read(Backend::Pipe, r, dst),
            State::SigprocMask(s) => s.read(r, dst),
            State::ProcessVmReadv => process_vm_readv::read(r, dst),
            State::SignalGuard(i) => signal_guard::read(*i, r, dst),
            _ => Err(Error::Unsupported {
                backend: self.backend(),
                operation: "read",
            }),
        }
    }
}
