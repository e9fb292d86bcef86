//! A guarded load (HotSpot `SafeFetch` style): proves the **CPU could load** the bytes.
//!
//! A probe is one load instruction, inlined where it is used (an `asm!` block), whose PC and
//! continuation are recorded in an exception table, as the Linux kernel records its
//! `get_user` instructions. On x86_64:
//!
//! ```text
//!               xor   ecx, ecx                 ; "no fault" (the compiler sets it up)
//! load:         mov   rax, qword ptr [rdi]     ; the only instruction that can fault
//! continuation:                                ; the next instruction; the code goes on
//!                                              ; and tests ecx
//! table entry:  (load, continuation)           ; in the section `addrprobe_extable_x86_64_v1`
//! ```
//!
//! (arm64: `ldr`/`ldrb`/`ldp`, the flag in `x9`, the section `addrprobe_extable_aarch64_v1`.)
//!
//! A SIGSEGV/SIGBUS handler, installed once per process with `SA_SIGINFO | SA_ONSTACK` and a
//! full `sa_mask`, takes a signal for a probe's fault only if the interrupted PC *equals* the
//! load PC of an entry of the table (see the `extable` module for its format and why every
//! linked object, a `cdylib` included, has its own) and the signal is that instruction's fault:
//! `si_code > 0` (never `kill`, `tgkill` or `sigqueue`), not an asynchronous report
//! (`BUS_MCEERR_AO`; arm64: `SEGV_MTEAERR`), and for `SI_KERNEL` only an x86_64
//! general-protection fault (a non-canonical address). It then sets the flag register to 1 and
//! the PC to the continuation, and returns: the code after the load sees "faulted" and ignores
//! the value register. The protocol is part of the section's name, so copies of the crate that
//! share a table also share it. No global symbol is defined, so two copies of the crate link
//! into one program.
//!
//! The cost of a load that does not fault is the load, a zeroed register and a test: no call,
//! no memory besides the loaded bytes. [`GuardedLoads`] offers it directly ([`Prober::guarded`]);
//! [`Prober::check`] and [`Prober::read`] of at most 16 bytes within one 4 KiB block take the
//! same inline path (one byte load for `check`; for `read`, one 8-byte load for 8 bytes, one
//! pair for 16, else loads of 8, 4, 2 and 1 bytes that cover exactly the range), and longer
//! ranges make one load per page (check) or per 8 bytes, plus the exact tail of each page's
//! piece (read): no byte outside a range is ever loaded. A fault costs a
//! signal delivery (~2 µs). A load that crosses a page boundary is one instruction too: the CPU
//! either loads all its bytes or faults, and a faulting instruction is not completed in part
//! (x86_64: the register is not written; arm64: it is left unknown, and discarded), so `Some`
//! proves both pages.
//!
//! x86_64 and arm64 have a table (arm64 has been run on Debian's arm64 kernels under
//! `qemu-system-aarch64` with TCG, PAC and MTE, not on arm64 hardware). Other
//! architectures have none yet: [`Backend::SignalGuard`](crate::Backend::SignalGuard) is
//! [`Error::Unavailable`] there and [`Prober::guarded`] never returns a token.
//!
//! # Installing
//!
//! Each signal's handler goes in with one raw `rt_sigaction(sig, &ours, &old)`: the kernel
//! swaps the dispositions atomically, so a handler that another thread installs at the same
//! moment is either the one saved and chained to, or the one that replaces ours; it is never
//! lost. Every signal is blocked on the installing thread meanwhile, and a fault on another
//! thread that needs the saved disposition before it is published waits for it.
//!
//! # Chaining
//!
//! Every other signal goes to the disposition that was installed before ours, *as the kernel
//! would have delivered it there*:
//!
//! - a handler gets the same three arguments (a one-argument handler reads only the first;
//!   the kernel passes all three in registers) and runs with the thread's signal mask set to
//!   the interrupted context's mask (`uc_sigmask`) plus its `sa_mask` plus the signal itself
//!   unless it has `SA_NODEFER`; our own mask is restored when it returns. So a crash handler
//!   with `SA_NODEFER` can probe with `SignalGuard`, and a profiler's signal is not held back
//!   while it runs;
//! - `SA_RESETHAND`: before the first call, the saved disposition becomes `SIG_DFL` (once,
//!   whichever thread gets there first), as the kernel resets a one-shot handler; our handler
//!   stays installed, so probes keep working;
//! - `SIG_DFL`, and `SIG_IGN` for a fault (the kernel forces the default then): the default
//!   action. Only the kernel can dump core, so the disposition is set to `SIG_DFL` and the
//!   signal is queued again to the thread with its own siginfo; it arrives as the handler
//!   returns. A sent signal to the init process of a pid namespace (pid 1 there, e.g. a
//!   container's main process) is left alone, as the kernel would drop it;
//! - `SIG_IGN` for a sent signal: nothing.
//!
//! A previous handler that resets its own disposition to `SIG_DFL` or `SIG_IGN` and returns
//! (Rust's std handler does so for any fault outside a stack guard page, so that the fault,
//! executed again, kills) replaces *our* handler with that `rt_sigaction`. The crate then takes
//! that disposition as the saved one and puts its handler back: stray signals meet what the
//! application set, and probes keep working. Consequently `kill(getpid(), SIGSEGV)` in a Rust
//! program is survived once, with or without this crate (std's handler swallows it and
//! restores the default), and the next one kills.
//!
//! Everything the handler does is async-signal-safe and makes only raw syscalls: no libc
//! wrapper that a sanitizer could intercept, and `errno` is never written.
//!
//! The stack, the restart of an interrupted syscall and, where it is safe, the mask are the
//! kernel's own: the crate's action carries the previous handler's `SA_ONSTACK` and
//! `SA_RESTART` (see the `handler` module for why this design and not a stack switch). A
//! probe's fault is proven by `si_addr`: it lies in the bytes the load at that PC accesses
//! (decoded from the instruction), so a sent signal with a fault's `si_code` (a child's
//! `exit_signal`: `CLD_EXITED` = 1) is chained, and it counts as forced (for `SIG_IGN`) only
//! when the kernel's fault record in the frame agrees.
//!
//! Each object's table is found: the handler searches its own object's table, then those that
//! every object holding a load registered from a constructor when it was loaded (a Rust
//! `dylib` and the executable that uses it; see `handler::register_table`).
//!
//! # Caveats (the first four are also in the crate docs)
//!
//! - A thread that blocks SIGSEGV or SIGBUS is killed by the kernel on the first faulting
//!   probe; that includes a SIGSEGV/SIGBUS handler installed without `SA_NODEFER`. `install`
//!   refuses a thread that blocks them when it is called.
//! - A handler installed later must chain to ours with its three arguments (a null siginfo or
//!   ucontext cannot be a probe's fault and is chained on); one that does not chain, or that
//!   is one-shot (`SA_RESETHAND`), leaves faulting probes to kill the process.
//! - The crate installs no alternate stack. On a thread whose alternate stack cannot hold a
//!   signal frame, the kernel kills the process with SIGSEGV at the first faulting probe whose
//!   frame goes there (as for any `SA_ONSTACK` handler).
//! - Standard signals do not queue: a SIGSEGV (SIGBUS) sent with `tgkill`/`pthread_kill` to
//!   a thread in the few microseconds between one of its probes' SIGSEGV (SIGBUS) faults and
//!   its delivery is merged with that fault by the kernel and never delivered.
//! - While a chained handler that resets its own disposition runs, and until the crate has put
//!   its handler back, a faulting probe on another thread meets that disposition (usually
//!   `SIG_DFL`, which kills the process).
//! - A `SI_KERNEL` SIGSEGV that is not a general-protection fault is chained, but the kernel's
//!   trap number in the ucontext can be stale: such a signal (a failed signal frame of another
//!   signal) arriving exactly at a load instruction of a thread whose last trap was a
//!   general-protection fault is taken for the load's fault.

