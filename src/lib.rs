//! Can I read this address right now without crashing?
//!
//! `addrprobe` answers that question for stack unwinders and sampling profilers, from any
//! thread and from inside signal handlers. It offers every known technique as an
//! interchangeable [`Backend`] behind one [`Prober`], and says honestly what each answer
//! proves through its [`Guarantee`]:
//!
//! | backend | technique | a "yes" proves | [`Guarantee`] |
//! | --- | --- | --- | --- |
//! | [`Msync`](Backend::Msync) | `msync(MS_ASYNC)`; `ENOMEM` = unmapped | the pages are mapped (PROT_NONE, guard and past-EOF pages say yes) | [`Mapped`](Guarantee::Mapped) |
//! | [`Mincore`](Backend::Mincore) | `mincore`; `ENOMEM` = unmapped | the pages are mapped | [`Mapped`](Guarantee::Mapped) |
//! | [`ProcmapQuery`](Backend::ProcmapQuery) | `PROCMAP_QUERY` ioctl on `/proc/self/maps` (6.11+) | every page lies in a VMA with read permission (past-EOF and `MADV_GUARD_INSTALL` pages still say yes) | [`RegionReadable`](Guarantee::RegionReadable) |
//! | [`Pipe`](Backend::Pipe) | 1 byte per page written into a pipe (one `writev` per 64 pages) | the kernel could copy the bytes | [`Readable`](Guarantee::Readable) |
//! | [`SigprocMask`](Backend::SigprocMask) | `rt_sigprocmask(~0, addr, NULL, 8)`: `EINVAL` = copied, `EFAULT` = not | the kernel could copy the bytes | [`Readable`](Guarantee::Readable) |
//! | [`ProcessVmReadv`](Backend::ProcessVmReadv) | `process_vm_readv` on itself, one iovec per page | the kernel could copy the bytes (false negatives on write-only, exec-only, `VM_IO`/`VM_PFNMAP` and secretmem pages) | [`Readable`](Guarantee::Readable) |
//! | [`SignalGuard`](Backend::SignalGuard) | one load at a known PC, SIGSEGV/SIGBUS handler jumps to a continuation | the CPU could load the bytes | [`Readable`](Guarantee::Readable) |
//! | [`DevNull`](Backend::DevNull) | `write()` to `/dev/null` | nothing: the kernel never reads the buffer | [`Unsound`](Guarantee::Unsound) |
//!
//! Every answer is a snapshot: another thread can unmap or `mprotect` the page right after.
//! Use [`Prober::read`] with a [`Readable`](Guarantee::Readable) backend to copy the bytes
//! race-free instead of checking and then loading.
//!
//! # Example
//!
//! ```
//! use addrprobe::{Backend, Guarantee, Prober};
//!
//! // The fastest sound backend that needs no signal handler.
//! let prober = Prober::auto()?;
//! assert_eq!(prober.guarantee(), Guarantee::Readable);
//!
//! let value = 0x1234_5678_u64;
//! let addr = &value as *const u64 as usize;
//! assert_eq!(prober.check(addr, 8)?, true);
//! assert_eq!(prober.check(0, 8)?, false); // NULL
//!
//! let mut copy = [0u8; 8];
//! assert_eq!(prober.read(addr, &mut copy)?, true);
//! assert_eq!(u64::from_ne_bytes(copy), value);
//!
//! // A Mapped backend cannot read: it would have to load after checking.
//! let msync = Prober::new(Backend::Msync)?;
//! assert!(msync.read(addr, &mut copy).is_err());
//! # Ok::<(), addrprobe::Error>(())
//! ```
//!
//! # Rules every backend follows
//!
//! - `len == 0` is `Ok(true)` without a syscall.
//! - A range whose end `addr + len` wraps past `usize::MAX` is [`Error::InvalidRange`],
//!   never `Ok(true)`. (The kernel's own `msync` accepts `len = SIZE_MAX` because its
//!   rounding wraps to 0; this crate checks before any syscall.)
//! - No address crashes, hangs or panics the caller: NULL, kernel addresses, non-canonical
//!   addresses, the vsyscall page and ranges crossing the top of user space included. Ranges
//!   reaching [`range::USER_SPACE_LIMIT`] are answered `Ok(false)` without a syscall.
//! - A range is proven by probing one byte per page it touches (the first at `addr`), never by
//!   copying it all; the page size is read at run time.
//! - [`Prober::check`] and [`Prober::read`] do not allocate, take no locks, preserve `errno`
//!   and are async-signal-safe: call them from any thread and from signal handlers.
//! - `EPERM`, `ENOSYS`, `ENOTTY` and an `EINVAL` caused by the technique mean the backend is
//!   [unavailable](Error::Unavailable), never "unreadable".
//!
//! # Limits and threat model
//!
//! - An answer is a snapshot. Another thread may unmap the page right after a "yes".
//! - A missing page registered with `userfaultfd` makes the Readable backends block until the
//!   fault is resolved: do not probe such memory from a signal handler. With
//!   `UFFD_FEATURE_SIGBUS` they answer "no" at once; with a `UFFD_USER_MODE_ONLY` descriptor the
//!   kernel refuses its own faults, so the kernel-copy backends answer "no" at once and only
//!   the guarded load waits. The Mapped and RegionReadable backends never touch the page.
//! - Write-only and exec-only pages have no `r` in the maps: `ProcmapQuery` and
//!   `ProcessVmReadv` say "no". On x86_64 the CPU loads a write-only page, and an exec-only one
//!   unless the kernel gave it an execute-only protection key (`pku`); `Pipe`, `SigprocMask`
//!   and `SignalGuard` answer exactly that.
//! - Memory protection keys: a readable page whose key denies this thread access faults on a
//!   load, and `Pipe`, `SigprocMask` and `SignalGuard` say "no", but `ProcessVmReadv` says
//!   "yes": the kernel pins the page as a remote access, which it does not check against
//!   protection keys. Its [`Prober::read`] copies the right bytes without faulting; in a
//!   process that allocates protection keys, read with it instead of checking and loading.
//! - Pages that only the hardware can judge, such as `[vvar]` and the vsyscall page, may get
//!   different answers from the kernel-copy backends and from the CPU.
//! - [`Backend::SignalGuard`] must not be used on a thread that blocks SIGSEGV or SIGBUS, which
//!   includes code running inside a SIGSEGV/SIGBUS handler installed without `SA_NODEFER` (a
//!   crash reporter's): the kernel then kills the process on the first fault. A handler
//!   installed with `SA_NODEFER` may probe. Another library that later replaces the crate's
//!   handler without chaining to it (with all three arguments), or with a one-shot
//!   (`SA_RESETHAND`) handler, breaks it the same way.
//! - [`Backend::SignalGuard`] hands every signal that is not a probe's fault to the
//!   disposition installed before it exactly as the kernel would have: same arguments, the
//!   signal mask the kernel would have set (`uc_sigmask | sa_mask | {sig}` unless
//!   `SA_NODEFER`), `SA_RESETHAND` honoured once, the default action for `SIG_DFL` (and for a
//!   fault under `SIG_IGN`). Not emulated: the stack (a chained handler runs on the alternate
//!   signal stack if the thread has one, even without `SA_ONSTACK`, and needs room there) and
//!   `SA_RESTART` (a *sent* SIGSEGV/SIGBUS restarts an interrupted slow syscall). Its own
//!   handler blocks every signal while it runs (on the alternate signal stack), so a
//!   profiler's signal cannot land on top of it there; a handler of yours on the alternate
//!   stack that probes with `SignalGuard` needs room there for its own frame plus one more
//!   signal frame. The crate installs no alternate stack: on a thread whose alternate stack
//!   cannot hold a signal frame, the kernel kills the process with SIGSEGV at the first
//!   faulting probe.
//! - A SIGSEGV (SIGBUS) sent with `tgkill`/`pthread_kill` to a thread within the microseconds
//!   between one of its `SignalGuard` probes' SIGSEGV (SIGBUS) faults and that fault's
//!   delivery is merged with it by the kernel (standard signals do not queue) and lost.
//! - Descriptors are identified by device and inode. If the application closes a descriptor
//!   the crate holds, the backends that need it return [`Error::Unavailable`] (nothing is read,
//!   written or closed through the reused number) until a new [`Prober`] opens a fresh one. An
//!   application that itself opens `/dev/null` or `/proc/self/maps` at the very number the
//!   crate held cannot be told apart: `DevNull` then writes into that `/dev/null` (which
//!   discards everything) and `ProcmapQuery` issues its ioctl on that file (which neither reads
//!   nor moves the file offset).
//! - With no free descriptor (`RLIMIT_NOFILE` reached), `Pipe`, `DevNull` and `ProcmapQuery`
//!   are unavailable, and `SigprocMask` checks but cannot `read` (it copies through the pipe
//!   pool; [`Prober::supports_read`] says so). [`Prober::auto`] then returns
//!   `ProcessVmReadv`, which needs no descriptor and can read.
//! - The figures behind these statements (fuzzing, concurrency, signals, fork, descriptors,
//!   seccomp) are in `docs/reliability.md`, written by `scripts/reliability-report`.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

