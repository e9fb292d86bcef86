//! The x86_64 guarded loads and the SIGSEGV/SIGBUS handler (see the parent module).

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;

/// Returned in `rax:rdx` by the loads (SysV: a 16-byte struct of two INTEGERs).
#[repr(C)]
struct Loaded {
    value: u64,
    faulted: u64,
}

/// A guarded load: `addr` in `rdi`, `Loaded` in `rax:rdx`.
type LoadFn = unsafe extern "sysv64" fn(addr: usize) -> Loaded;

/// The addresses of the guarded code, as [`code_addresses`] reports them.
#[repr(C)]
#[derive(Default)]
struct CodeAddresses {
    /// Where a one-byte load is called (an `endbr64`).
    u8_entry: usize,
    /// Its load instruction: the only PC at which a fault is the probe's.
    u8_load: usize,
    /// Where an eight-byte load is called (an `endbr64`).
    u64_entry: usize,
    /// Its load instruction.
    u64_load: usize,
    /// Where the handler resumes a faulted load.
    continuation: usize,
}

/// Writes the addresses of the guarded code into `*out`; the code itself lies in this
/// function's body, after its `ret`, and is only reached through those addresses:
///
/// ```text
/// u8_entry:     endbr64
/// u8_load:      movzx eax, byte ptr [rdi]   ; the only instruction that can fault
///               xor   edx, edx              ; "no fault"
///               ret
/// u64_entry:    endbr64
/// u64_load:     mov   rax, qword ptr [rdi]  ; `rdi` 8-aligned: never crosses a page
///               xor   edx, edx
///               ret
/// continuation: xor   eax, eax              ; the handler resumes a faulted load here,
///               mov   edx, 1                ; with the stack exactly as at the load:
///               ret                         ; returns "fault" to the load's caller
/// ```
///
/// The load instructions carry local labels, so the handler compares the faulting PC with
/// their exact addresses (no window around a function's start, whatever the compiler puts
/// there), and no global symbol is defined: two copies of the crate link into one program.
/// The `endbr64` makes the indirect calls valid under indirect-branch tracking and is a no-op
/// elsewhere.
///
/// # Safety
/// `out` must be valid for writing a `CodeAddresses`.
#[unsafe(naked)]
unsafe extern "sysv64" fn code_addresses(out: *mut CodeAddresses) {
    core::arch::naked_asm!(
        "lea rax, [rip + 2f]",
        "mov qword ptr [rdi], rax",
        "lea rax, [rip + 3f]",
        "mov qword ptr [rdi + 8], rax",
        "lea rax, [rip + 4f]",
        "mov qword ptr [rdi + 16], rax",
        "lea rax, [rip + 5f]",
        "mov qword ptr [rdi + 24], rax",
        "lea rax, [rip + 6f]",
        "mov qword ptr [rdi + 32], rax",
        "ret",
        ".p2align 4",
        "2:",
        "endbr64",
        "3:",
        "movzx eax, byte ptr [rdi]",
        "xor edx, edx",
        "ret",
        ".p2align 4",
        "4:",
        "endbr64",
        "5:",
        "mov rax, qword ptr [rdi]",
        "xor edx, edx",
        "ret",
        ".p2align 4",
        "6:",
        "xor eax, eax",
        "mov edx, 1",
        "ret",
    )
}

/// The guarded code's addresses: the load and continuation PCs are published by `install`
/// before the handler exists, the entries once both handlers are installed; zero until then.
static U8_ENTRY: AtomicUsize = AtomicUsize::new(0);
static U8_LOAD: AtomicUsize = AtomicUsize::new(0);
static U64_ENTRY: AtomicUsize = AtomicUsize::new(0);
static U64_LOAD: AtomicUsize = AtomicUsize::new(0);
static CONTINUATION: AtomicUsize = AtomicUsize::new(0);

