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
//! - [`Backend::SignalGuard`] refuses ([`Error::Unavailable`]) a [`Prober::new`] on a thread that blocks SIGSEGV
//!   or SIGBUS, under valgrind (whose signal frames do not hold a faulting load's exact
//!   registers), and in a child forked while another thread of its parent was installing. A
//!   thread that blocks SIGSEGV or SIGBUS *later* must not probe with it: the kernel kills the
//!   process at its first faulting probe. That includes a SIGSEGV/SIGBUS handler installed
//!   without `SA_NODEFER` (use `sigprocmask` there) and a SIGPROF (or any) handler installed with
//!   a full `sa_mask`; a handler with `SA_NODEFER`, or whose mask leaves SIGSEGV and SIGBUS out,
//!   may probe. Nor where another library later replaces the crate's handler without chaining to
//!   it (with all three arguments) or with a one-shot (`SA_RESETHAND`) handler.
//! - [`Backend::SignalGuard`] takes a fault for a probe's only at the exact PC of one of its load
//!   instructions, only for that instruction's own fault, and only when the faulting address the
//!   kernel reports lies in the bytes that load accesses (a `kill`, `sigqueue` or a child's
//!   `exit_signal` never is). Everything else goes to the disposition installed before it as the
//!   kernel would have delivered it there, checked case by case against the same program without
//!   the crate (`tests/signal_guard_exact.rs`, 557 cases):
//!   - **the stack**: the crate's action carries the previous handler's `SA_ONSTACK`, so the
//!     kernel builds the frame where it would have built that handler's: without `SA_ONSTACK` on
//!     the interrupted stack (a handler that needs 40 KiB gets it; a fault on an overflowed stack
//!     kills the process as it would), with it on the alternate stack;
//!   - **`SA_RESTART`**: carried too, so a *sent* SIGSEGV/SIGBUS interrupting a slow syscall
//!     restarts it or makes it fail with `EINTR` as the previous handler's flags say;
//!   - **the mask**: `uc_sigmask | sa_mask | {sig}` (without `sig` under `SA_NODEFER`), set by
//!     the kernel itself when the previous `sa_mask` blocks every asynchronous signal (HotSpot's
//!     does), else by one `rt_sigprocmask` before the call; `rt_sigreturn` restores the
//!     interrupted mask;
//!   - `SA_RESETHAND` honoured once, `SIG_DFL` as the default action, `SIG_IGN` as the kernel
//!     treats a fault (it kills) or a sent signal (dropped), the same `siginfo` and `ucontext`
//!     (a handler may change the context, e.g. skip the faulting instruction, or leave with
//!     `siglongjmp`).
//!
//!   What still differs from the kernel's own delivery: the chained handler starts a few hundred
//!   bytes lower on its stack (the crate's handler frame); chaining makes one syscall of its own
//!   (reading the disposition back, so that a handler that resets its own disposition does not
//!   disarm the guard), plus the `rt_sigprocmask` above when the mask is not adopted; under
//!   `SIG_IGN` or `SIG_DFL` a sent SIGSEGV/SIGBUS interrupts the thread (an interrupted slow
//!   syscall restarts, except those `signal(7)` says never restart); `sigaction(SIGSEGV, NULL,
//!   &old)` shows the crate's handler, not the previous one. A faulting probe itself needs one
//!   signal frame (`getauxval(AT_MINSIGSTKSZ)` bytes, 3.4 KiB with AVX-512) of room on the stack
//!   the previous handler's flags choose: a handler that probes on an alternate stack needs that
//!   stack to hold two frames plus its own use, `2 × AT_MINSIGSTKSZ` + its frames.
//! - A SIGSEGV (SIGBUS) sent with `tgkill`/`pthread_kill` to a thread within the microseconds
//!   between one of its [`Backend::SignalGuard`] probes' SIGSEGV (SIGBUS) faults and that fault's delivery is
//!   merged with it by the kernel (standard signals do not queue) and lost. A signal *sent* with
//!   a fault's `si_code` and an address inside the bytes of the load it interrupts (only a
//!   process sending itself a forged `siginfo` can do that) is taken for that load's fault.
//! - Inside a JVM, create the prober after the JVM has started (in `JNI_OnLoad`,
//!   `Agent_OnLoad` or later): the crate's handler then chains HotSpot's, adopts its mask
//!   (no mask syscall) and HotSpot keeps its implicit null checks, stack banging and `hs_err`
//!   reports. Created *before* the JVM (an embedding launcher), HotSpot's handler is in front and
//!   chains the faults it does not know to the crate, which then applies `SIG_DFL` itself: a real
//!   crash dies without `hs_err`, HotSpot judges probes of its own stack guard zones first, and
//!   `-XX:-UseSignalChaining` refuses to start. `-Xcheck:jni` warns that the handler was
//!   modified, and libjsig cannot see the crate's raw `rt_sigaction`.
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
pub use backend_kind::{Backend, UnknownBackend};
pub use error::Error;
pub use guarantee::Guarantee;
pub use prober::Prober;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
