//! [`Backend`]: the eight probing techniques by name, what each proves and what it holds.

use core::fmt;
use core::str::FromStr;

use crate::guarantee::Guarantee;

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
    ///
    /// [`Prober::new`](crate::Prober::new) installs the handler once per process (not
    /// async-signal-safe) and is [`Error::Unavailable`](crate::Error::Unavailable) on a thread
    /// that blocks SIGSEGV or SIGBUS and under valgrind. A thread must not probe with it while
    /// it blocks either signal, which includes a SIGPROF handler installed with a full
    /// `sa_mask`. A faulting probe needs room for one signal frame, `getauxval(AT_MINSIGSTKSZ)`
    /// bytes (3.4 KiB with AVX-512), on the stack its handler runs on (the alternate stack when
    /// the handler installed before the crate's had `SA_ONSTACK`, or there was none); a signal
    /// handler that probes on an alternate stack needs two frames there plus its own use.
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

    /// Whether a [`Prober`](crate::Prober) for this backend holds file descriptors while it exists.
    ///
    /// `SigprocMask` holds the pipe pool for [`Prober::read`](crate::Prober::read) (`rt_sigprocmask` cannot hand
    /// the bytes back); its `check` needs no descriptor, and it still works, without `read`,
    /// when no descriptor can be opened.
    pub const fn holds_fd(self) -> bool {
        matches!(
            self,
            Backend::DevNull | Backend::Pipe | Backend::ProcmapQuery | Backend::SigprocMask
        )
    }

    /// Whether creating a [`Prober`](crate::Prober) for this backend installs a process-wide signal handler.
    pub const fn installs_signal_handler(self) -> bool {
        matches!(self, Backend::SignalGuard)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBackend(s.to_owned()))
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