/// The restorer the kernel makes a handler return to (`rt_sigreturn`). Its bytes are glibc's
/// `__restore_rt`'s, which debuggers and unwinders recognise as a signal frame. Needed because
/// the handler is installed with the raw `rt_sigaction` syscall.
///
/// # Safety
/// Never called; the kernel returns to it from a signal handler.
#[unsafe(naked)]
unsafe extern "C" fn restore_rt() {
    // mov rax, 15 (rt_sigreturn); syscall
    core::arch::naked_asm!(".byte 0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00", "syscall",)
}

/// The kernel's `struct sigaction` on x86_64, as `rt_sigaction` reads and writes it.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// `SA_RESTORER` (not in every libc): `restorer` is valid.
const SA_RESTORER: u64 = 0x0400_0000;
/// The trap number of a general-protection fault (`X86_TRAP_GP`) in `uc_mcontext.trapno`.
const TRAP_GP: i64 = 13;

/// A raw syscall: no libc wrapper (a sanitizer may intercept those), no `errno` written.
///
/// # Safety
/// The arguments must be valid for syscall `nr`.
#[inline(always)]
unsafe fn syscall4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; `syscall` clobbers rcx and r11 only, and
    // the kernel may read and write the memory the arguments point to.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
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
        flags: (libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART) as u64 | SA_RESTORER,
        restorer: restore_rt as *const () as usize,
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
pub(crate) fn install() -> Result<(), Error> {
    INSTALL.call_once(|| {
        let mut code = CodeAddresses::default();
        // SAFETY: `code` is valid for writing.
        unsafe { code_addresses(&mut code) };
        // What the handler needs goes out before the handler exists.
        U8_LOAD.store(code.u8_load, Ordering::Relaxed);
        U64_LOAD.store(code.u64_load, Ordering::Relaxed);
        CONTINUATION.store(code.continuation, Ordering::Relaxed);

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
        if ok {
            // The loads can be called from now on: both handlers are in.
            U8_ENTRY.store(code.u8_entry, Ordering::Relaxed);
            U64_ENTRY.store(code.u64_entry, Ordering::Relaxed);
        }
        INSTALLED.store(ok, Ordering::Release);
    });
    if INSTALLED.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(Error::Unavailable {
            backend: Backend::SignalGuard,
            errno: Some(INSTALL_ERRNO.load(Ordering::Relaxed)),
            reason: "rt_sigaction(SIGSEGV/SIGBUS) failed",
        })
    }
}