//! - The shared object whose copy of the crate installed the handler is pinned
//!   (`RTLD_NODELETE`) at install, and so is every object whose loads registered their table.

use core::marker::PhantomData;

use crate::range::{PageRange, USER_SPACE_LIMIT};
use crate::{Error, Prober};

cfg_if::cfg_if! {
    if #[cfg(target_arch = "x86_64")] {
        mod x86_64;
        use x86_64 as arch;
    } else if #[cfg(target_arch = "aarch64")] {
        mod aarch64;
        use aarch64 as arch;
    } else {
        mod unsupported;
        use unsupported as arch;
    }
}

cfg_if::cfg_if! {
    if #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))] {
        mod extable;
        mod handler;
        pub(crate) use handler::{Installed, install};
    } else {
        pub(crate) use unsupported::{Installed, install};
    }
}

/// The guarded loads of a [`Prober`] whose backend is
/// [`Backend::SignalGuard`](crate::Backend::SignalGuard): loads that answer `None` instead of
/// crashing when the bytes cannot be loaded (HotSpot's `SafeFetch`).
///
/// A `GuardedLoads` exists only while this copy of the crate's SIGSEGV/SIGBUS handler is
/// installed (get one from [`Prober::guarded`]), which makes every load sound for any address.
/// Each method is one load instruction inlined at the call site, plus a compare; nothing is
/// called, no `errno` is touched, and a load that faults costs one signal delivery. Like
/// every probe, they are async-signal-safe, allocation-free and lock-free, and subject to the
/// `SignalGuard` caveats (crate docs, "Limits"): a thread that blocks SIGSEGV or SIGBUS is
/// killed by the kernel at the first load that faults.
///
/// Each method answers for the bytes `[addr, addr + N)`, at any alignment: `Some` with their
/// value (native byte order) if the CPU could load them, `None` if not, and `None` without a
/// load if they reach [`USER_SPACE_LIMIT`] (as [`Prober::check`] answers such ranges). Bytes
/// that cross a page boundary are still one load: the CPU either loads them all or faults, so
/// `Some` proves both pages.
///
/// ```
/// use addrprobe::{Backend, Prober};
///
/// let prober = Prober::new(Backend::SignalGuard)?;
/// let loads = prober.guarded().expect("a SignalGuard prober");
/// let value = 0x1234_5678_9abc_def0_u64;
/// assert_eq!(loads.load_u64(&value as *const u64 as usize), Some(value));
/// assert_eq!(loads.load_u64(0), None); // NULL
/// # Ok::<(), addrprobe::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct GuardedLoads<'a> {
    installed: Installed,
    _prober: PhantomData<&'a Prober>,
}

