//! The x86_64 guarded loads and the SIGSEGV/SIGBUS handler (see the parent module).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;

/// Returned in `rax:rdx` by the load functions (SysV: a 16-byte struct of two INTEGERs).
#[repr(C)]
struct Loaded {
    value: u64,
    faulted: u64,
}

/// Loads one byte. The load is the function's first instruction (after a possible
/// `endbr64`), and the only one that can fault.
#[unsafe(naked)]
unsafe extern "sysv64" fn load_u8(_addr: usize) -> Loaded {
    core::arch::naked_asm!("movzx eax, byte ptr [rdi]", "xor edx, edx", "ret",)
}

/// Loads eight bytes; `addr` must not cross a page boundary.
#[unsafe(naked)]
unsafe extern "sysv64" fn load_u64(_addr: usize) -> Loaded {
    core::arch::naked_asm!("mov rax, qword ptr [rdi]", "xor edx, edx", "ret",)
}

/// Where the handler resumes a faulted load: returns `Loaded { value: 0, faulted: 1 }` to the
/// load's caller. Never called directly.
#[unsafe(naked)]
unsafe extern "sysv64" fn fault_continuation() -> Loaded {
    core::arch::naked_asm!("xor eax, eax", "mov edx, 1", "ret",)
}

/// Bytes from a load function's start within which a fault is the load's: `endbr64` (4) plus
/// the load instruction (at most 5).
const LOAD_WINDOW: usize = 9;

struct SavedAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written once inside `INSTALL` before the handler that reads it is installed, and
// never written again.
unsafe impl Sync for SavedAction {}

static PREVIOUS: [SavedAction; 2] = [
    SavedAction(UnsafeCell::new(MaybeUninit::uninit())),
    SavedAction(UnsafeCell::new(MaybeUninit::uninit())),
];
static SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);
static INSTALL_ERRNO: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);

/// Installs the handler for SIGSEGV and SIGBUS, once per process, from any number of threads.
pub(crate) fn install() -> Result<(), Error> {
    INSTALL.call_once(|| {
        for (sig, saved) in SIGNALS.iter().zip(&PREVIOUS) {
            // SAFETY: sigaction with a NULL new action only reads the current one into
            // `saved`, which nobody reads before INSTALLED... and before our handler exists.
            if unsafe { libc::sigaction(*sig, core::ptr::null(), (*saved.0.get()).as_mut_ptr()) }
                != 0
            {
                INSTALL_ERRNO.store(crate::sys::last_errno(), Ordering::Relaxed);
                return;
            }
        }
        for sig in SIGNALS {
            // The full mask keeps every other signal out while the handler runs on the
            // (small) alternate stack. With an empty mask, a SIGPROF pending when a probe
            // faults is delivered on top of our frame, on the alternate stack; a profiler
            // handler that probes there faults again, and the third frame overflows the
            // alternate stack, which kills the process (tests/concurrency.rs,
            // sigprof_handlers_probe_at_10khz). Blocked, it arrives after we return, on the
            // thread's own stack.
            //
            // SAFETY: an all-zero sigaction is valid; we set the handler, flags and a full
            // mask. `handler` has the SA_SIGINFO signature.
            let ret = unsafe {
                let mut action: libc::sigaction = core::mem::zeroed();
                action.sa_sigaction = handler as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
                libc::sigfillset(&mut action.sa_mask);
                libc::sigaction(sig, &action, core::ptr::null_mut())
            };
            if ret != 0 {
                INSTALL_ERRNO.store(crate::sys::last_errno(), Ordering::Relaxed);
                return;
            }
        }
        INSTALLED.store(true, Ordering::Release);
    });
    if INSTALLED.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(Error::Unavailable {
            backend: Backend::SignalGuard,
            errno: Some(INSTALL_ERRNO.load(Ordering::Relaxed)),
            reason: "sigaction(SIGSEGV/SIGBUS) failed",
        })
    }
}

