//! A guarded load (HotSpot `SafeFetch` style): proves the **CPU could load** the bytes.
//!
//! The probe is one load instruction at a known PC. The loads and their continuation live in
//! one naked function's body and are reached through the addresses of local labels:
//!
//! ```text
//! u8_entry:     endbr64
//! u8_load:      movzx eax, byte ptr [rdi]   ; the only instruction that can fault
//!               xor   edx, edx              ; "no fault"
//!               ret
//! continuation: xor   eax, eax
//!               mov   edx, 1                ; "fault"
//!               ret
//! ```
//!
//! (and the same with an 8-byte `mov` for `read`). A SIGSEGV/SIGBUS handler, installed once
//! per process with `SA_SIGINFO | SA_ONSTACK` and a full `sa_mask`, takes a signal for a
//! probe's fault only if the interrupted PC *equals* one of the two load instructions (no
//! window around a function's start) and the signal is that instruction's fault: `si_code > 0`
//! (never `kill`, `tgkill` or `sigqueue`), not an asynchronous machine-check report
//! (`BUS_MCEERR_AO`), and for `SI_KERNEL` only a general-protection fault (a non-canonical
//! address). It then sets the PC to the continuation, which returns "fault" to the load's
//! caller (the stack is exactly as it was at the load). No global symbol is defined, so two
//! copies of the crate link into one program.
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
//!   the kernel passes all three on x86_64 too) and runs with the thread's signal mask set to
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
//! What is not emulated: the stack. A chained handler runs on the stack our handler runs on:
//! the thread's alternate signal stack if it has one, else the interrupted stack. A previous
//! handler installed without `SA_ONSTACK` therefore also runs on the alternate stack, which
//! must have room for it (and for one more signal frame if it probes). Nor `SA_RESTART`: a
//! *sent* SIGSEGV or SIGBUS that interrupts a slow syscall restarts it as if the previous
//! handler had `SA_RESTART` (faults interrupt no syscall).
//!
//! The non-fault path costs an indirect call and one load; a fault costs a signal delivery
//! (~2 µs). Other architectures compile and report unavailable.
//!
//! # Caveats (the first four are also in the crate docs)
//!
//! - A thread that blocks SIGSEGV or SIGBUS is killed by the kernel on the first faulting
//!   probe; that includes a SIGSEGV/SIGBUS handler installed without `SA_NODEFER`.
//! - A handler installed later must chain to ours with its three arguments (a null siginfo or
//!   ucontext cannot be a probe's fault and is chained on); one that does not chain, or that
//!   is one-shot (`SA_RESETHAND`), leaves faulting probes to kill the process.
//! - The crate installs no alternate stack. On a thread whose alternate stack cannot hold a
//!   signal frame, the kernel kills the process with SIGSEGV at the first faulting probe (as
//!   for any `SA_ONSTACK` handler).
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

cfg_if::cfg_if! {
    if #[cfg(target_arch = "x86_64")] {
        mod x86_64;
        pub(crate) use x86_64::{check, install, read};
    } else {
        use crate::range::PageRange;
        use crate::backend_kind::Backend;
        use crate::error::Error;

        /// This architecture has no guarded load yet.
        pub(crate) fn install() -> Result<(), Error> {
            Err(Error::Unavailable {
                backend: Backend::SignalGuard,
                errno: Some(libc::ENOSYS),
                reason: "no guarded load is implemented for this architecture",
            })
        }

        pub(crate) fn check(_r: &PageRange) -> Result<bool, Error> {
            install().map(|_| false)
        }

        pub(crate) fn read(_r: &PageRange, _dst: &mut [u8]) -> Result<bool, Error> {
            install().map(|_| false)
        }
    }
}
