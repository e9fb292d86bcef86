//! The x86_64 guarded loads and the SIGSEGV/SIGBUS handler (see the parent module).

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

use crate::{Backend, Error};

/// The exception table's section: its name says the architecture and the protocol (`v1`: the
/// flag register `rcx` is zero before the load; on a fault the handler sets it to 1 and
/// resumes at the continuation). Copies of the crate that share a table must share the
/// protocol; a different protocol gets a different name.
macro_rules! section {
    () => {
        "addrprobe_extable_x86_64_v1"
    };
}

/// The `asm!` lines that record a load at local label `$load` whose continuation is local
/// label `$cont` in the exception table (see [`extable`](super::extable)).
macro_rules! extable_entry {
    ($load:literal, $cont:literal) => {
        concat!(
            ".pushsection ",
            section!(),
            ",\"aR\",@progbits\n",
            ".balign 4\n",
            ".long ",
            $load,
            "b - .\n",
            ".long ",
            $cont,
            "b - .\n",
            ".popsection",
        )
    };
}

/// The longest x86_64 instruction: a continuation further than this from its load is not a
/// load's.
const MAX_INSN: usize = 15;

/// Proof that this copy of the crate's handler is installed: only [`install`] and
/// [`installed`] make one, after both signals' handlers are in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Installed(());

/// The proof, if the handler is installed.
#[inline(always)]
pub(crate) fn installed() -> Option<Installed> {
    INSTALLED.load(Ordering::Acquire).then_some(Installed(()))
}

/// A guarded load: the instruction `$insn` at label `2`, the continuation at `3`, the flag in
/// `ecx`. `$value` is `{v}` of the width `$insn` writes.
macro_rules! guarded_load {
    ($insn:literal, $addr:expr, $ty:ty) => {{
        let value: $ty;
        let faulted: u32;
        // SAFETY: the handler is installed (the caller holds `Installed`), and the load's PC
        // and continuation are in this object's exception table (the lines after it). A load
        // that faults is resumed at the continuation with `ecx = 1`; the value register then
        // holds whatever it held, which the caller ignores. Nothing else changes: the handler
        // writes only `rip` and `rcx` in the interrupted context, and the kernel restores the
        // rest, flags included, on `rt_sigreturn`. The asm reads memory and writes none.
        unsafe {
            core::arch::asm!(
                "2:",
                $insn,
                "3:",
                extable_entry!("2", "3"),
                a = in(reg) $addr,
                v = lateout(reg) value,
                inout("ecx") 0u32 => faulted,
                options(nostack, readonly, preserves_flags),
            );
        }
        if faulted == 0 { Some(value) } else { None }
    }};
}

/// One guarded byte load.
#[inline(always)]
pub(crate) fn load_u8(_: Installed, addr: usize) -> Option<u8> {
    guarded_load!("movzx {v:e}, byte ptr [{a}]", addr, u32).map(|v| v as u8)
}

/// One guarded 4-byte load (any alignment).
#[inline(always)]
pub(crate) fn load_u32(_: Installed, addr: usize) -> Option<u32> {
    guarded_load!("mov {v:e}, dword ptr [{a}]", addr, u32)
}

/// One guarded 8-byte load (any alignment).
#[inline(always)]
pub(crate) fn load_u64(_: Installed, addr: usize) -> Option<u64> {
    guarded_load!("mov {v}, qword ptr [{a}]", addr, u64)
}

/// Two guarded 8-byte loads, of `addr` and `addr + 8` (any alignment), with one flag: a fault
/// of either resumes after both, so a pair costs one flag test. Both instructions are in the
/// table; the first's continuation is the end of the pair (the second's end), at most two
/// instructions' length away.
#[inline(always)]
pub(crate) fn load_u64_pair(_: Installed, addr: usize) -> Option<[u64; 2]> {
    let (first, second): (u64, u64);
    let faulted: u32;
    // SAFETY: as in `guarded_load!`. `first` is an early output: it is written while `addr`
    // is still needed, so it never shares its register.
    unsafe {
        core::arch::asm!(
            "2:",
            "mov {v0}, qword ptr [{a}]",
            "3:",
            "mov {v1}, qword ptr [{a} + 8]",
            "4:",
            extable_entry!("2", "4"),
            extable_entry!("3", "4"),
            a = in(reg) addr,
            v0 = out(reg) first,
            v1 = lateout(reg) second,
            inout("ecx") 0u32 => faulted,
            options(nostack, readonly, preserves_flags),
        );
    }
    if faulted == 0 {
        Some([first, second])
    } else {
        None
    }
}

