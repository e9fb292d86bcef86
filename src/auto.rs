//! Choosing a backend automatically: [`AutoOptions`] and [`Prober::auto`].
//!
//! `auto()` returns the first backend of [`AutoOptions::ORDER`] that has the
//! [`Readable`](crate::Guarantee::Readable) guarantee and passes its self-test here. The
//! order is the measured cost of a valid 8-byte probe on Linux 6.18 (see `docs/results/`):
//!
//! | backend | valid 8 B | why it is where it is |
//! | --- | --- | --- |
//! | `SignalGuard` | ~1.3 ns | a guarded load inlined at the call site; needs a process-wide SIGSEGV/SIGBUS handler, so only with [`AutoOptions::allow_signal_handler`] |
//! | `SigprocMask` | ~150 ns | one syscall per page, no descriptor, nothing to go stale after `fork` |
//! | `ProcessVmReadv` | ~1.1 µs | one call per 64 pages; as dear as the pipe, but needs no descriptor; false negatives on write-only pages |
//! | `Pipe` | ~1.1 µs | `fstat` + `writev` + `read`; needs descriptors |
//!
//! A backend that can check but not [`read`](crate::Prober::read) (`SigprocMask` when no
//! descriptor is free for its pipe pool) is only chosen when no candidate can do both.
//!
//! A backend whose self-test fails (a seccomp filter returning `EPERM`, a kernel without the
//! syscall) is skipped, so `auto()` still works under `process_vm_readv`-blocking seccomp
//! policies or with no free descriptors.

use crate::{Backend, Error, Prober};

/// Options for [`Prober::auto`]-style selection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoOptions {
    allow_signal_handler: bool,
}

impl AutoOptions {
    /// The preference order, fastest first (see the module docs for the measurements).
    pub const ORDER: [Backend; 4] = [
        Backend::SignalGuard,
        Backend::SigprocMask,
        Backend::ProcessVmReadv,
        Backend::Pipe,
    ];

    /// Default options: no signal handler is installed.
    pub const fn new() -> Self {
        AutoOptions {
            allow_signal_handler: false,
        }
    }

    /// Allow [`Backend::SignalGuard`], which installs a process-wide SIGSEGV/SIGBUS handler
    /// (chained to the previous one). Only opt in if no thread blocks those signals and no
    /// other code will replace the handler without chaining.
    pub const fn allow_signal_handler(mut self, allow: bool) -> Self {
        self.allow_signal_handler = allow;
        self
    }

    /// The candidates these options allow, in order.
    pub fn candidates(&self) -> impl Iterator<Item = Backend> + '_ {
        Self::ORDER
            .into_iter()
            .filter(|b| self.allow_signal_handler || !b.installs_signal_handler())
    }

    /// The first candidate that passes its self-test and can also [`read`](Prober::read)
    /// (see [`Prober::supports_read`]); if none can read, the first that passes.
    pub fn build(&self) -> Result<Prober, Error> {
        let mut last = Error::NoSoundBackend {
            last: None,
            errno: None,
        };
        let mut check_only = None;
        for backend in self.candidates() {
            match Prober::new(backend) {
                Ok(p) if p.supports_read() => return Ok(p),
                Ok(p) => {
                    check_only.get_or_insert(p);
                }
                Err(e) => {
                    last = Error::NoSoundBackend {
                        last: Some(backend),
                        errno: e.errno(),
                    }
                }
            }
        }
        check_only.ok_or(last)
    }
}
