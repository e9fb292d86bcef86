//! The SIGSEGV/SIGBUS handler, its installation and the chaining of every signal that is not a
//! guarded load's fault (see the parent module). Architecture-independent: the architecture
//! module supplies the raw syscall, the restorer, the exception table and the access to the
//! interrupted context.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

use super::arch::{self, syscall4};
use crate::{Backend, Error};

/// Proof that this copy of the crate's handler is installed: only [`install`] make one, after both signals' handlers are in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Installed(());

/// The proof, if the handler is installed.
#[inline(always)]
pub(crate) fn installed() -> Option<Installed> {
    INSTALLED.load(Ordering::Acquire).then_some(Installed(()))
}

/// The kernel's `struct sigaction` on x86_64 and arm64 (`asm-generic` with `sa_restorer`), as
/// `rt_sigaction` reads and writes it.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// `rt_sigaction(sig, new, old, 8)`; 0 or `-errno`.
///
/// # Safety
/// `new` and `old` must each be null or valid.
#[inline(always)]
unsafe fn rt_sigaction(
    sig: libc::c_int,
    new: *const KernelSigaction,
    old: *mut KernelSigaction,
) -> isize {
    // SAFETY: the caller vouches for the pointers; the size is the kernel's sigset (8 bytes).
    unsafe {
        syscall4(
            libc::SYS_rt_sigaction,
            sig as usize,
            new as usize,
            old as usize,
            8,
        )
    }
}

/// `rt_sigprocmask(how, new, old, 8)` on the calling thread.
///
/// # Safety
/// `new` and `old` must each be null or valid.
#[inline(always)]
unsafe fn rt_sigprocmask(how: libc::c_int, new: *const u64, old: *mut u64) -> isize {
    // SAFETY: the caller vouches for the pointers; the size is the kernel's sigset (8 bytes).
    unsafe {
        syscall4(
            libc::SYS_rt_sigprocmask,
            how as usize,
            new as usize,
            old as usize,
            8,
        )
    }
}

/// The bit of `sig` in a kernel signal set.
#[inline(always)]
fn bit(sig: libc::c_int) -> u64 {
    1u64 << (sig - 1)
}

/// The action this crate installs for SIGSEGV and SIGBUS.
fn our_action() -> KernelSigaction {
    KernelSigaction {
        handler: handler as *const () as usize,
        // The full mask keeps every other signal out while the handler runs on the (small)
        // alternate stack. With an empty mask, a SIGPROF pending when a probe faults is
        // delivered on top of our frame, on the alternate stack; a profiler handler that
        // probes there faults again, and the third frame overflows the alternate stack,
        // which kills the process (tests/concurrency.rs, sigprof_handlers_probe_at_10khz).
        // Blocked, it arrives after we return, on the thread's own stack. A chained handler
        // runs with the mask the kernel would have given it instead (see `chain`).
        flags: (libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART) as u64
            | arch::RESTORER_FLAGS,
        restorer: arch::restorer(),
        mask: !0,
    }
}

/// The disposition that was in place before ours, for one signal.
struct Previous {
    /// `NOT_INSTALLED`, `INSTALLING`, `READY` or `FAILED`.
    state: AtomicU8,
    /// The handler address, `SIG_DFL` or `SIG_IGN`. Only ever changes to `SIG_DFL` or
    /// `SIG_IGN` (an emulated `SA_RESETHAND`, or a previous handler that reset its own
    /// disposition), so `flags` and `mask` never need to change with it.
    handler: AtomicUsize,
    flags: AtomicU64,
    mask: AtomicU64,
}

const NOT_INSTALLED: u8 = 0;
const INSTALLING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

impl Previous {
    const fn new() -> Previous {
        Previous {
            state: AtomicU8::new(NOT_INSTALLED),
            handler: AtomicUsize::new(0),
            flags: AtomicU64::new(0),
            mask: AtomicU64::new(0),
        }
    }
}