/// Whether the faulting PC belongs to one of our loads.
#[inline(always)]
fn is_probe_pc(pc: usize) -> bool {
    let u8_start = load_u8 as *const () as usize;
    let u64_start = load_u64 as *const () as usize;
    (u8_start..u8_start + LOAD_WINDOW).contains(&pc)
        || (u64_start..u64_start + LOAD_WINDOW).contains(&pc)
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext to an SA_SIGINFO handler.
    unsafe {
        let uc = ctx.cast::<libc::ucontext_t>();
        let from_kernel = (*info).si_code > 0;
        let pc = (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
        if from_kernel && is_probe_pc(pc) {
            (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] =
                fault_continuation as *const () as usize as i64;
            return;
        }
        chain(sig, info, ctx);
    }
}

/// Hands a fault that is not a probe's to the previous disposition.
///
/// # Safety
/// Must be called from `handler` with its arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let index = if sig == libc::SIGSEGV { 0 } else { 1 };
    // SAFETY: PREVIOUS[index] was initialised before the handler was installed.
    let previous = unsafe { (*PREVIOUS[index].0.get()).assume_init_ref() };
    // SAFETY: `info` is the kernel's siginfo.
    let from_kernel = unsafe { (*info).si_code } > 0;
    let target = previous.sa_sigaction;
    if target == libc::SIG_DFL || (target == libc::SIG_IGN && from_kernel) {
        // Restore the default. A hardware fault re-executes the instruction and kills with
        // the right signal and core dump; a sent signal is raised again (it is blocked while
        // we run, so it is delivered as soon as we return).
        // SAFETY: sigaction and raise are async-signal-safe; an all-zero action is SIG_DFL.
        unsafe {
            let mut dfl: libc::sigaction = core::mem::zeroed();
            libc::sigemptyset(&mut dfl.sa_mask);
            libc::sigaction(sig, &dfl, core::ptr::null_mut());
            if !from_kernel {
                libc::raise(sig);
            }
        }
        return;
    }
    if target == libc::SIG_IGN {
        return;
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO the saved address is a three-argument handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { core::mem::transmute(target) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the saved address is a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { core::mem::transmute(target) };
        f(sig);
    }
    if !from_kernel {
        // A previous handler that resets the disposition to SIG_DFL and returns (Rust std's
        // does, for any fault outside a guard page) relies on the faulting instruction
        // running again to kill the process. A sent signal re-executes nothing, so it would
        // be swallowed, and our handler would be gone too. Raise it again: it is blocked
        // while we run and kills as soon as we return.
        // SAFETY: sigaction with a NULL new action only reads the current one; raise is
        // async-signal-safe.
        unsafe {
            let mut now = MaybeUninit::<libc::sigaction>::zeroed();
            if libc::sigaction(sig, core::ptr::null(), now.as_mut_ptr()) == 0
                && now.assume_init().sa_sigaction == libc::SIG_DFL
            {
                libc::raise(sig);
            }
        }
    }
}

/// One guarded byte load per page of `r`.
#[inline]
pub(crate) fn check(r: &PageRange) -> Result<bool, Error> {
    for point in r.probe_points() {
        // SAFETY: the handler is installed (Prober::new did it); a faulting load returns
        // `faulted = 1` through `fault_continuation` instead of crashing.
        if unsafe { load_u8(point) }.faulted != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies `r` into `dst` with guarded loads: 8 bytes at a time where aligned, else 1.
#[inline]
pub(crate) fn read(r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
    let mut off = 0;
    for (start, len) in r.page_chunks() {
        let end = start + len;
        let mut a = start;
        while a < end {
            if a % 8 == 0 && end - a >= 8 {
                // SAFETY: the handler is installed; an aligned 8-byte load never crosses a
                // page, and a fault returns `faulted = 1`.
                let got = unsafe { load_u64(a) };
                if got.faulted != 0 {
                    return Ok(false);
                }
                dst[off..off + 8].copy_from_slice(&got.value.to_ne_bytes());
                a += 8;
                off += 8;
            } else {
                // SAFETY: the handler is installed; a fault returns `faulted = 1`.
                let got = unsafe { load_u8(a) };
                if got.faulted != 0 {
                    return Ok(false);
                }
                dst[off] = got.value as u8;
                a += 1;
                off += 1;
            }
        }
    }
    Ok(true)
}