/// The widest guarded load.
const MAX_LOAD: usize = 8;
/// The most bytes `check` and `read` answer inline: one load (check) or one pair (read).
const MAX_SMALL: usize = 16;
/// A block that lies within one page whatever the page size (Linux pages are 4 KiB or a
/// multiple), so a range inside one needs no page size to be known to be inside one page.
const BLOCK: usize = 4096;

impl Prober {
    /// The guarded loads of this prober, if its backend is
    /// [`Backend::SignalGuard`](crate::Backend::SignalGuard) (whose handler is then installed):
    /// `None` for every other backend. Async-signal-safe: it reads the prober's state only.
    #[inline(always)]
    pub fn guarded(&self) -> Option<GuardedLoads<'_>> {
        match self.state {
            crate::backend::State::SignalGuard(installed) => Some(GuardedLoads {
                installed,
                _prober: PhantomData,
            }),
            _ => None,
        }
    }
}

impl GuardedLoads<'_> {
    /// The byte at `addr`, if the CPU could load it.
    #[inline(always)]
    pub fn load_u8(self, addr: usize) -> Option<u8> {
        if addr > USER_SPACE_LIMIT - 1 {
            return None;
        }
        arch::load_u8(self.installed, addr)
    }

    /// The 4 bytes at `addr` (any alignment), if the CPU could load them.
    #[inline(always)]
    pub fn load_u32(self, addr: usize) -> Option<u32> {
        if addr > USER_SPACE_LIMIT - 4 {
            return None;
        }
        arch::load_u32(self.installed, addr)
    }

    /// The 8 bytes at `addr` (any alignment), if the CPU could load them.
    #[inline(always)]
    pub fn load_u64(self, addr: usize) -> Option<u64> {
        if addr > USER_SPACE_LIMIT - 8 {
            return None;
        }
        arch::load_u64(self.installed, addr)
    }

    /// The 16 bytes at `addr` (any alignment) as two `u64`s, those at `addr` and at
    /// `addr + 8`, if the CPU could load them all: a frame record (saved frame pointer, return
    /// address) in one call. Two load instructions with one flag, so it costs less than two
    /// [`load_u64`](Self::load_u64); a fault of either is one signal delivery.
    #[inline(always)]
    pub fn load_u64_pair(self, addr: usize) -> Option<[u64; 2]> {
        if addr > USER_SPACE_LIMIT - 16 {
            return None;
        }
        arch::load_u64_pair(self.installed, addr)
    }

    /// Whether `[addr, addr + len)` is 1 to 16 bytes inside one 4 KiB block below
    /// `USER_SPACE_LIMIT`: the ranges [`Prober::check`] and [`Prober::read`] answer inline.
    /// (`addr + len` cannot wrap then.)
    #[inline(always)]
    fn small(addr: usize, len: usize) -> bool {
        len.wrapping_sub(1) < MAX_SMALL
            && addr < USER_SPACE_LIMIT - MAX_SMALL
            && (addr & (BLOCK - 1)) + len <= BLOCK
    }

    /// [`Prober::check`] of a small range (see `small`): one byte load at `addr`, which
    /// answers for its page (the crate's rule: one byte per page, the first at `addr`).
    /// `None` for any other range.
    #[inline(always)]
    pub(crate) fn check_small(self, addr: usize, len: usize) -> Option<bool> {
        if !Self::small(addr, len) {
            return None;
        }
        Some(arch::load_u8(self.installed, addr).is_some())
    }

    /// [`Prober::read`] of a small range (see `small`): one 8-byte load for 8 bytes, one pair
    /// for 16, else the fewest loads of 8, 4, 2 and 1 bytes that cover exactly the range. No
    /// byte outside the range is loaded: a neighbouring byte can fault where the range does
    /// not (an MTE granule with another tag). `None` for any other range.
    #[inline(always)]
    pub(crate) fn read_small(self, addr: usize, dst: &mut [u8]) -> Option<bool> {
        if !Self::small(addr, dst.len()) {
            return None;
        }
        if let Ok(dst8) = <&mut [u8; MAX_LOAD]>::try_from(&mut *dst) {
            let v = arch::load_u64(self.installed, addr);
            return Some(v.map(|v| *dst8 = v.to_ne_bytes()).is_some());
        }
        if let Ok(dst16) = <&mut [u8; MAX_SMALL]>::try_from(&mut *dst) {
            let Some([lo, hi]) = arch::load_u64_pair(self.installed, addr) else {
                return Some(false);
            };
            dst16[..MAX_LOAD].copy_from_slice(&lo.to_ne_bytes());
            dst16[MAX_LOAD..].copy_from_slice(&hi.to_ne_bytes());
            return Some(true);
        }
        Some(load_exact(self.installed, addr, dst))
    }
}

