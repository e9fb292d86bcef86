//! The SIGSEGV/SIGBUS handler, its installation and the chaining of every signal that is not a
//! guarded load's fault (see the parent module). Architecture-independent: the architecture
//! module supplies the raw syscall, the entry and restorer, the exception table and the access
//! to the interrupted context.
//!
//! # Where a chained handler runs: the kernel decides
//!
//! A signal that is not a probe's fault must reach the previous handler as if the crate were
//! not there: on the same stack, with the same mask, with the same `SA_RESTART` effect. Three
//! designs were weighed:
//!
//! - *switching stacks before the call* (copy the frame to the interrupted stack, below its
//!   red zone): the copy must include the extended FPU state, our own frame on the alternate
//!   stack stays live underneath (a nested fault in the chained handler would be delivered on
//!   top of it or over it), and returning needs an `rt_sigreturn` from a frame that the
//!   shadow stack (x86 CET, arm64 GCS) has no token for;
//! - *emulating delivery completely* (DynamoRIO): a fabricated frame, the same shadow-stack
//!   problem, and an extra `rt_sigreturn` per signal;
//! - *letting the kernel pick* (async-profiler's `replaceCrashHandler`): our action is
//!   installed with the previous handler's `SA_ONSTACK`, `SA_RESTART` (and `SA_NODEFER` and
//!   `sa_mask` where that is safe, below). The kernel then builds our frame exactly where it
//!   would have built the previous handler's, with its red zone, alignment, shadow-stack token
//!   and the restart decision for an interrupted syscall, and the chained handler is a plain
//!   call on that stack. A nested fault inside it gets a new frame below the live ones, as
//!   the kernel always does.
//!
//! The third is the only one that is exact on both architectures without touching stacks, so
//! it is the design. What the kernel cannot decide for us is the mask, because the same action
//! serves the probes' own faults: a probe's fault must not let an unrelated signal in on top
//! of its frame (a profiler's SIGPROF handler that probes and faults there would nest a third
//! frame on a small alternate stack, or fault with SIGSEGV blocked, which kills). So:
//!
//! - if the previous `sa_mask` blocks every signal but the synchronous ones (SIGSEGV, SIGBUS,
//!   SIGILL, SIGFPE, SIGTRAP, SIGSYS, and glibc's internal 32 and 33, which its `sigfillset`
//!   leaves out), as HotSpot's does, our action takes that mask and its `SA_NODEFER`: the
//!   kernel gives the chained handler its exact mask, and chaining makes no syscall for it;
//! - else our action blocks everything, and `chain` sets the chained handler's mask with one
//!   `rt_sigprocmask` before the call. Its return needs none: `rt_sigreturn` restores the
//!   interrupted mask.
//!
//! Whether the kernel delivered the signal to *our* action (so that the mask in effect is the
//! one computed above) or a handler installed later called us (its own mask is in effect) is
//! told by the return address: the architecture's naked entry compares it with our own
//! restorer, which only a kernel delivery of our action returns to.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use super::arch::{self, syscall4};
use crate::{Backend, Error};

/// One linked object's table in the handler's list: a node the object's constructor hands to
/// [`register_table`], in the object's own writable data (one per object, see the
/// architecture's `registration!`).
#[repr(C)]
pub(super) struct Node {
    next: AtomicUsize,
    start: AtomicUsize,
    stop: AtomicUsize,
}

/// The list of every linked object's table whose loads use this copy of the crate, newest
/// first: pushed without a lock, never shortened (each object is pinned when it registers).
static TABLES: AtomicUsize = AtomicUsize::new(0);

