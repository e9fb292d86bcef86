//! A guarded load (HotSpot `SafeFetch` style): proves the **CPU could load** the bytes.
//!
//! The probe is one load instruction at a known PC, in a naked function:
//!
//! ```text
//! load_u8:   movzx eax, byte ptr [rdi]   ; the only instruction that can fault
//!            xor   edx, edx              ; "no fault"
//!            ret
//! fault_continuation:
//!            xor   eax, eax
//!            mov   edx, 1                ; "fault"
//!            ret
//! ```
//!
//! A SIGSEGV/SIGBUS handler, installed once per process with `SA_SIGINFO | SA_ONSTACK`,
//! looks at the interrupted PC. If it lies inside a load function and the signal came from
//! the kernel (`si_code > 0`), it sets the PC to `fault_continuation`, which returns "fault" to
//! the load's caller (the stack is exactly as it was at the load). Every other fault is
//! chained to the disposition that was installed before: a previous handler is called with
//! the same arguments; a default disposition is restored so that a stray fault still kills
//! (and Rust's "has overflowed its stack" message, printed by std's own handler, still
//! appears); `kill(getpid(), SIGSEGV)` is re-raised, not swallowed.
//!
//! The functions are ordinary (mangled, crate-local) Rust items, so two copies of the crate
//! can link into one program. The non-fault path costs a call and one load (~1.4 ns); a fault
//! costs a signal delivery (~2 µs). Other architectures compile and report unavailable.
//!
//! Caveats, also in the crate docs: a thread that blocks SIGSEGV or SIGBUS is killed by the
//! kernel on the first faulting probe, and a library that later replaces this handler
//! without chaining to it makes faulting probes crash.

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