use core::fmt;
use core::str::FromStr;

mod auto;
pub mod backend;
pub mod batch;
pub mod bench;
#[doc(hidden)]
pub mod fast_path_bench;
pub mod fixtures;
#[cfg(feature = "msync-patch-emulation")]
pub mod msync_patch;
pub mod range;
mod selftest;
pub mod stack_bounds;
mod sys;
pub mod unwind;

pub use auto::AutoOptions;
pub use backend::signal_guard::GuardedLoads;

/// A probing technique. See the [crate docs](crate) for what each one proves.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `msync(MS_ASYNC)` over the range's pages: [`Guarantee::Mapped`].
    Msync,
    /// `mincore()` with a stack vector, chunked: [`Guarantee::Mapped`].
    Mincore,
    /// `write()` of the range to `/dev/null`: [`Guarantee::Unsound`].
    DevNull,
    /// 1 byte per page written into a non-blocking pipe (`writev`): [`Guarantee::Readable`].
    Pipe,
    /// `rt_sigprocmask(invalid how, addr, NULL, 8)`: [`Guarantee::Readable`].
    SigprocMask,
    /// `process_vm_readv` on this process, one iovec per page: [`Guarantee::Readable`].
    ProcessVmReadv,
    /// A load at a labelled PC guarded by a SIGSEGV/SIGBUS handler: [`Guarantee::Readable`].
    SignalGuard,
    /// The `PROCMAP_QUERY` ioctl on `/proc/self/maps`: [`Guarantee::RegionReadable`].
    ProcmapQuery,
}