/// This linked object's exception table.
///
/// The bounds are taken in `asm!` after `.hidden`: whatever visibility the linker gives
/// `__start_`/`__stop_` symbols by default, each executable and shared object binds them to
/// its own section and exports neither. The same block records an anchor entry (a
/// continuation equal to its load, which no lookup takes), so the section, and with it both
/// symbols, exists in every object that contains the handler, even one without a load.
#[inline(always)]
fn table() -> super::extable::Table {
    let (start, stop): (usize, usize);
    // SAFETY: only computes two addresses (and records the anchor entry).
    unsafe {
        core::arch::asm!(
            concat!(".pushsection ", section!(), ",\"aR\",@progbits"),
            ".balign 4",
            ".long 0",
            ".long -4",
            ".popsection",
            concat!(".hidden __start_", section!()),
            concat!(".hidden __stop_", section!()),
            concat!("lea {s}, [rip + __start_", section!(), "]"),
            concat!("lea {e}, [rip + __stop_", section!(), "]"),
            s = out(reg) start,
            e = out(reg) stop,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    // SAFETY: the linker bounds the section, which holds 4-byte aligned entries only (every
    // `.pushsection` of it aligns and emits two `.long`s) and is mapped read-only for as long
    // as this code is.
    unsafe { super::extable::Table::new(start, stop) }
}

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

/// The SIGSEGV/SIGBUS handler: a fault of a guarded load (its PC is exactly an entry's load PC
/// in this object's exception table, and the signal is that instruction's own fault) resumes
/// at the entry's continuation with `rcx = 1`; every other signal is chained.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // A handler installed after ours may call us with null pointers: then we cannot tell, and
    // chain.
    if !info.is_null() && !ctx.is_null() && (sig == libc::SIGSEGV || sig == libc::SIGBUS) {
        // SAFETY: the kernel (or a handler that chains to us with its arguments) passes a
        // valid siginfo and ucontext.
        unsafe {
            let uc = ctx.cast::<libc::ucontext_t>();
            let gregs = &mut (*uc).uc_mcontext.gregs;
            let pc = gregs[libc::REG_RIP as usize] as usize;
            let trapno = gregs[libc::REG_TRAPNO as usize];
            if is_instruction_fault(sig, (*info).si_code, trapno)
                && let Some(cont) = table().continuation(pc, MAX_INSN)
            {
                gregs[libc::REG_RCX as usize] = 1;
                gregs[libc::REG_RIP as usize] = cont as i64;
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
    // SAFETY: `info` is null or valid.
    let code = if info.is_null() {
        0
    } else {
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

    /// Reads `N` bytes of our own code.
    fn bytes<const N: usize>(at: usize) -> [u8; N] {
        // SAFETY: `at` lies in this object's text, which is mapped readable and executable.
        unsafe { core::ptr::read(at as *const [u8; N]) }
    }

    /// The length of the load instruction at `pc` if it is one of the guarded loads' forms
    /// (`movzx r32, byte ptr [r]`, `mov r32, dword ptr [r]`, `mov r64, qword ptr [r]`, and
    /// `mov r64, qword ptr [r + 8]` as a pair's second, with the base register any of the
    /// sixteen), else `None`.
    fn load_len(pc: usize) -> Option<usize> {
        let b = bytes::<7>(pc);
        let mut i = 0;
        if b[i] & 0xf0 == 0x40 {
            i += 1; // REX
        }
        match b[i] {
            0x8b => i += 1,
            0x0f if b[i + 1] == 0xb6 => i += 2,
            _ => return None,
        }
        let modrm = b[i];
        i += 1;
        let (md, rm) = (modrm >> 6, modrm & 7);
        if rm == 4 {
            i += 1; // SIB: rsp or r12 as the base
        }
        match md {
            0 if rm != 5 => Some(i),
            // A disp8: 8 for a pair's second load; 0 with rbp or r13 as the base.
            1 if b[i] == 0 || b[i] == 8 => Some(i + 1),
            _ => None,
        }
    }

    /// Every entry of this object's table (this test binary's: the crate's loads, inlined in
    /// the crate and its tests) records a load instruction of the guarded forms and the
    /// instruction right after it, or for the first load of a pair the instruction after the
    /// pair's second load. The anchor entry is the only one not taken.
    #[test]
    fn table_entries_are_loads_and_their_next_instruction() {
        // Out-of-line instances of every load, so that each form is in the table.
        type Load<T> = fn(Installed, usize) -> Option<T>;
        core::hint::black_box((
            load_u8 as Load<u8>,
            load_u32 as Load<u32>,
            load_u64 as Load<u64>,
            load_u64_pair as Load<[u64; 2]>,
        ));
        let t = table();
        let mut loads = 0;
        let mut pairs = 0;
        let mut skipped = 0;
        for i in 0..t.len() {
            let Some((load, cont)) = t.get(i, MAX_INSN) else {
                skipped += 1;
                continue;
            };
            loads += 1;
            let len = load_len(load);
            let pair = len.and_then(|n| load_len(load + n).map(|m| n + m));
            pairs += usize::from(pair == Some(cont - load));
            assert!(
                len == Some(cont - load) || pair == Some(cont - load),
                "entry {i}: {:02x?} at {load:#x}, continuation +{}",
                bytes::<14>(load),
                cont - load
            );
        }
        assert!(loads >= 5, "{loads} loads in the table");
        assert!(pairs >= 1, "no pair in the table");
        assert!(skipped >= 1, "no anchor entry");
        assert_eq!(
            bytes::<9>(restore_rt as *const () as usize),
            [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
            "glibc's __restore_rt"
        );
    }

    /// `rax`: the value; `rdx`: the flag (SysV: a 16-byte struct of two INTEGERs).
    #[repr(C)]
    struct Loaded {
        value: u64,
        faulted: u64,
    }

    /// A guarded load as a function, with a REX-prefixed load (`48 8b 07`) right after a
    /// 2-byte `xor ecx, ecx`, so that its load PC is known (`+2`) and the next byte starts
    /// another load (`8b 07`, `mov eax, [rdi]`) that is *not* in the table.
    ///
    /// # Safety
    /// The handler must be installed if `addr` may fault.
    #[unsafe(naked)]
    unsafe extern "sysv64" fn naked_load(addr: usize) -> Loaded {
        core::arch::naked_asm!(
            "xor ecx, ecx",
            "2:",
            "mov rax, qword ptr [rdi]",
            "3:",
            extable_entry!("2", "3"),
            "mov edx, ecx",
            "ret",
        )
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

    /// A fault at a load PC of the table is the load's (the flag comes back set); a fault one
    /// byte after it is not a probe's fault: it must be chained to the application's handler
    /// (with the faulting PC), not turned into "no".
    #[test]
    fn only_the_exact_load_pc_is_resumed() {
        const NAME: &str = "only_the_exact_load_pc_is_resumed";
        if is_child(NAME) {
            let entry = naked_load as *const () as usize;
            let load = entry + 2;
            assert_eq!(bytes::<2>(entry), [0x31, 0xc9], "xor ecx, ecx");
            assert_eq!(bytes::<3>(load), [0x48, 0x8b, 0x07], "mov rax, [rdi]");
            assert_eq!(table().continuation(load, MAX_INSN), Some(load + 3));
            assert_eq!(table().continuation(load + 1, MAX_INSN), None);
            APP_PC.store(load + 1, Ordering::SeqCst);
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
            let page = crate::fixtures::map_anonymous(4096).unwrap();
            // SAFETY: our own fresh mapping.
            assert_eq!(
                unsafe { libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_NONE) },
                0
            );
            let v = 0x1122_3344_5566_7788_u64;
            // SAFETY: the handler is installed; `v` is readable.
            let got = unsafe { naked_load(&v as *const u64 as usize) };
            assert_eq!((got.value, got.faulted), (v, 0));
            // SAFETY: the handler is installed; the load's fault is resumed.
            let got = unsafe { naked_load(page) };
            assert_eq!(got.faulted, 1);
            // SAFETY: none: the call is meant to fault at `load + 1`, in a disposable child;
            // the code there is `mov eax, [rdi]; mov edx, ecx; ret`, which the sysv64 ABI of
            // `Loaded` accepts.
            let f: unsafe extern "sysv64" fn(usize) -> Loaded =
                unsafe { core::mem::transmute(load + 1) };
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
            "the fault at load+1 was not handed to the application's handler with its PC \
             (signal {:?}): {out}",
            status.signal()
        );
    }
}