/// Whether a signal with this `si_code` (and trap number) is a fault of the instruction at
/// the interrupted PC, so that at a load's PC it is the load's fault.
///
/// Sent signals (`si_code <= 0`: `kill`, `tgkill`, `sigqueue`) never are. Neither is an
/// asynchronous machine-check report (`BUS_MCEERR_AO`), nor a `SI_KERNEL` SIGSEGV that is not
/// a general-protection fault (the kernel sends one when it cannot build the frame of another
/// signal, or for a broken `rseq` area). A load of a non-canonical address is a
/// general-protection fault: `SI_KERNEL` with trap number 13.
#[inline(always)]
fn is_instruction_fault(sig: libc::c_int, code: libc::c_int, trapno: i64) -> bool {
    if code <= 0 {
        return false;
    }
    if sig == libc::SIGBUS && code == libc::BUS_MCEERR_AO {
        return false;
    }
    if code == libc::SI_KERNEL {
        return trapno == TRAP_GP;
    }
    true
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // A handler installed after ours may call us with null pointers: then we cannot tell, and
    // chain.
    if !info.is_null() && !ctx.is_null() {
        // SAFETY: the kernel (or a handler that chains to us with its arguments) passes a
        // valid siginfo and ucontext.
        unsafe {
            let uc = ctx.cast::<libc::ucontext_t>();
            let gregs = &mut (*uc).uc_mcontext.gregs;
            let pc = gregs[libc::REG_RIP as usize] as usize;
            let trapno = gregs[libc::REG_TRAPNO as usize];
            if (pc == U8_LOAD.load(Ordering::Relaxed) || pc == U64_LOAD.load(Ordering::Relaxed))
                && pc != 0
                && (sig == libc::SIGSEGV || sig == libc::SIGBUS)
                && is_instruction_fault(sig, (*info).si_code, trapno)
            {
                gregs[libc::REG_RIP as usize] = CONTINUATION.load(Ordering::Relaxed) as i64;
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
    // SAFETY: the saved address is a signal handler. On x86_64 the kernel passes every
    // handler three arguments in rdi, rsi and rdx; a one-argument handler reads only rdi.
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

/// The load functions, once `install` has published them.
#[inline(always)]
fn loads() -> Option<(LoadFn, LoadFn)> {
    let (u8_entry, u64_entry) = (
        U8_ENTRY.load(Ordering::Relaxed),
        U64_ENTRY.load(Ordering::Relaxed),
    );
    if u8_entry == 0 || u64_entry == 0 {
        return None;
    }
    // SAFETY: both are entries of `code_addresses`'s guarded loads, which have this
    // signature.
    unsafe {
        Some((
            core::mem::transmute::<usize, LoadFn>(u8_entry),
            core::mem::transmute::<usize, LoadFn>(u64_entry),
        ))
    }
}

fn not_installed() -> Error {
    Error::Unavailable {
        backend: Backend::SignalGuard,
        errno: None,
        reason: "the SIGSEGV/SIGBUS handler is not installed",
    }
}

/// One guarded byte load per page of `r`.
#[inline]
pub(crate) fn check(r: &PageRange) -> Result<bool, Error> {
    let Some((load_u8, _)) = loads() else {
        return Err(not_installed());
    };
    for point in r.probe_points() {
        // SAFETY: the handler is installed (`install` publishes the entries only once both
        // handlers are in); a faulting load returns `faulted = 1` through the continuation
        // instead of crashing.
        if unsafe { load_u8(point) }.faulted != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies `r` into `dst` with guarded loads: 8 bytes at a time where aligned, else 1.
#[inline]
pub(crate) fn read(r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
    let Some((load_u8, load_u64)) = loads() else {
        return Err(not_installed());
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const CHILD_ENV: &str = "ADDRPROBE_UNIT_CHILD";

    /// Re-runs this test binary for the single test `name` with `CHILD_ENV=name`; kills it
    /// after 10 s. Returns its status and stdout.
    fn run_child(name: &str) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let path = format!(
            "{}::{name}",
            module_path!().trim_start_matches("addrprobe::")
        );
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([path.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, name)
            .env("RUST_BACKTRACE", "0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child {name} hung and was killed");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (status, out)
    }

    fn is_child(name: &str) -> bool {
        std::env::var(CHILD_ENV).is_ok_and(|v| v == name)
    }

    fn code() -> CodeAddresses {
        let mut c = CodeAddresses::default();
        // SAFETY: `c` is valid for writing.
        unsafe { code_addresses(&mut c) };
        c
    }

    /// Reads `N` bytes of our own code.
    fn bytes<const N: usize>(at: usize) -> [u8; N] {
        // SAFETY: `at` lies in `code_addresses`'s body, which is mapped readable and executable.
        unsafe { core::ptr::read(at as *const [u8; N]) }
    }

    /// The published addresses are the instructions the handler expects.
    #[test]
    fn code_addresses_are_the_loads_and_the_continuation() {
        let c = code();
        const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
        assert_eq!(bytes::<4>(c.u8_entry), ENDBR64);
        assert_eq!(c.u8_load, c.u8_entry + 4);
        assert_eq!(
            bytes::<3>(c.u8_load),
            [0x0f, 0xb6, 0x07],
            "movzx eax, byte ptr [rdi]"
        );
        assert_eq!(bytes::<4>(c.u64_entry), ENDBR64);
        assert_eq!(c.u64_load, c.u64_entry + 4);
        assert_eq!(
            bytes::<3>(c.u64_load),
            [0x48, 0x8b, 0x07],
            "mov rax, qword ptr [rdi]"
        );
        assert_eq!(bytes::<2>(c.continuation), [0x31, 0xc0], "xor eax, eax");
        assert_eq!(
            bytes::<9>(restore_rt as *const () as usize),
            [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
            "glibc's __restore_rt"
        );
    }

    /// What the handler takes for a load's own fault.
    #[test]
    fn only_instruction_faults_count() {
        use libc::{SIGBUS, SIGSEGV};
        for code in [
            libc::SI_USER,
            libc::SI_TKILL,
            libc::SI_QUEUE,
            libc::SI_TIMER,
        ] {
            assert!(!is_instruction_fault(SIGSEGV, code, 14), "sent: {code}");
        }
        assert!(is_instruction_fault(SIGSEGV, 1 /* SEGV_MAPERR */, 14));
        assert!(is_instruction_fault(SIGSEGV, 2 /* SEGV_ACCERR */, 14));
        assert!(is_instruction_fault(SIGSEGV, libc::SI_KERNEL, TRAP_GP));
        assert!(!is_instruction_fault(SIGSEGV, libc::SI_KERNEL, 14));
        assert!(is_instruction_fault(SIGBUS, libc::BUS_ADRERR, 14));
        assert!(is_instruction_fault(SIGBUS, libc::BUS_MCEERR_AR, 18));
        assert!(!is_instruction_fault(SIGBUS, libc::BUS_MCEERR_AO, 18));
    }

    static APP_PC: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

    extern "C" fn app_handler(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the ucontext the kernel passed to this SA_SIGINFO handler.
        let pc =
            unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] };
        let code = if pc as usize == APP_PC.load(Ordering::SeqCst) {
            42
        } else {
            43
        };
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(code) };
    }

    /// A fault one byte after the eight-byte load instruction is not a probe's fault: it must
    /// be chained to the application's handler (with the faulting PC), not turned into "no".
    ///
    /// The load is `48 8b 07` (`mov rax, [rdi]`); jumping to its second byte executes `8b 07`
    /// (`mov eax, [rdi]`), a load at a PC next to the probe's that is not the probe's.
    #[test]
    fn fault_at_another_pc_in_a_load_function_is_chained() {
        const NAME: &str = "fault_at_another_pc_in_a_load_function_is_chained";
        if is_child(NAME) {
            let pc = code().u64_load + 1;
            assert_eq!(
                bytes::<2>(pc),
                [0x8b, 0x07],
                "unexpected encoding of load_u64"
            );
            APP_PC.store(pc, Ordering::SeqCst);
            // SAFETY: installing a handler with the matching signature in a disposable child.
            unsafe {
                let mut sa: libc::sigaction = core::mem::zeroed();
                sa.sa_sigaction = app_handler as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut sa.sa_mask);
                assert_eq!(
                    libc::sigaction(libc::SIGSEGV, &sa, core::ptr::null_mut()),
                    0
                );
            }
            install().unwrap();
            let page = crate::testing::map_anonymous(4096).unwrap();
            assert_eq!(
                // SAFETY: our own fresh mapping.
                unsafe { libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_NONE) },
                0
            );
            // SAFETY: none: the call is meant to fault at `pc`, in a disposable child; the
            // code there is `mov eax, [rdi]; xor edx, edx; ret`, which the sysv64 ABI of
            // `Loaded` accepts.
            let f: unsafe extern "sysv64" fn(usize) -> Loaded = unsafe { core::mem::transmute(pc) };
            println!("CHILD READY");
            // SAFETY: see above.
            let got = unsafe { f(page) };
            println!("SWALLOWED faulted={}", got.faulted);
            std::process::exit(0);
        }
        let (status, out) = run_child(NAME);
        assert!(out.contains("CHILD READY"), "{status:?} {out}");
        assert_eq!(
            status.code(),
            Some(42),
            "the fault at load_u64+1 was not handed to the application's handler with its PC \
             (signal {:?}): {out}",
            status.signal()
        );
    }
}
