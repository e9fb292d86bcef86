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
//! # Choosing by the cost of `read`: [`AutoOptions::for_reads`]
//!
//! An unwinder does not check, it reads ([`Prober::read`], [`crate::reader::StackReader`]).
//! `SigprocMask` checks with one syscall, but `rt_sigprocmask` cannot hand the bytes back, so
//! its `read` copies through the pipe pool like `Pipe`, plus nothing: the order by the cost
//! of `read` differs. [`AutoOptions::for_reads`] orders by [`AutoOptions::READ_ORDER`], the
//! measured cost of a valid 8-byte `read`:
//!
//! | backend | `check`, valid 8 B | `read`, valid 8 B | how it reads |
//! | --- | ---: | ---: | --- |
//! | `SignalGuard` | ~7 ns | ~17 ns | guarded loads (only with [`AutoOptions::allow_signal_handler`]) |
//! | `ProcessVmReadv` | ~450 ns | ~510 ns | one `process_vm_readv`; no descriptor |
//! | `Pipe` | ~770 ns | ~760 ns | `fstat` + `write` of the bytes + `read` back |
//! | `SigprocMask` | ~155 ns | ~740 ns | the pipe pool, as `Pipe` (its `check` syscall cannot copy) |
//! | `Msync`, `Mincore`, `ProcmapQuery`, `DevNull` | 180, 450, 470, 385 ns | — | cannot read (not `Readable`) |
//!
//! (Figures from `addrprobe bench readers` on a 2-vCPU VM, Linux 6.18; the table with every
//! backend and the peer `pprof::validate` + load is in `docs/results/readers-2-core-vm.md`.)
//!
//! # Not async-signal-safe
//!
//! [`AutoOptions::build`] (like [`Prober::new`] and [`Prober::auto`]) opens descriptors, maps
//! and unmaps self-test pages, may install a signal handler and allocates: build the prober
//! before arming a profiling timer, and never inside a signal handler (not even lazily, through
//! `OnceLock::get_or_init` on the first sample).
//!
//! A backend that can check but not [`read`](crate::Prober::read) (`SigprocMask` when no
//! descriptor is free for its pipe pool) is only chosen when no candidate can do both.
//!
//! A backend whose self-test fails (a seccomp filter returning `EPERM`, a kernel without the
//! syscall) is skipped, so `auto()` still works under `process_vm_readv`-blocking seccomp
//! policies or with no free descriptors.

use crate::backend_kind::Backend;
use crate::error::Error;
use crate::prober::Prober;

impl Prober {
    /// The fastest backend with [`Guarantee::Readable`](crate::guarantee::Guarantee::Readable)
    /// that passes its self-test here and can also [`read`](Self::read), without installing a
    /// signal handler, in the order of the cost of [`check`](Self::check). See [`AutoOptions`]
    /// for the order, to allow [`Backend::SignalGuard`], and [`AutoOptions::for_reads`] to
    /// order by the cost of [`read`](Self::read) instead (what an unwinder calls).
    ///
    /// **Not async-signal-safe**, like [`new`](Self::new): build the prober before arming a
    /// timer, never inside a handler (nor in `OnceLock::get_or_init` there).
    pub fn auto() -> Result<Prober, Error> {
        AutoOptions::new().build()
    }
}

/// Options for [`Prober::auto`]-style selection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoOptions {
    allow_signal_handler: bool,
    for_reads: bool,
}

impl AutoOptions {
    /// The preference order, fastest first (see the module docs for the measurements).
    pub const ORDER: [Backend; 4] = [
        Backend::SignalGuard,
        Backend::SigprocMask,
        Backend::ProcessVmReadv,
        Backend::Pipe,
    ];

    /// The preference order of [`for_reads`](Self::for_reads), by the measured cost of a
    /// valid 8-byte [`read`](Prober::read), fastest first (see the module docs).
    pub const READ_ORDER: [Backend; 4] = [
        Backend::SignalGuard,
        Backend::ProcessVmReadv,
        Backend::Pipe,
        Backend::SigprocMask,
    ];

    /// Default options: ordered by the cost of `check`; no signal handler is installed.
    /// (Building the options is plain data and async-signal-safe; [`build`](Self::build) is
    /// not.)
    pub const fn new() -> Self {
        AutoOptions {
            allow_signal_handler: false,
            for_reads: false,
        }
    }

    /// Options for a caller that will [`read`](Prober::read) (an unwinder, a
    /// [`StackReader`](crate::reader::StackReader)): candidates in [`READ_ORDER`](Self::READ_ORDER),
    /// the cost of `read`, instead of [`ORDER`](Self::ORDER), the cost of `check`. No signal
    /// handler is installed unless [`allow_signal_handler`](Self::allow_signal_handler) is set.
    pub const fn for_reads() -> Self {
        AutoOptions {
            allow_signal_handler: false,
            for_reads: true,
        }
    }

    /// Allow [`Backend::SignalGuard`], which installs a process-wide SIGSEGV/SIGBUS handler
    /// (chained to the previous one, which runs on the stack, with the mask and the syscall
    /// restart the kernel would have given it). Only opt in if no thread that probes blocks
    /// those signals (a SIGPROF handler installed with a full `sa_mask` blocks them: it must
    /// not probe with the guard) and no other code will replace the handler without
    /// chaining. A faulting probe needs one signal frame, `getauxval(AT_MINSIGSTKSZ)` bytes
    /// (3.4 KiB with AVX-512), on the stack its handler runs on; a signal handler that probes
    /// on an alternate stack needs that stack to hold two frames plus its own use. In a JVM,
    /// build the prober after the JVM has started. See the crate docs' "Limits".
    pub const fn allow_signal_handler(mut self, allow: bool) -> Self {
        self.allow_signal_handler = allow;
        self
    }

    /// The candidates these options allow, in order.
    pub fn candidates(&self) -> impl Iterator<Item = Backend> + '_ {
        let order = if self.for_reads {
            Self::READ_ORDER
        } else {
            Self::ORDER
        };
        order
            .into_iter()
            .filter(|b| self.allow_signal_handler || !b.installs_signal_handler())
    }

    /// The first candidate that passes its self-test and can also [`read`](Prober::read)
    /// (see [`Prober::supports_read`]); if none can read, the first that passes.
    ///
    /// Not async-signal-safe (it opens descriptors, maps self-test pages, may install a signal
    /// handler, allocates): build the prober before arming a timer, never in a handler.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_reads_orders_by_the_cost_of_read() {
        let by_check: Vec<_> = AutoOptions::new().candidates().collect();
        assert_eq!(
            by_check,
            [Backend::SigprocMask, Backend::ProcessVmReadv, Backend::Pipe]
        );
        let by_read: Vec<_> = AutoOptions::for_reads().candidates().collect();
        assert_eq!(
            by_read,
            [Backend::ProcessVmReadv, Backend::Pipe, Backend::SigprocMask]
        );
        let with_handler: Vec<_> = AutoOptions::for_reads()
            .allow_signal_handler(true)
            .candidates()
            .collect();
        assert_eq!(with_handler[0], Backend::SignalGuard);
        // What it builds can read.
        let p = AutoOptions::for_reads().build().unwrap();
        assert!(p.supports_read());
        let x = 0x0123_4567_89ab_cdef_u64;
        let mut buf = [0u8; 8];
        assert!(p.read(&x as *const u64 as usize, &mut buf).unwrap());
        assert_eq!(u64::from_ne_bytes(buf), x);
    }
}