static PREVIOUS: [Previous; 2] = [Previous::new(), Previous::new()];
static SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);
static INSTALL_ERRNO: AtomicI32 = AtomicI32::new(0);

fn previous(sig: libc::c_int) -> Option<&'static Previous> {
    match sig {
        libc::SIGSEGV => Some(&PREVIOUS[0]),
        libc::SIGBUS => Some(&PREVIOUS[1]),
        _ => None,
    }
}

/// Installs the handler for SIGSEGV and SIGBUS, once per process, from any number of threads.
///
/// Each signal's handler goes in with one `rt_sigaction(sig, &ours, &old)`: the kernel swaps
/// the dispositions atomically, so a handler that another thread installs at the same moment
/// is either the one we saved (and chain to) or the one that replaced ours. Every signal is
/// blocked on this thread meanwhile, so that no handler can run here between the swap and
/// the publication of `old`; a handler on another thread that needs `old` before then waits
/// for it.
pub(crate) fn install() -> Result<Installed, Error> {
    INSTALL.call_once(|| {
        let all: u64 = !0;
        let mut saved_mask: u64 = 0;
        // SAFETY: valid pointers to 8-byte sets.
        unsafe { rt_sigprocmask(libc::SIG_SETMASK, &all, &mut saved_mask) };
        let ours = our_action();
        let mut ok = true;
        for sig in SIGNALS {
            let prev = previous(sig).expect("SIGSEGV or SIGBUS");
            prev.state.store(INSTALLING, Ordering::SeqCst);
            let mut old = KernelSigaction::default();
            // SAFETY: valid pointers; `ours` names an SA_SIGINFO handler and a restorer.
            let ret = unsafe { rt_sigaction(sig, &ours, &mut old) };
            if ret != 0 {
                prev.state.store(FAILED, Ordering::Release);
                INSTALL_ERRNO.store(-ret as i32, Ordering::Relaxed);
                ok = false;
                break;
            }
            prev.handler.store(old.handler, Ordering::Relaxed);
            prev.flags.store(old.flags, Ordering::Relaxed);
            prev.mask.store(old.mask, Ordering::Relaxed);
            prev.state.store(READY, Ordering::Release);
        }
        // SAFETY: a valid pointer to an 8-byte set.
        unsafe { rt_sigprocmask(libc::SIG_SETMASK, &saved_mask, core::ptr::null_mut()) };
        // The loads may fault from now on: both handlers are in.
        INSTALLED.store(ok, Ordering::Release);
    });
    if let Some(installed) = installed() {
        Ok(installed)
    } else {
        Err(Error::Unavailable {
            backend: Backend::SignalGuard,
            errno: Some(INSTALL_ERRNO.load(Ordering::Relaxed)),
            reason: "rt_sigaction(SIGSEGV/SIGBUS) failed",
        })
    }
}

/// The SIGSEGV/SIGBUS handler: a fault of a guarded load (its PC is exactly an entry's load PC
/// in this object's exception table, and the signal is that instruction's own fault) resumes
/// at the entry's continuation with the flag register set; every other signal is chained.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // A handler installed after ours may call us with null pointers: then we cannot tell, and
    // chain.
    if !info.is_null() && !ctx.is_null() && (sig == libc::SIGSEGV || sig == libc::SIGBUS) {
        // SAFETY: the kernel (or a handler that chains to us with its arguments) passes a
        // valid siginfo and ucontext.
        unsafe {
            if arch::is_instruction_fault(sig, info, ctx)
                && let Some(cont) = arch::table().continuation(arch::pc(ctx), arch::MAX_INSN)
            {
                arch::resume_faulted(ctx, cont);
                return;
            }
        }
    }
    // SAFETY: called from the handler with its own arguments.
    unsafe { chain(sig, info, ctx) }
}