impl Backend {
    /// All eight backends, in declaration order.
    pub const ALL: [Backend; 8] = [
        Backend::Msync,
        Backend::Mincore,
        Backend::DevNull,
        Backend::Pipe,
        Backend::SigprocMask,
        Backend::ProcessVmReadv,
        Backend::SignalGuard,
        Backend::ProcmapQuery,
    ];

    /// The kebab-case name used by `Display`, `FromStr` and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Msync => "msync",
            Backend::Mincore => "mincore",
            Backend::DevNull => "dev-null",
            Backend::Pipe => "pipe",
            Backend::SigprocMask => "sigprocmask",
            Backend::ProcessVmReadv => "process-vm-readv",
            Backend::SignalGuard => "signal-guard",
            Backend::ProcmapQuery => "procmap-query",
        }
    }

    /// What an `Ok(true)` from this backend proves.
    pub const fn guarantee(self) -> Guarantee {
        match self {
            Backend::Msync | Backend::Mincore => Guarantee::Mapped,
            Backend::ProcmapQuery => Guarantee::RegionReadable,
            Backend::DevNull => Guarantee::Unsound,
            Backend::Pipe
            | Backend::SigprocMask
            | Backend::ProcessVmReadv
            | Backend::SignalGuard => Guarantee::Readable,
        }
    }

    /// Whether a [`Prober`] for this backend holds file descriptors while it exists.
    ///
    /// `SigprocMask` holds the pipe pool for [`Prober::read`] (`rt_sigprocmask` cannot hand
    /// the bytes back); its `check` needs no descriptor, and it still works, without `read`,
    /// when no descriptor can be opened.
    pub const fn holds_fd(self) -> bool {
        matches!(
            self,
            Backend::DevNull | Backend::Pipe | Backend::ProcmapQuery | Backend::SigprocMask
        )
    }

    /// Whether creating a [`Prober`] for this backend installs a process-wide signal handler.
    pub const fn installs_signal_handler(self) -> bool {
        matches!(self, Backend::SignalGuard)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown backend name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown backend {:?}; expected one of", self.0)?;
        for (i, b) in Backend::ALL.iter().enumerate() {
            write!(f, "{}{}", if i == 0 { " " } else { ", " }, b)?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownBackend {}

impl FromStr for Backend {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBackend(s.to_owned()))
    }
}