/// Called by the constructors that every linked object holding a guarded load of this crate
/// runs when it is loaded (emitted with the loads, see the architecture's `registration!`;
/// every `asm!` instance in the object file the linker kept for the group adds one, all
/// naming the same table: the later ones find it listed and return):
/// adds the object's table to the list the handler searches, and pins the object
/// (`RTLD_NODELETE`) so that the table stays mapped.
///
/// Why: each object's table bounds are hidden, so a handler can only name its own object's
/// table. With the crate in a Rust `dylib`, the handler lives in the dylib but the executable
/// inlines the loads, and their entries are in the *executable's* table. Registering at load
/// time costs the probes nothing: they check nothing. The object's table is known once its
/// constructors have run; a load the object makes before that (from another constructor of
/// its own that runs first, or a signal handler such a constructor started) is not, and its
/// fault is chained like a stray one.
///
/// # Safety
/// Only that constructor calls it: `[start, stop)` bounds its object's table, and `node` is 24
/// bytes of its object's writable data, 8-byte aligned, used for nothing else.
pub(super) unsafe extern "C" fn register_table(start: usize, stop: usize, node: *mut Node) {
    // An object's duplicate constructors (one per codegen unit that inlined a load) and an
    // object loaded again find their table listed already.
    let mut at = TABLES.load(Ordering::Acquire);
    while at != 0 {
        // SAFETY: every listed node is a registered object's, which stays loaded.
        let n = unsafe { &*(at as *const Node) };
        if n.start.load(Ordering::Relaxed) == start {
            return;
        }
        at = n.next.load(Ordering::Acquire);
    }
    // SAFETY: the caller hands us the object's own node.
    let n = unsafe { &*node };
    n.start.store(start, Ordering::Relaxed);
    n.stop.store(stop, Ordering::Relaxed);
    let mut head = TABLES.load(Ordering::Acquire);
    loop {
        n.next.store(head, Ordering::Relaxed);
        match TABLES.compare_exchange(head, node as usize, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(h) => head = h,
        }
    }
    pin_object_of(start);
}

/// The continuation of a load at `pc` in a registered table of another object (`own`, the
/// handler's own object's table start, was searched already).
#[inline(always)]
fn registered_continuation(pc: usize, own: usize) -> Option<usize> {
    let mut at = TABLES.load(Ordering::Acquire);
    while at != 0 {
        // SAFETY: every listed node is a registered object's, which stays loaded.
        let n = unsafe { &*(at as *const Node) };
        if n.start.load(Ordering::Relaxed) == own {
            at = n.next.load(Ordering::Acquire);
            continue;
        }
        // SAFETY: registered by the object's constructor: its linker-bounded table, which
        // stays mapped (the object is pinned).
        let table = unsafe {
            super::extable::Table::new(
                n.start.load(Ordering::Relaxed),
                n.stop.load(Ordering::Relaxed),
            )
        };
        if let Some(cont) = table.continuation(pc, arch::MAX_INSN) {
            return Some(cont);
        }
        at = n.next.load(Ordering::Acquire);
    }
    None
}

/// For a machine-check SIGBUS (`BUS_MCEERR_AR`), the number of low bits of `si_addr` the
/// kernel left out (`si_addr_lsb`: a first-time memory error is reported for its whole page);
/// 0 for every other signal, whose `si_addr` is exact.
///
/// # Safety
/// `info` must be the kernel's siginfo for the signal.
#[inline(always)]
pub(super) unsafe fn mce_addr_lsb(info: *const libc::siginfo_t) -> u32 {
    // SAFETY: the caller vouches for `info`; `si_signo` and `si_code` are its first fields,
    // and for BUS_MCEERR_* the kernel's `_sigfault` has `si_addr_lsb` (a short) right after
    // `si_addr`, at byte 24 on 64-bit targets.
    unsafe {
        let code = (*info).si_code;
        if (*info).si_signo != libc::SIGBUS
            || (code != libc::BUS_MCEERR_AR && code != libc::BUS_MCEERR_AO)
        {
            return 0;
        }
        let lsb = core::ptr::read_unaligned(info.cast::<u8>().add(24).cast::<u16>());
        u32::from(lsb).min(usize::BITS - 1)
    }
}

/// Whether the faulting address `addr`, known to `lsb` low bits fewer than exact, lies in the
/// `width` bytes a load at `start` accesses.
#[inline(always)]
pub(super) fn in_access(addr: usize, lsb: u32, start: usize, width: usize) -> bool {
    if lsb == 0 {
        return addr.wrapping_sub(start) < width;
    }
    let block = |a: usize| a >> lsb;
    block(addr) == block(start) || block(addr) == block(start.wrapping_add(width - 1))
}

