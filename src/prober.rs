//! [`Prober`]: a self-tested backend, and its probes [`check`](Prober::check) and
//! [`read`](Prober::read). [`Prober::auto`] is in `auto`, which chooses among the backends.

use crate::backend;
use crate::backend_kind::Backend;
use crate::error::Error;
use crate::guarantee::Guarantee;
use crate::range;
use crate::selftest;
use crate::sys;

/// A self-tested probing backend. `Send + Sync`; share one per process (e.g. in a
/// `static OnceLock<Prober>`) and call it from any thread or signal handler.
///
/// Dropping the last `Prober` of a descriptor-holding backend closes the crate's descriptors.
/// A [`Backend::SignalGuard`] handler, once installed, stays installed for the life of the
/// process (it chains every fault that is not a probe's to the previous disposition).
#[derive(Debug)]
pub struct Prober {
    pub(crate) state: backend::State,
}

impl Prober {
    /// Creates a prober for `backend` and proves it on this machine: it probes a readable
    /// page, a `PROT_NONE` page, 8 bytes from the readable one into the `PROT_NONE` one, an
    /// unmapped page and a `MAP_SHARED` page beyond the end of its file, all of which it makes,
    /// and returns [`Error::SelfTestFailed`] if an answer contradicts the backend's guarantee
    /// ([`Backend::DevNull`], being [`Guarantee::Unsound`], is only checked for availability).
    ///
    /// [`Backend::SignalGuard`] installs its SIGSEGV/SIGBUS handler here (once per process);
    /// it is [`Error::Unavailable`] on a thread that blocks SIGSEGV or SIGBUS, under valgrind,
    /// and in a child forked while another thread of its parent was installing.
    ///
    /// **Not async-signal-safe**: it opens descriptors, maps and unmaps its self-test pages,
    /// may install a signal handler and allocates. Build the prober before arming a profiling
    /// timer and share it; never create it in a signal handler, not even lazily through
    /// `OnceLock::get_or_init` on the first sample.
    pub fn new(backend: Backend) -> Result<Prober, Error> {
        crate::range::page_size();
        let prober = Prober {
            state: backend::State::open(backend)?,
        };
        selftest::run(backend, |addr, len| prober.check(addr, len))?;
        Ok(prober)
    }

    /// The prober `options` choose: the same as [`AutoOptions::build`](crate::AutoOptions::build).
    /// For an unwinder, `Prober::build(AutoOptions::for_reads())`. Not async-signal-safe.
    pub fn build(options: crate::AutoOptions) -> Result<Prober, Error> {
        options.build()
    }

    /// The backend this prober uses.
    pub fn backend(&self) -> Backend {
        self.state.backend()
    }

    /// What an `Ok(true)` from [`check`](Self::check) proves.
    pub fn guarantee(&self) -> Guarantee {
        self.backend().guarantee()
    }

    /// Whether [`read`](Self::read) can copy bytes with this prober: the guarantee is
    /// [`Guarantee::Readable`] and what the copy needs is there (`SigprocMask` copies through
    /// the pipe pool, which may have failed to open when no descriptor was free).
    pub fn supports_read(&self) -> bool {
        self.guarantee() == Guarantee::Readable && self.state.can_read()
    }

    /// Probes `[addr, addr + len)`. `Ok(true)` proves what [`guarantee`](Self::guarantee)
    /// says for every byte; `Ok(false)` means some page is not so.
    ///
    /// Async-signal-safe, allocation-free and lock-free; `errno` is preserved.
    #[inline(always)]
    pub fn check(&self, addr: usize, len: usize) -> Result<bool, Error> {
        // SignalGuard, at most 16 bytes within one 4 KiB block: inline guarded loads.
        if let Some(answer) = self.guarded().and_then(|g| g.check_small(addr, len)) {
            return Ok(answer);
        }
        self.check_range(addr, len)
    }

    /// [`check`](Self::check) of any range with any backend, out of line.
    fn check_range(&self, addr: usize, len: usize) -> Result<bool, Error> {
        let _errno = self.state.makes_syscalls().then(sys::ErrnoGuard::new);
        match range::classify(addr, len, range::page_size())? {
            range::Classified::Empty => Ok(true),
            range::Classified::OutsideUserSpace => Ok(false),
            range::Classified::Probe(r) => self.state.check(&r),
        }
    }

    /// Copies `dst.len()` bytes from `addr` into `dst` if, and only if, all of them are
    /// readable; `Ok(false)` means some byte was not (the contents of `dst` are then
    /// unspecified). The copy is race-free: it is done by the kernel or by guarded loads, never
    /// by a check followed by a plain load.
    ///
    /// Only backends with [`Guarantee::Readable`] can read; the others return
    /// [`Error::Unsupported`]. Async-signal-safe, allocation-free and lock-free; `errno` is
    /// preserved.
    #[inline(always)]
    pub fn read(&self, addr: usize, dst: &mut [u8]) -> Result<bool, Error> {
        // SignalGuard, at most 16 bytes within one 4 KiB block: inline guarded loads.
        if let Some(answer) = self.guarded().and_then(|g| g.read_small(addr, dst)) {
            return Ok(answer);
        }
        self.read_range(addr, dst)
    }

    /// [`read`](Self::read) of any range with any backend, out of line.
    fn read_range(&self, addr: usize, dst: &mut [u8]) -> Result<bool, Error> {
        let _errno = self.state.makes_syscalls().then(sys::ErrnoGuard::new);
        if self.guarantee() != Guarantee::Readable {
            return Err(Error::Unsupported {
                backend: self.backend(),
                operation: "read: only backends with the `readable` guarantee copy bytes; a check followed by a load could crash",
            });
        }
        match range::classify(addr, dst.len(), range::page_size())? {
            range::Classified::Empty => Ok(true),
            range::Classified::OutsideUserSpace => Ok(false),
            range::Classified::Probe(r) => self.state.read(&r, dst),
        }
    }
}

// The probe state is made of atomics and plain integers only.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Prober>();
};