/// Copies `[addr, addr + dst.len())` into `dst` with guarded loads of 8, 4, 2 and 1 bytes,
/// largest first, each inside the range: no byte outside it is loaded. `false` at the first
/// load that faults. The caller keeps the range inside one page (or 4 KiB block) per call.
#[inline(always)]
fn load_exact(installed: Installed, addr: usize, dst: &mut [u8]) -> bool {
    let mut off = 0;
    while off < dst.len() {
        let a = addr + off;
        let n = match dst.len() - off {
            8.. => {
                let Some(v) = arch::load_u64(installed, a) else {
                    return false;
                };
                dst[off..off + 8].copy_from_slice(&v.to_ne_bytes());
                8
            }
            4.. => {
                let Some(v) = arch::load_u32(installed, a) else {
                    return false;
                };
                dst[off..off + 4].copy_from_slice(&v.to_ne_bytes());
                4
            }
            2.. => {
                let Some(v) = arch::load_u16(installed, a) else {
                    return false;
                };
                dst[off..off + 2].copy_from_slice(&v.to_ne_bytes());
                2
            }
            _ => {
                let Some(v) = arch::load_u8(installed, a) else {
                    return false;
                };
                dst[off] = v;
                1
            }
        };
        off += n;
    }
    true
}

/// One guarded byte load per page of `r`.
///
/// Out of line: its loads then lie in this crate's own object, whose table the installed
/// handler always searches, whatever object calls it.
#[inline(never)]
pub(crate) fn check(installed: Installed, r: &PageRange) -> Result<bool, Error> {
    for point in r.probe_points() {
        if arch::load_u8(installed, point).is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies `r` into `dst` with guarded loads, page by page: 8 bytes at a time, the last 1 to 7
/// bytes of a page's piece with loads of 4, 2 and 1 bytes inside it (see `load_exact`), so
/// that no byte outside the range is loaded.
///
/// Out of line, like `check`: its loads then lie in this crate's own object, whose table the
/// installed handler always searches, whatever object calls it.
#[inline(never)]
pub(crate) fn read(installed: Installed, r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
    let mut off = 0;
    for (start, len) in r.page_chunks() {
        if !load_exact(installed, start, &mut dst[off..off + len]) {
            return Ok(false);
        }
        off += len;
    }
    Ok(true)
}