/// Proof that this copy of the crate's handler is installed: only [`install`] makes one, after
/// both signals' handlers are in.
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
#[derive(Clone, Copy, Default, PartialEq, Eq)]
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

/// `gettid()`, raw.
#[inline(always)]
fn gettid() -> u64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { syscall4(libc::SYS_gettid, 0, 0, 0, 0) as u64 }
}

/// The thread that set an `INSTALLING` state (with the pid in the state): a thread that finds
/// `INSTALLING` with its own pid *and* its own tid cannot be that installer (which never
/// waits on itself and runs with every signal blocked), so it is a child forked during the
/// install whose pid and tid happen to equal the installer's (pid 1 of a new pid namespace,
/// forked from a container's init whose main thread installs).
static INSTALLER_TID: AtomicU64 = AtomicU64::new(0);

/// `getpid()`, raw.
#[inline(always)]
fn getpid() -> u64 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { syscall4(libc::SYS_getpid, 0, 0, 0, 0) as u64 }
}

/// The bit of `sig` in a kernel signal set.
#[inline(always)]
const fn bit(sig: libc::c_int) -> u64 {
    1u64 << (sig - 1)
}

/// What no `sa_mask` or thread mask can hold: the kernel drops SIGKILL and SIGSTOP from both.
const UNBLOCKABLE: u64 = bit(libc::SIGKILL) | bit(libc::SIGSTOP);

/// The signals a mask may leave out and still be adopted by our action (see the module docs):
/// the synchronous ones, which only the interrupted instruction raises (a probe's handler
/// never runs for them), and glibc's internal 32 (cancellation) and 33 (`setxid`), which its
/// `sigfillset` leaves out and whose handlers are glibc's own.
const SYNCHRONOUS: u64 = bit(libc::SIGSEGV)
    | bit(libc::SIGBUS)
    | bit(libc::SIGILL)
    | bit(libc::SIGFPE)
    | bit(libc::SIGTRAP)
    | bit(libc::SIGSYS)
    | bit(32)
    | bit(33)
    | UNBLOCKABLE;

/// `SA_EXPOSE_TAGBITS` (arm64, Linux 5.11; ignored elsewhere): `si_addr` keeps the tag bits.
const SA_EXPOSE_TAGBITS: u64 = 0x0000_0800;

/// The action this crate installs for one signal, given the disposition it replaces (see the
/// module docs): the previous handler's `SA_ONSTACK` and `SA_RESTART` (so that the kernel
/// picks the stack and the restart as it would for it), its `sa_mask` and `SA_NODEFER` when
/// the mask keeps every asynchronous signal out, else a full mask. For `SIG_DFL` and
/// `SIG_IGN`: the alternate stack when the thread has one, restarts, a full mask.
fn action_for(previous: &KernelSigaction) -> KernelSigaction {
    let base = libc::SA_SIGINFO as u64 | arch::RESTORER_FLAGS;
    let (flags, mask) = if previous.handler == libc::SIG_DFL || previous.handler == libc::SIG_IGN {
        (base | (libc::SA_ONSTACK | libc::SA_RESTART) as u64, !0)
    } else {
        let kept =
            previous.flags & ((libc::SA_ONSTACK | libc::SA_RESTART) as u64 | SA_EXPOSE_TAGBITS);
        if previous.mask | SYNCHRONOUS == !0 {
            let nodefer = previous.flags & libc::SA_NODEFER as u64;
            (base | kept | nodefer, previous.mask)
        } else {
            (base | kept, !0)
        }
    };
    KernelSigaction {
        handler: arch::entry(),
        flags,
        restorer: arch::restorer(),
        mask,
    }
}

/// The disposition that was in place before ours, for one signal, and the action of ours
/// that replaced it.
struct Previous {
    /// `(installer's pid << 8) | NOT_INSTALLED, INSTALLING, READY or FAILED`.
    state: AtomicU64,
    /// The handler address, `SIG_DFL` or `SIG_IGN`. Only ever changes to `SIG_DFL` or
    /// `SIG_IGN` (an emulated `SA_RESETHAND`, or a previous handler that reset its own
    /// disposition), so `flags` and `mask` never need to change with it.
    handler: AtomicUsize,
    flags: AtomicU64,
    mask: AtomicU64,
    /// Our action's `sa_flags` and `sa_mask` for this signal (see `action_for`).
    our_flags: AtomicU64,
    our_mask: AtomicU64,
}

