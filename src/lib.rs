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
//! | [`DevNull`](Backend::DevNull) | `writev()` of one byte per page to `/dev/null` | nothing: the kernel never reads the buffer | [`Unsound`](Guarantee::Unsound) |
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
//! - The crate's descriptors (`/dev/null`, `/proc/self/maps`, the pipe pool) sit at the lowest
//!   free numbers at or above `min(1024, RLIMIT_NOFILE - 16)`, where an application's `open`
//!   (lowest free number first) reaches them only when every number below is in use.
//!   Before each use a descriptor is identified by device and inode (one `fstat`). If the
//!   application closes or replaces it, the backends that need it return
//!   [`Error::Unavailable`] (nothing is read, written or closed through the number) until a new
//!   [`Prober`] opens a fresh one. The check and the use are separate syscalls: if another
//!   thread closes the crate's number and puts its own file there in between (with `dup2`, or
//!   once every lower number is taken), that probe uses the application's file: `DevNull`
//!   writes one byte of the probed memory per page into it, `Pipe`'s `check` writes as many and
//!   reads up to as many from it, and a `Pipe` or `SigprocMask` `read` writes the whole probed
//!   range into it and may return the file's bytes as the copy. An application that itself
//!   opens `/dev/null` or `/proc/self/maps` at the very number the crate held cannot be told
//!   apart: `DevNull` then writes into that `/dev/null` (which discards everything) and
//!   `ProcmapQuery` issues its ioctl on that file (which neither reads nor moves the file
//!   offset). The `sys` module docs describe the window exactly.
//! - A child process made by `fork()`, `_Fork()` or `clone` without `CLONE_VM` answers for its
//!   own address space and shares no pipe with its parent, without a `pthread_atfork` handler:
//!   the crate keeps its per-process state in a page mapped with `MADV_WIPEONFORK`, which the
//!   kernel zeroes in every child, and the child's first probe replaces what it inherited
//!   (another thread's probe answers `Unavailable` meanwhile). Without `MADV_WIPEONFORK`
//!   (kernels before 4.14) the backends that keep per-process state call `getpid` on every
//!   probe. Children that share memory with the parent (`vfork`, `CLONE_VM`) are not told
//!   apart and must not probe. [`Prober::new`] and dropping a `Prober` take a lock, so in the
//!   child of a multi-threaded parent (which may only call async-signal-safe functions) only
//!   probes with probers made before the fork are allowed.
//! - With no free descriptor (`RLIMIT_NOFILE` reached), `Pipe`, `DevNull` and `ProcmapQuery`
//!   are unavailable, and `SigprocMask` checks but cannot `read` (it copies through the pipe
//!   pool; [`Prober::supports_read`] says so). [`Prober::auto`] then returns
//!   `ProcessVmReadv`, which needs no descriptor and can read.
//! - The figures behind these statements (fuzzing, concurrency, signals, fork, descriptors,
//!   seccomp) are in `docs/reliability.md`, written by `scripts/reliability-report`.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod auto;
mod backend;
mod backend_kind;
pub mod batch;
mod error;
mod guarantee;
mod prober;
pub mod range;
pub mod reader;
mod selftest;
pub mod stack_bounds;
mod sys;
#[doc(hidden)]
pub mod testing;
pub mod unwind;

pub use auto::AutoOptions;
pub use backend::signal_guard::GuardedLoads;
pub use backend_kind::Backend;
pub use error::{Error, UnknownBackend};
pub use guarantee::Guarantee;
pub use prober::Prober;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