/// Hands a signal that is not a probe's fault to the disposition that was installed before
/// ours, the way the kernel would have delivered it there:
///
/// - a handler is called with the same three arguments (a one-argument handler ignores the
///   other two, as with the kernel, which passes them in the same registers), with the
///   thread's signal mask set to the interrupted context's mask (`uc_sigmask`) plus the
///   handler's `sa_mask` plus the signal itself unless `SA_NODEFER`, and restored afterwards;
/// - `SA_RESETHAND`: the saved disposition becomes `SIG_DFL` before the first call, once,
///   whichever thread gets there first; our handler stays installed;
/// - `SIG_DFL`, and `SIG_IGN` for a fault (the kernel forces the default then): the default
///   action, termination with a core dump, see `default_action`;
/// - `SIG_IGN` for a sent signal: nothing.
///
/// No `errno` is written: every syscall here is raw.
///
/// # Safety
/// Must be called from `handler` with its arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(prev) = previous(sig) else {
        return;
    };
    // Another thread may be inside `install`'s rt_sigaction: wait until it has published
    // what it replaced (it runs with every signal blocked, so it is not waiting for us).
    loop {
        match prev.state.load(Ordering::Acquire) {
            READY => break,
            INSTALLING => {
                // SAFETY: sched_yield has no arguments.
                unsafe { syscall4(libc::SYS_sched_yield, 0, 0, 0, 0) };
            }
            // Not installed by us for this signal: nobody to hand it to.
            _ => return,
        }
    }
    // Whether the kernel forced this signal on the thread (a fault: `force_sig_fault` and
    // friends, `si_code > 0`), which ignores `SIG_IGN`. An asynchronous machine-check report
    // (`BUS_MCEERR_AO`) is sent like `kill`, and an ignored one is dropped.
    let code = if info.is_null() {
        0
    } else {
        // SAFETY: `info` is not null, so it is the kernel's valid siginfo.
        unsafe { (*info).si_code }
    };
    let forced = code > 0 && !(sig == libc::SIGBUS && code == libc::BUS_MCEERR_AO);
    let flags = prev.flags.load(Ordering::Relaxed);
    let target = loop {
        let h = prev.handler.load(Ordering::Acquire);
        if h == libc::SIG_DFL || (h == libc::SIG_IGN && forced) {
            // SAFETY: from the handler, with its arguments.
            unsafe { default_action(sig, info, forced) };
            return;
        }
        if h == libc::SIG_IGN {
            return;
        }
        if flags & libc::SA_RESETHAND as u64 != 0
            && prev
                .handler
                .compare_exchange(h, libc::SIG_DFL, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            // Another thread's delivery took the one-shot handler: look again.
            continue;
        }
        break h;
    };

    let interrupted = if ctx.is_null() {
        // Called by a later handler without its ucontext: the mask the kernel gave that
        // handler is the best estimate of the interrupted one.
        let mut now = 0u64;
        // SAFETY: a valid pointer to an 8-byte set.
        unsafe { rt_sigprocmask(libc::SIG_BLOCK, core::ptr::null(), &mut now) };
        now
    } else {
        // SAFETY: `ctx` is the kernel's ucontext; the first 8 bytes of `uc_sigmask` are the
        // kernel's signal set.
        unsafe {
            core::ptr::read_unaligned(
                core::ptr::addr_of!((*ctx.cast::<libc::ucontext_t>()).uc_sigmask).cast::<u64>(),
            )
        }
    };
    let mut blocked = interrupted | prev.mask.load(Ordering::Relaxed);
    if flags & libc::SA_NODEFER as u64 == 0 {
        blocked |= bit(sig);
    }
    let mut ours = 0u64;
    // SAFETY: valid pointers to 8-byte sets; the kernel drops SIGKILL and SIGSTOP itself.
    unsafe { rt_sigprocmask(libc::SIG_SETMASK, &blocked, &mut ours) };
    // SAFETY: the saved address is a signal handler. The kernel passes every handler three
    // arguments in the first three argument registers (x86_64: rdi, rsi, rdx; arm64: x0, x1,
    // x2); a one-argument handler reads only the first.
    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
        unsafe { core::mem::transmute(target) };
    f(sig, info, ctx);
    // SAFETY: a valid pointer to an 8-byte set.
    unsafe { rt_sigprocmask(libc::SIG_SETMASK, &ours, core::ptr::null_mut()) };
    // SAFETY: from the handler, all signals blocked again.
    unsafe { adopt_reset(sig, prev) };
}