const NOT_INSTALLED: u64 = 0;
const INSTALLING: u64 = 1;
const READY: u64 = 2;
const FAILED: u64 = 3;

impl Previous {
    const fn new() -> Previous {
        Previous {
            state: AtomicU64::new(NOT_INSTALLED),
            handler: AtomicUsize::new(0),
            flags: AtomicU64::new(0),
            mask: AtomicU64::new(0),
            our_flags: AtomicU64::new(0),
            our_mask: AtomicU64::new(0),
        }
    }

    fn publish(&self, old: &KernelSigaction) {
        self.handler.store(old.handler, Ordering::Relaxed);
        self.flags.store(old.flags, Ordering::Relaxed);
        self.mask.store(old.mask, Ordering::Relaxed);
    }

    /// Our action for this signal, as installed.
    fn ours(&self) -> KernelSigaction {
        KernelSigaction {
            handler: arch::entry(),
            flags: self.our_flags.load(Ordering::Relaxed),
            restorer: arch::restorer(),
            mask: self.our_mask.load(Ordering::Relaxed),
        }
    }
}

static PREVIOUS: [Previous; 2] = [Previous::new(), Previous::new()];
static SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];
/// `(installer's pid << 8) | NOT_INSTALLED, INSTALLING, READY or FAILED`, for the process.
static INSTALL: AtomicU64 = AtomicU64::new(NOT_INSTALLED);
static INSTALLED: AtomicBool = AtomicBool::new(false);
static INSTALL_ERRNO: AtomicI32 = AtomicI32::new(0);

fn previous(sig: libc::c_int) -> Option<&'static Previous> {
    match sig {
        libc::SIGSEGV => Some(&PREVIOUS[0]),
        libc::SIGBUS => Some(&PREVIOUS[1]),
        _ => None,
    }
}