/// What an `Ok(true)` answer proves. `Ok(false)` always means "not so" for the property in
/// question, except for [`Unsound`](Guarantee::Unsound) backends.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// `Ok(true)` ⇒ every page of the range is mapped, whatever its protection.
    Mapped,
    /// `Ok(true)` ⇒ every page lies in a mapping that has read permission.
    RegionReadable,
    /// `Ok(true)` ⇒ every byte could be read at the moment of the check.
    Readable,
    /// `Ok(true)` proves nothing. (`Ok(false)` still means "not readable".)
    Unsound,
}

impl Guarantee {
    /// Kebab-case name, as in the report.
    pub const fn name(self) -> &'static str {
        match self {
            Guarantee::Mapped => "mapped",
            Guarantee::RegionReadable => "region-readable",
            Guarantee::Readable => "readable",
            Guarantee::Unsound => "unsound",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong. An error is never an answer: it never means "unreadable".
///
/// The type is `Copy` and holds no heap data, so probe paths can return it from a signal
/// handler.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The backend cannot work here: the kernel lacks the technique (`ENOSYS`, `ENOTTY`), a
    /// seccomp filter or policy forbids it (`EPERM`), the technique rejected its argument
    /// (`EINVAL`), a descriptor could not be opened (`EMFILE`), or a held descriptor was closed
    /// or replaced by the application.
    Unavailable {
        /// The backend.
        backend: Backend,
        /// The errno that showed it, if one did.
        errno: Option<i32>,
        /// What was attempted and why that makes the backend unusable.
        reason: &'static str,
    },
    /// The backend cannot perform this operation, e.g. [`Prober::read`] on a backend whose
    /// guarantee is not [`Guarantee::Readable`].
    Unsupported {
        /// The backend.
        backend: Backend,
        /// The operation and why it is refused.
        operation: &'static str,
    },
    /// `addr + len` overflows `usize`.
    InvalidRange {
        /// Start of the range.
        addr: usize,
        /// Its length.
        len: usize,
    },
    /// The technique answered with an errno that means neither yes, no nor unavailable
    /// (e.g. `ENOMEM` for the kernel's own allocation, `EAGAIN` that persisted).
    Failed {
        /// The backend.
        backend: Backend,
        /// The errno.
        errno: i32,
        /// The syscall that failed.
        during: &'static str,
    },
    /// [`Prober::new`]'s self-test got an answer that contradicts the backend's guarantee.
    SelfTestFailed {
        /// The backend.
        backend: Backend,
        /// The fixture the self-test built.
        fixture: &'static str,
        /// The answer the guarantee requires.
        expected: bool,
        /// The answer the backend gave.
        got: bool,
    },
    /// [`Prober::auto`] found no backend with [`Guarantee::Readable`] that passed its
    /// self-test here. `last` is why the last candidate was rejected.
    NoSoundBackend {
        /// The last candidate's error, if it had one.
        last: Option<Backend>,
        /// The errno of that error, if any.
        errno: Option<i32>,
    },
}

impl Error {
    /// The errno behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match *self {
            Error::Unavailable { errno, .. } | Error::NoSoundBackend { errno, .. } => errno,
            Error::Failed { errno, .. } => Some(errno),
            _ => None,
        }
    }

    /// Whether this error says the backend cannot be used here at all.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// Classifies an errno that a technique returned where it can mean neither yes nor no.
    pub(crate) fn from_errno(backend: Backend, errno: i32, during: &'static str) -> Error {
        match errno {
            libc::EPERM | libc::ENOSYS | libc::ENOTTY | libc::EINVAL | libc::EACCES => {
                Error::Unavailable {
                    backend,
                    errno: Some(errno),
                    reason: during,
                }
            }
            libc::EMFILE | libc::ENFILE => Error::Unavailable {
                backend,
                errno: Some(errno),
                reason: "no file descriptor could be opened",
            },
            _ => Error::Failed {
                backend,
                errno,
                during,
            },
        }
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSYS => "ENOSYS",
        _ => "errno",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Unavailable {
                backend,
                errno,
                reason,
            } => {
                write!(f, "backend {backend} is unavailable here: {reason}")?;
                if let Some(e) = errno {
                    write!(f, " ({} {e})", errno_name(e))?;
                }
                Ok(())
            }
            Error::Unsupported { backend, operation } => {
                write!(f, "backend {backend} does not support {operation}")
            }
            Error::InvalidRange { addr, len } => write!(
                f,
                "invalid range: {addr:#x} + {len:#x} wraps past the end of the address space"
            ),
            Error::Failed {
                backend,
                errno,
                during,
            } => write!(
                f,
                "backend {backend}: {during} failed with {} {errno}, which is neither a yes nor a no",
                errno_name(errno)
            ),
            Error::SelfTestFailed {
                backend,
                fixture,
                expected,
                got,
            } => write!(
                f,
                "backend {backend} failed its self-test: on {fixture} it answered {got}, but its guarantee ({}) requires {expected}",
                backend.guarantee()
            ),
            Error::NoSoundBackend { last, errno } => {
                write!(f, "no backend with the `readable` guarantee works here")?;
                if let Some(b) = last {
                    write!(f, " (last tried: {b}")?;
                    if let Some(e) = errno {
                        write!(f, ", {} {e}", errno_name(e))?;
                    }
                    write!(f, ")")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

/// A self-tested probing backend. `Send + Sync`; share one per process (e.g. in a
/// `static OnceLock<Prober>`) and call it from any thread or signal handler.
///
/// Dropping the last `Prober` of a descriptor-holding backend closes the crate's descriptors.
/// A [`Backend::SignalGuard`] handler, once installed, stays installed for the life of the
/// process (it chains every fault that is not a probe's to the previous disposition).
#[derive(Debug)]
pub struct Prober {
    state: backend::State,
}

impl Prober {
    /// Creates a prober for `backend` and proves it on this machine: it probes a readable
    /// page, a `PROT_NONE` page, an unmapped page and a `MAP_SHARED` page beyond the end of
    /// its file, all of which it makes, and returns [`Error::SelfTestFailed`] if an answer
    /// contradicts the backend's guarantee ([`Backend::DevNull`], being
    /// [`Guarantee::Unsound`], is only checked for availability).
    ///
    /// [`Backend::SignalGuard`] installs its SIGSEGV/SIGBUS handler here (once per process).
    pub fn new(backend: Backend) -> Result<Prober, Error> {
        crate::range::page_size();
        let prober = Prober {
            state: backend::State::open(backend)?,
        };
        selftest::run(&prober)?;
        Ok(prober)
    }

    /// The fastest backend with [`Guarantee::Readable`] that passes its self-test here and can
    /// also [`read`](Self::read), without installing a signal handler. See [`AutoOptions`] for the order and to allow
    /// [`Backend::SignalGuard`].
    pub fn auto() -> Result<Prober, Error> {
        AutoOptions::new().build()
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

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