/// A previous handler may reset its own disposition and return (Rust's std does, for a fault
/// outside a stack guard page: it restores `SIG_DFL` so that the fault, executed again, kills).
/// Without this crate that would be the process's disposition from now on; with it, that
/// `rt_sigaction` has replaced *our* handler. So a `SIG_DFL` or `SIG_IGN` found in place of
/// ours becomes our saved disposition, and ours goes back in: stray signals meet what the
/// application set, and probes keep working. A real handler found in place of ours (installed
/// by the previous handler or by another thread) is left alone: the kernel calls it first, as
/// it would without us.
///
/// # Safety
/// Only from `chain`, after the previous handler returned.
unsafe fn adopt_reset(sig: libc::c_int, prev: &Previous) {
    let mut now = KernelSigaction::default();
    // SAFETY: a valid pointer; a null new action only reads.
    if unsafe { rt_sigaction(sig, core::ptr::null(), &mut now) } != 0 {
        return;
    }
    if now.handler != libc::SIG_DFL && now.handler != libc::SIG_IGN {
        return;
    }
    // The disposition the previous handler left is what the kernel would use from now on.
    prev.handler.store(now.handler, Ordering::Release);
    let ours = our_action();
    let mut replaced = KernelSigaction::default();
    // SAFETY: valid pointers; `ours` names an SA_SIGINFO handler and a restorer.
    if unsafe { rt_sigaction(sig, &ours, &mut replaced) } != 0 {
        return;
    }
    if replaced.handler != now.handler {
        // Another thread installed something in between: it stays.
        // SAFETY: valid pointer; putting back exactly what the kernel gave us.
        unsafe { rt_sigaction(sig, &replaced, core::ptr::null_mut()) };
    }
}

/// The default action of SIGSEGV and SIGBUS, termination with a core dump, which only the
/// kernel can carry out and only with the disposition at `SIG_DFL`. So the disposition is set
/// to `SIG_DFL` and the signal is queued again to this thread with its own siginfo; it is
/// blocked while we run and is delivered as we return, before the interrupted code runs again.
/// A fault would also execute again and fault under `SIG_DFL`.
///
/// The init process of a pid namespace (pid 1 there, e.g. a container's main process) is not
/// killed by a signal that is merely sent while its disposition is `SIG_DFL`: the kernel drops
/// it at delivery. So for a sent signal there nothing is done at all, as nothing happens
/// without us either, and our handler stays. A fault is forced by the kernel and kills even
/// there: the queued copy is dropped, but the instruction executes again and faults.
///
/// # Safety
/// From the handler, with its arguments.
unsafe fn default_action(sig: libc::c_int, info: *mut libc::siginfo_t, forced: bool) {
    // SAFETY: getpid and gettid have no arguments.
    let (pid, tid) = unsafe {
        (
            syscall4(libc::SYS_getpid, 0, 0, 0, 0) as usize,
            syscall4(libc::SYS_gettid, 0, 0, 0, 0) as usize,
        )
    };
    if pid == 1 && !forced {
        return;
    }
    let dfl = KernelSigaction::default();
    // SAFETY: a valid pointer to an all-zero action (SIG_DFL).
    unsafe { rt_sigaction(sig, &dfl, core::ptr::null_mut()) };
    let queued = !info.is_null()
        // SAFETY: `info` is valid; sending to our own thread with any si_code is allowed.
        && unsafe {
            syscall4(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig as usize, info as usize)
        } == 0;
    if !queued {
        // SAFETY: plain arguments.
        unsafe { syscall4(libc::SYS_tgkill, pid, tid, sig as usize, 0) };
    }
}