/// Installs the handler for SIGSEGV and SIGBUS, once per process, from any number of threads;
/// `Error::Unavailable` on a thread that blocks SIGSEGV or SIGBUS (its first faulting probe
/// would be killed by the kernel), and in a child forked while another thread of its parent
/// was installing.
///
/// For each signal the disposition is read, published, and then replaced with one
/// `rt_sigaction(sig, &ours, &old)`, which the kernel does atomically: a handler that another
/// thread installs at the same moment is either the one we saved (and chain to; if it is not
/// the one read first, it is published in its place) or the one that replaced ours. Every
/// signal is blocked on this thread meanwhile, so that no handler can run here before the
/// publication; a handler on another thread that needs it waits, unless it runs in a child
/// forked meanwhile (the state carries the installer's pid), which takes what was published.
///
/// The shared object that holds the handler is pinned (`RTLD_NODELETE`), so that a `dlclose`
/// of it cannot leave the kernel calling unmapped code. Not async-signal-safe (the pin).
pub(crate) fn install() -> Result<Installed, Error> {
    let mut now = 0u64;
    // SAFETY: a valid pointer to an 8-byte set; a null new set only reads.
    unsafe { rt_sigprocmask(libc::SIG_BLOCK, core::ptr::null(), &mut now) };
    if now & (bit(libc::SIGSEGV) | bit(libc::SIGBUS)) != 0 {
        return Err(Error::Unavailable {
            backend: Backend::SignalGuard,
            errno: None,
            reason: "this thread blocks SIGSEGV or SIGBUS: the kernel would kill the process at \
                     its first faulting probe",
        });
    }
    if arch::under_valgrind() {
        return Err(Error::Unavailable {
            backend: Backend::SignalGuard,
            errno: None,
            reason: "running under valgrind, whose signal frames do not hold a guarded load's \
                     exact registers (a faulting load can come back as a value)",
        });
    }
    let pid = getpid();
    let tid = gettid();
    loop {
        let state = INSTALL.load(Ordering::Acquire);
        match state & 0xff {
            NOT_INSTALLED => {
                if INSTALL
                    .compare_exchange(
                        state,
                        pid << 8 | INSTALLING,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    // Set before any per-signal state says INSTALLING (install_both), which
                    // is what `chain` waits on; a thread that reads a stale value here only
                    // waits.
                    INSTALLER_TID.store(tid, Ordering::Relaxed);
                    let ok = install_both(pid);
                    INSTALLED.store(ok, Ordering::Release);
                    let end = if ok { READY } else { FAILED };
                    INSTALL.store(pid << 8 | end, Ordering::Release);
                    break;
                }
            }
            INSTALLING if state >> 8 == pid && INSTALLER_TID.load(Ordering::Relaxed) != tid => {
                // SAFETY: sched_yield has no arguments.
                unsafe { syscall4(libc::SYS_sched_yield, 0, 0, 0, 0) };
            }
            INSTALLING => {
                return Err(Error::Unavailable {
                    backend: Backend::SignalGuard,
                    errno: None,
                    reason: "this process was forked while another thread of its parent was \
                             installing the SIGSEGV/SIGBUS handler",
                });
            }
            _ => break,
        }
    }
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

/// Both signals' handlers, with every signal blocked; whether both went in.
fn install_both(pid: u64) -> bool {
    let all: u64 = !0;
    let mut saved_mask: u64 = 0;
    // SAFETY: valid pointers to 8-byte sets.
    unsafe { rt_sigprocmask(libc::SIG_SETMASK, &all, &mut saved_mask) };
    let mut ok = true;
    for sig in SIGNALS {
        let prev = previous(sig).expect("SIGSEGV or SIGBUS");
        prev.state.store(pid << 8 | INSTALLING, Ordering::SeqCst);
        let mut old = KernelSigaction::default();
        // SAFETY: a valid pointer; a null new action only reads.
        let mut ret = unsafe { rt_sigaction(sig, core::ptr::null(), &mut old) };
        if ret == 0 {
            prev.publish(&old);
            let ours = action_for(&old);
            prev.our_flags.store(ours.flags, Ordering::Relaxed);
            prev.our_mask.store(ours.mask, Ordering::Relaxed);
            let mut replaced = KernelSigaction::default();
            // SAFETY: valid pointers; `ours` names an SA_SIGINFO handler and its restorer.
            ret = unsafe { rt_sigaction(sig, &ours, &mut replaced) };
            if ret == 0 && replaced != old {
                // Another thread installed a handler between the read and the swap: that
                // one is what we replaced, and what we chain to. (Our action's flags were
                // chosen for the one read first; the chained mask is still exact.)
                prev.publish(&replaced);
            }
        }
        if ret != 0 {
            prev.state.store(pid << 8 | FAILED, Ordering::Release);
            INSTALL_ERRNO.store(-ret as i32, Ordering::Relaxed);
            ok = false;
            break;
        }
        prev.state.store(pid << 8 | READY, Ordering::Release);
    }
    // SAFETY: a valid pointer to an 8-byte set.
    unsafe { rt_sigprocmask(libc::SIG_SETMASK, &saved_mask, core::ptr::null_mut()) };
    if ok {
        pin_object_of(arch::entry());
    }
    ok
}

/// Keeps the shared object that holds `addr` loaded for the life of the process: `dladdr`
/// names it, `dlopen(name, RTLD_NOLOAD | RTLD_NODELETE)` marks it. Nothing happens for the
/// executable (an empty name), in a statically linked program (nothing in it can be
/// unloaded), or when either call fails.
#[cfg(target_feature = "crt-static")]
fn pin_object_of(_addr: usize) {}

/// See the statically linked variant above.
#[cfg(not(target_feature = "crt-static"))]
fn pin_object_of(addr: usize) {
    // SAFETY: `dladdr` fills the `Dl_info` it is given and reads nothing else; `dli_fname` is
    // a NUL-terminated string owned by the loader, valid while the object is loaded, which it
    // is while this code runs. `dlopen` with RTLD_NOLOAD only looks up an object that is
    // already loaded; its handle is deliberately never closed (the pin).
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(addr as *const libc::c_void, &mut info) == 0
            || info.dli_fname.is_null()
            || *info.dli_fname == 0
        {
            return;
        }
        // The executable itself (glibc names it by `argv[0]`): nothing to pin, and no file
        // to look up by that name.
        let mut main: libc::Dl_info = core::mem::zeroed();
        let phdr = libc::getauxval(libc::AT_PHDR) as *const libc::c_void;
        if !phdr.is_null() && libc::dladdr(phdr, &mut main) != 0 && main.dli_fbase == info.dli_fbase
        {
            return;
        }
        libc::dlopen(
            info.dli_fname,
            libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        );
    }
}

/// The SIGSEGV/SIGBUS handler, entered through the architecture's naked entry, which says in
/// `from_kernel` whether the kernel delivered the signal to our action (it returns to our
/// restorer) or a handler installed later called us.
///
/// A fault of a guarded load (its PC is exactly an entry's load PC in this object's exception
/// table, the signal is a fault of that instruction and `si_addr` lies in the bytes it loads)
/// resumes at the entry's continuation with the flag register set; every other signal is
/// chained.
pub(super) extern "C" fn handler(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
    from_kernel: usize,
) {
    // A handler installed after ours may call us with null pointers: then we cannot tell, and
    // chain.
    if !info.is_null() && !ctx.is_null() && (sig == libc::SIGSEGV || sig == libc::SIGBUS) {
        // SAFETY: the kernel (or a handler that chains to us with its arguments) passes a
        // valid siginfo and ucontext.
        unsafe {
            let pc = arch::pc(ctx);
            let own = arch::table();
            if arch::is_instruction_fault(sig, info, ctx)
                && let Some(cont) = own
                    .continuation(pc, arch::MAX_INSN)
                    .or_else(|| registered_continuation(pc, own.start()))
                && arch::faulted_in_load(info, ctx, pc)
            {
                arch::resume_faulted(ctx, cont);
                return;
            }
        }
    }
    // SAFETY: called from the handler with its own arguments.
    unsafe { chain(sig, info, ctx, from_kernel != 0) }
}

/// Hands a signal that is not a probe's fault to the disposition that was installed before
/// ours, the way the kernel would have delivered it there:
///
/// - on the stack the kernel picked for our action, which has the previous handler's
///   `SA_ONSTACK` (see the module docs), and with the syscall restart it decided by the
///   previous handler's `SA_RESTART`;
/// - a handler is called with the same three arguments (a one-argument handler ignores the
///   other two, as with the kernel, which passes them in the same registers), with the
///   thread's signal mask set to the interrupted context's mask (`uc_sigmask`) plus the
///   handler's `sa_mask` plus the signal itself unless `SA_NODEFER`: by the kernel itself when
///   our action's mask already is that, else with one `rt_sigprocmask`; `rt_sigreturn`
///   restores the interrupted mask afterwards. Called by a later handler instead of the
///   kernel, the mask is set before the call and put back after it;
/// - `SA_RESETHAND`: the saved disposition becomes `SIG_DFL` before the first call, once,
///   whichever thread gets there first; our handler stays installed;
/// - `SIG_DFL`, and `SIG_IGN` for a signal the kernel forced (a fault, proven by the
///   architecture's fault record: see `arch::is_forced`): the default action, termination
///   with a core dump, see `default_action`;
/// - `SIG_IGN` for a sent signal, whatever its `si_code`: nothing.
///
/// No `errno` is written: every syscall here is raw.
///
/// # Safety
/// Must be called from `handler` with its arguments.
unsafe fn chain(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
    from_kernel: bool,
) {
    let Some(prev) = previous(sig) else {
        return;
    };
    // Another thread may be inside `install`'s rt_sigaction: wait until it has published
    // what it replaced (it runs with every signal blocked, so it is not waiting for us). In a
    // child forked meanwhile nobody will: what was published before the swap is used.
    loop {
        let state = prev.state.load(Ordering::Acquire);
        match state & 0xff {
            READY => break,
            INSTALLING if state >> 8 != getpid() => break,
            INSTALLING if INSTALLER_TID.load(Ordering::Relaxed) == gettid() => break,
            INSTALLING => {
                // SAFETY: sched_yield has no arguments.
                unsafe { syscall4(libc::SYS_sched_yield, 0, 0, 0, 0) };
            }
            // Not installed by us for this signal: nobody to hand it to.
            _ => return,
        }
    }
    // SAFETY: `info` and `ctx` are each null or the kernel's (or the calling handler's).
    let forced = unsafe { arch::is_forced(sig, info, ctx) };
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

    let without_self = |mask: u64, flags: u64| {
        if flags & libc::SA_NODEFER as u64 == 0 {
            mask | bit(sig)
        } else {
            mask
        }
    };
    // SAFETY: the saved address is a signal handler. The kernel passes every handler three
    // arguments in the first three argument registers (x86_64: rdi, rsi, rdx; arm64: x0, x1,
    // x2); a one-argument handler reads only the first.
    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
        unsafe { core::mem::transmute(target) };
    if from_kernel && !ctx.is_null() {
        // SAFETY: `ctx` is the kernel's ucontext; the first 8 bytes of `uc_sigmask` are the
        // kernel's signal set.
        let interrupted = unsafe {
            core::ptr::read_unaligned(
                core::ptr::addr_of!((*ctx.cast::<libc::ucontext_t>()).uc_sigmask).cast::<u64>(),
            )
        };
        let want = without_self(interrupted | prev.mask.load(Ordering::Relaxed), flags);
        let ours = prev.ours();
        let have = without_self(interrupted | ours.mask, ours.flags);
        if (want ^ have) & !UNBLOCKABLE != 0 {
            // SAFETY: a valid pointer to an 8-byte set; the kernel drops SIGKILL and SIGSTOP.
            unsafe { rt_sigprocmask(libc::SIG_SETMASK, &want, core::ptr::null_mut()) };
        }
        f(sig, info, ctx);
    } else {
        // Called by a later handler: the mask in effect is the one the kernel gave it, and
        // it gets it back when we return. Without its ucontext, that mask is the best estimate
        // of the interrupted one.
        let mut now = 0u64;
        // SAFETY: a valid pointer to an 8-byte set.
        unsafe { rt_sigprocmask(libc::SIG_BLOCK, core::ptr::null(), &mut now) };
        let interrupted = if ctx.is_null() {
            now
        } else {
            // SAFETY: as above.
            unsafe {
                core::ptr::read_unaligned(
                    core::ptr::addr_of!((*ctx.cast::<libc::ucontext_t>()).uc_sigmask).cast::<u64>(),
                )
            }
        };
        let want = without_self(interrupted | prev.mask.load(Ordering::Relaxed), flags);
        // SAFETY: valid pointers to 8-byte sets.
        unsafe { rt_sigprocmask(libc::SIG_SETMASK, &want, core::ptr::null_mut()) };
        f(sig, info, ctx);
        // SAFETY: a valid pointer to an 8-byte set.
        unsafe { rt_sigprocmask(libc::SIG_SETMASK, &now, core::ptr::null_mut()) };
    }
    // SAFETY: from the handler, after the previous handler returned.
    unsafe { adopt_reset(sig, prev) };
}

/// A previous handler may reset its own disposition and return (Rust's std does, for a fault
/// outside a stack guard page: it restores `SIG_DFL` so that the fault, executed again, kills).
/// Without this crate that would be the process's disposition from now on; with it, that
/// `rt_sigaction` has replaced *our* handler. So a `SIG_DFL` or `SIG_IGN` found in place of
/// ours becomes our saved disposition, and ours goes back in: stray signals meet what the
/// application set, and probes keep working. A real handler found in place of ours (installed
/// by the previous handler or by another thread) is left alone: the kernel calls it first, as
/// it would without us. This read is the one syscall chaining always adds (plus the
/// `rt_sigprocmask` of `chain` when our action's mask is not the previous handler's).
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
    let ours = prev.ours();
    let mut replaced = KernelSigaction::default();
    // SAFETY: valid pointers; `ours` names an SA_SIGINFO handler and its restorer.
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
/// delivered as we return, before the interrupted code runs again (or at once, inside the
/// handler, when the signal is not blocked here: our action adopted `SA_NODEFER`, or a later
/// handler called us; the process ends the same way). A fault would also execute again and
/// fault under `SIG_DFL`.
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
