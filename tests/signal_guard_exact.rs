//! SignalGuard must hand every fault that is not a probe's to the application's earlier
//! SIGSEGV/SIGBUS disposition *exactly as the kernel would have delivered it*: the same handler
//! calls with the same arguments, the same signal mask while the handler runs
//! (`uc_sigmask | sa_mask | {sig}`, the signal itself left out under `SA_NODEFER`),
//! `SA_RESETHAND` honoured once, `SIG_DFL` and `SIG_IGN` as the kernel treats a fault or a sent
//! signal, and on the same stack: a handler without `SA_ONSTACK` on the interrupted thread's
//! stack, one with it on the alternate stack. Each handler call records whether it ran on the
//! alternate stack; cases with a handler that needs 40 KiB of stack, and with a handler that
//! probes on a thread whose alternate stack holds one signal frame plus 2 KiB (sized from the
//! frame this CPU really takes, `support::signal_frame_size`), make a wrong stack fatal on any
//! CPU. A sent signal that interrupts a slow syscall (`read` of an empty pipe) shows whether the
//! syscall restarted (`SA_RESTART`) or failed with `EINTR`.
//!
//! Every case is run twice, each time in a fresh child process (a re-execution of this binary,
//! which has `harness = false` so that the case runs on the child's only thread, where a
//! process-directed `kill` lands):
//!
//! - **control**: the application installs its disposition and never installs SignalGuard (the
//!   probes its handler makes use `SigprocMask`, which installs nothing);
//! - **guard**: the same program, with a SignalGuard `Prober` created after the application's
//!   disposition (so the crate's handler is the one the kernel calls), whose probes the
//!   application's handler uses.
//!
//! The two children must end the same way (exit status or terminating signal) and print the
//! same observations (every handler call, the mask it ran with, its siginfo, its probes, what
//! the program saw afterwards). Each child is killed after 10 s: a hang is a failure.
//!
//! Usage: `cargo test --test signal_guard_exact [-- NAME_SUBSTRING...]`.

mod support;

use core::fmt::Write as _;
use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use addrprobe::{Backend, Prober};
use support::{CHILD_ENV, ps, run_child_env};

const MODE_ENV: &str = "ADDRPROBE_EXACT_MODE";
const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The cases.

/// What the application's handler does with a fault.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Repairs the fault (makes the page readable, or the file long enough) and returns.
    Fixup,
    /// Returns without repairing anything, so a fault re-executes and faults again; on its
    /// third call it `_exit`s with 40 + calls.
    RefaultThenExit,
    /// Changes the `ucontext`: the program counter skips the faulting load (only a fault at
    /// the stray load; a sent signal returns untouched).
    SkipInstruction,
    /// Leaves with `siglongjmp` to the point saved before the trigger.
    Longjmp,
}

/// The application's disposition for SIGSEGV and SIGBUS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Disposition {
    Handler {
        siginfo: bool,
        resethand: bool,
        nodefer: bool,
        /// `sa_mask = {SIGUSR1}`.
        mask_usr1: bool,
        /// `SA_ONSTACK`.
        onstack: bool,
        /// `SA_RESTART`.
        restart: bool,
        kind: Kind,
    },
    Default,
    Ignore,
}

/// What hits the application after SignalGuard is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Trigger {
    /// A load from a PROT_NONE page (SIGSEGV, SEGV_ACCERR).
    SegvFault,
    /// A load beyond the end of a file (SIGBUS, BUS_ADRERR).
    BusFault,
    /// `kill(getpid(), SIGSEGV)` (SI_USER).
    KillSegv,
    /// `kill(getpid(), SIGBUS)` (SI_USER).
    KillBus,
    /// `raise(SIGSEGV)` (tgkill, SI_TKILL).
    RaiseSegv,
    /// `raise(SIGSEGV)`, then a SIGSEGV fault.
    RaiseThenFault,
    /// A `clone` child whose `exit_signal` is SIGSEGV exits: the kernel sends the parent
    /// SIGSEGV with `si_code = CLD_EXITED` (1, as `SEGV_MAPERR`), a sent signal.
    ChildExitSegv,
    /// A SIGSEGV from another thread (`tgkill`) interrupts this thread's `read` of an empty
    /// pipe: restarted under `SA_RESTART`, `EINTR` without it.
    SentDuringRead,
    /// A thread overflows its stack: the kernel cannot build a frame there for a handler
    /// without `SA_ONSTACK` and kills the process with SIGSEGV.
    StackOverflow,
}

/// The stack the case runs the application's handler on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stacks {
    /// The main thread's own stack and std's alternate stack.
    Std,
    /// The handler uses 40 KiB of stack (more than any alternate stack std installs).
    Deep,
    /// The main thread's alternate stack is one signal frame plus 2 KiB.
    SmallAltstack,
}

const TRIGGERS: [Trigger; 8] = [
    Trigger::SegvFault,
    Trigger::BusFault,
    Trigger::KillSegv,
    Trigger::KillBus,
    Trigger::RaiseSegv,
    Trigger::RaiseThenFault,
    Trigger::ChildExitSegv,
    Trigger::SentDuringRead,
];

#[derive(Clone, Copy, Debug)]
struct Case {
    disposition: Disposition,
    trigger: Trigger,
    /// Run as the init process of a new pid namespace (a container's main process), which
    /// the kernel does not let a sent signal with a default disposition kill.
    pid_ns_init: bool,
    stacks: Stacks,
}

impl Case {
    fn name(&self) -> String {
        let d = match self.disposition {
            Disposition::Handler {
                siginfo,
                resethand,
                nodefer,
                mask_usr1,
                onstack,
                restart,
                kind,
            } => {
                let mut s = String::from(if siginfo { "siginfo" } else { "plain" });
                if onstack {
                    s += "+onstack";
                }
                if restart {
                    s += "+restart";
                }
                if resethand {
                    s += "+resethand";
                }
                if nodefer {
                    s += "+nodefer";
                }
                if mask_usr1 {
                    s += "+mask_usr1";
                }
                s += match kind {
                    Kind::Fixup => "+fixup",
                    Kind::RefaultThenExit => "+refault_then_exit",
                    Kind::SkipInstruction => "+skip_instruction",
                    Kind::Longjmp => "+longjmp",
                };
                s
            }
            Disposition::Default => "sig_dfl".into(),
            Disposition::Ignore => "sig_ign".into(),
        };
        let ns = if self.pid_ns_init { "pid_ns_init/" } else { "" };
        let st = match self.stacks {
            Stacks::Std => "",
            Stacks::Deep => "deep40k/",
            Stacks::SmallAltstack => "small_altstack/",
        };
        format!("{ns}{st}{d}/{:?}", self.trigger)
    }
}

/// A handler disposition from flag bits: 1 `SA_SIGINFO`, 2 `SA_RESETHAND`, 4 `SA_NODEFER`,
/// 8 `sa_mask = {SIGUSR1}`, 16 `SA_ONSTACK`, 32 `SA_RESTART`.
fn handler(bits: u32, kind: Kind) -> Disposition {
    Disposition::Handler {
        siginfo: bits & 1 != 0,
        resethand: bits & 2 != 0,
        nodefer: bits & 4 != 0,
        mask_usr1: bits & 8 != 0,
        onstack: bits & 16 != 0,
        restart: bits & 32 != 0,
        kind,
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut push = |bits: &[u32], stacks: Stacks| {
        for &b in bits {
            for kind in [Kind::Fixup, Kind::RefaultThenExit] {
                for trigger in TRIGGERS {
                    v.push(Case {
                        disposition: handler(b, kind),
                        trigger,
                        pid_ns_init: false,
                        stacks,
                    });
                }
            }
        }
    };
    // Every combination of the first four flags; SA_ONSTACK and SA_RESTART with a few.
    let all: Vec<u32> = (0..16).collect();
    push(&all, Stacks::Std);
    push(&[16, 17, 21, 32, 33, 49, 53], Stacks::Std);
    // A handler that needs 40 KiB: without SA_ONSTACK it runs on the thread's stack.
    push(&[0, 1, 5, 33], Stacks::Deep);
    // A handler that probes (SA_NODEFER lets its SIGSEGV through) on a thread whose
    // alternate stack holds one signal frame and 2 KiB more.
    push(&[4, 5, 37], Stacks::SmallAltstack);
    // A handler that changes the ucontext (skips the faulting load), and one that leaves
    // with siglongjmp; a stack overflow under handlers without SA_ONSTACK.
    for bits in [1, 5, 17, 33] {
        for kind in [Kind::SkipInstruction, Kind::Longjmp] {
            for trigger in [
                Trigger::SegvFault,
                Trigger::BusFault,
                Trigger::KillSegv,
                Trigger::RaiseThenFault,
            ] {
                v.push(Case {
                    disposition: handler(bits, kind),
                    trigger,
                    pid_ns_init: false,
                    stacks: Stacks::Std,
                });
            }
        }
    }
    for disposition in [
        handler(0, Kind::RefaultThenExit),
        handler(1, Kind::Fixup),
        handler(33, Kind::RefaultThenExit),
        Disposition::Default,
        Disposition::Ignore,
    ] {
        v.push(Case {
            disposition,
            trigger: Trigger::StackOverflow,
            pid_ns_init: false,
            stacks: Stacks::Std,
        });
    }
    for disposition in [Disposition::Default, Disposition::Ignore] {
        for trigger in TRIGGERS {
            v.push(Case {
                disposition,
                trigger,
                pid_ns_init: false,
                stacks: Stacks::Std,
            });
        }
    }
    let counting = handler(1, Kind::RefaultThenExit);
    for disposition in [Disposition::Default, Disposition::Ignore, counting] {
        for trigger in TRIGGERS {
            v.push(Case {
                disposition,
                trigger,
                pid_ns_init: true,
                stacks: Stacks::Std,
            });
        }
    }
    v
}

// ---------------------------------------------------------------------------------------
// The parent: every case in a control child and a guard child, compared.

fn main() {
    if support::no_signal_guard_here("signal_guard_exact") {
        return;
    }
    if let Ok(name) = std::env::var(CHILD_ENV) {
        let guard = match std::env::var(MODE_ENV).as_deref() {
            Ok("guard") => true,
            Ok("control") => false,
            other => {
                eprintln!("bad {MODE_ENV}: {other:?}");
                std::process::exit(2);
            }
        };
        let Some(case) = cases().into_iter().find(|c| c.name() == name) else {
            eprintln!("unknown case {name:?}");
            std::process::exit(2);
        };
        child(case, guard);
        std::process::exit(0);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = cases();
    if args.iter().any(|a| a == "--list") {
        for c in &all {
            println!("{}: test", c.name());
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let chosen: Vec<&Case> = all
        .iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name().contains(f.as_str())))
        .collect();
    println!(
        "\nrunning {} tests (each in a control and a guard child process)",
        chosen.len()
    );
    let mut failed = Vec::new();
    for c in &chosen {
        let name = c.name();
        let result = std::panic::catch_unwind(|| compare(c));
        match result {
            Ok(Ok(())) => println!("test {name} ... ok"),
            Ok(Err(detail)) => {
                println!("test {name} ... FAILED");
                failed.push((name, detail));
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push((name, "the harness panicked (a child hung?)".to_string()));
            }
        }
    }
    for (name, detail) in &failed {
        println!("\n---- {name} ----\n{detail}");
    }
    let passed = chosen.len() - failed.len();
    if failed.is_empty() {
        println!("RELIABILITY chaining_exact.cases_identical_to_control={passed}");
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        passed,
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

/// How a child ended and what it observed.
#[derive(PartialEq, Eq, Debug)]
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    observations: Vec<String>,
}

fn run(case: &Case, mode: &str) -> (Outcome, String) {
    let out = run_child_env(&case.name(), &[(MODE_ENV, mode)], TIMEOUT);
    let observations = out
        .stdout
        .lines()
        .filter_map(|l| l.find("OBS ").map(|i| l[i..].to_string()))
        .collect();
    let outcome = Outcome {
        code: out.status.code(),
        signal: out.signal(),
        observations,
    };
    let raw = format!(
        "{mode}: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status, out.stdout, out.stderr
    );
    (outcome, raw)
}

fn compare(case: &Case) -> Result<(), String> {
    let (control, control_raw) = run(case, "control");
    let (guard, guard_raw) = run(case, "guard");
    // A case that cannot run here (a pid namespace case without pid namespaces) says why in
    // both children, and ends there.
    if let Some(why) = control
        .observations
        .iter()
        .find_map(|o| o.strip_prefix("OBS skipped: "))
    {
        if control != guard {
            return Err(format!(
                "only the control child skipped\n{control_raw}\n{guard_raw}"
            ));
        }
        println!("skipped: {}: {why}", case.name());
        return Ok(());
    }
    let sane = control.observations.iter().any(|o| o == "OBS ready");
    if !sane {
        return Err(format!(
            "the control child did not reach the trigger\n{control_raw}"
        ));
    }
    if let Some(why) = kernel_expectation(case, &control) {
        return Err(format!(
            "the control child did not behave as the kernel documents: {why}\n{control_raw}"
        ));
    }
    if control != guard {
        return Err(format!(
            "outcomes differ\n control: {control:?}\n guard:   {guard:?}\n{control_raw}\n{guard_raw}"
        ));
    }
    Ok(())
}

/// A few absolute checks on the control run, so that the comparison cannot pass with both
/// children broken the same way: the kernel's own rules for these dispositions.
fn kernel_expectation(case: &Case, control: &Outcome) -> Option<String> {
    let fault = matches!(
        case.trigger,
        Trigger::SegvFault | Trigger::BusFault | Trigger::RaiseThenFault
    );
    if case.trigger == Trigger::StackOverflow {
        return (control.signal != Some(libc::SIGSEGV))
            .then(|| "a stack overflow with no frame room kills with SIGSEGV".into());
    }
    let calls = control
        .observations
        .iter()
        .filter(|o| o.starts_with("OBS call"))
        .count();
    match case.disposition {
        Disposition::Default if case.pid_ns_init && !fault => (control.code != Some(0))
            .then(|| "a sent signal cannot kill a pid namespace's init by default".into()),
        Disposition::Default => {
            let want = if case.trigger == Trigger::BusFault || case.trigger == Trigger::KillBus {
                libc::SIGBUS
            } else {
                libc::SIGSEGV
            };
            (control.signal != Some(want)).then(|| format!("SIG_DFL must kill with {want}"))
        }
        Disposition::Ignore => {
            if fault {
                (control.signal != Some(libc::SIGSEGV) && control.signal != Some(libc::SIGBUS))
                    .then(|| "a fault under SIG_IGN must kill".to_string())
            } else {
                (control.code != Some(0)).then(|| "a sent signal under SIG_IGN is ignored".into())
            }
        }
        Disposition::Handler {
            resethand, kind, ..
        } => {
            if resethand && fault && kind == Kind::RefaultThenExit {
                (calls != 1 || control.signal.is_none())
                    .then(|| "SA_RESETHAND: one call, then the default action".to_string())
            } else if !resethand && fault && kind == Kind::RefaultThenExit {
                (control.code != Some(43)).then(|| "three calls, then _exit(43)".to_string())
            } else {
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The child.

/// The prober the application's handler uses: SignalGuard in the guard child, SigprocMask
/// (no signal handler) in the control child.
static PROBER: OnceLock<Prober> = OnceLock::new();
static CALLS: AtomicUsize = AtomicUsize::new(0);
static KIND: AtomicUsize = AtomicUsize::new(0);
static READABLE: AtomicUsize = AtomicUsize::new(0);
static UNREADABLE: AtomicUsize = AtomicUsize::new(0);
static STRAY_SEGV: AtomicUsize = AtomicUsize::new(0);
static STRAY_BUS: AtomicUsize = AtomicUsize::new(0);
static MEMFD: AtomicI32 = AtomicI32::new(-1);
/// The handler uses 40 KiB of stack (`Stacks::Deep`).
static DEEP: AtomicUsize = AtomicUsize::new(0);

/// A line built on the stack and written with one `write(1)`: usable in a handler.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }
    fn emit(mut self) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
        // SAFETY: write from our own buffer; async-signal-safe.
        unsafe { libc::write(1, self.buf.as_ptr().cast(), self.len) };
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let b = s.as_bytes();
        let n = b.len().min(self.buf.len() - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        Ok(())
    }
}

/// The calling thread's signal mask, as the kernel keeps it (raw syscall: glibc hides
/// nothing when only reading, but the raw form shows the kernel's word exactly).
fn current_mask() -> u64 {
    let mut set = 0u64;
    // SAFETY: rt_sigprocmask with a NULL new set only writes 8 bytes into `set`.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            core::ptr::null::<u64>(),
            &mut set as *mut u64,
            8,
        )
    };
    set
}

fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

fn yes(mask: u64, sig: i32) -> &'static str {
    if mask & bit(sig) != 0 { "yes" } else { "no" }
}

fn describe_mask(line: &mut Line, mask: u64) {
    let _ = write!(
        line,
        " usr1={} usr2={} segv={} bus={} prof={} term={}",
        yes(mask, libc::SIGUSR1),
        yes(mask, libc::SIGUSR2),
        yes(mask, libc::SIGSEGV),
        yes(mask, libc::SIGBUS),
        yes(mask, libc::SIGPROF),
        yes(mask, libc::SIGTERM),
    );
}

/// Everything the application's handler does, for both signatures.
fn app_body(sig: i32, info: Option<&libc::siginfo_t>, ctx: *mut libc::c_void) {
    let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    let mask = current_mask();
    let mut line = Line::new();
    let _ = write!(
        line,
        "OBS call {n} sig={sig} altstack={}",
        if support::on_altstack() { "yes" } else { "no" }
    );
    if DEEP.load(Ordering::SeqCst) != 0 {
        // 40 KiB of stack, touched from the top down, so that a stack too small for it
        // faults on its guard page first.
        let mut buf = [0u8; 40 * 1024];
        for i in (0..buf.len()).rev().step_by(256) {
            // SAFETY: an index inside our own array.
            unsafe { core::ptr::write_volatile(&mut buf[i], 1) };
        }
        let _ = write!(line, " deep={}", core::hint::black_box(&buf)[0]);
    }
    let _ = write!(line, " blocked:");
    describe_mask(&mut line, mask);
    if let Some(info) = info {
        // SAFETY: the kernel's siginfo; si_addr is meaningful for faults, si_pid for kill.
        let (addr, pid) = unsafe { (info.si_addr() as usize, info.si_pid()) };
        let want = if sig == libc::SIGBUS {
            STRAY_BUS.load(Ordering::SeqCst)
        } else {
            STRAY_SEGV.load(Ordering::SeqCst)
        };
        let _ = write!(
            line,
            " si_code={} si_addr_is_stray={} ctx={}",
            info.si_code,
            info.si_code > 0 && addr == want,
            if ctx.is_null() { "null" } else { "set" }
        );
        if info.si_code <= 0 {
            // SAFETY: getpid has no preconditions.
            let _ = write!(line, " si_pid_is_self={}", pid == unsafe { libc::getpid() });
        }
        if !ctx.is_null() {
            // SAFETY: an SA_SIGINFO handler's third argument is the kernel's ucontext.
            let uc_mask = unsafe {
                *(&(*ctx.cast::<libc::ucontext_t>()).uc_sigmask as *const libc::sigset_t)
                    .cast::<u64>()
            };
            let _ = write!(line, " uc_sigmask:");
            describe_mask(&mut line, uc_mask);
        }
    }
    // Probes from inside the handler: a readable page always; a PROT_NONE page only when this
    // signal's mask lets SIGSEGV through (the documented rule for SignalGuard).
    if let Some(p) = PROBER.get() {
        let _ = write!(
            line,
            " probe_readable={:?}",
            p.check(READABLE.load(Ordering::SeqCst), 8)
        );
        if mask & bit(libc::SIGSEGV) == 0 {
            let _ = write!(
                line,
                " probe_unreadable={:?}",
                p.check(UNREADABLE.load(Ordering::SeqCst), 8)
            );
        }
    }
    line.emit();
    match KIND.load(Ordering::SeqCst) {
        KIND_SKIP => {
            // Only a fault of the stray load is skipped; a sent signal returns untouched.
            if let Some(info) = info
                && info.si_code > 0
                && !ctx.is_null()
            {
                // SAFETY: the kernel's ucontext of an SA_SIGINFO handler: only the PC moves,
                // past the stray load (whose address and length we know).
                unsafe { skip_stray_load(ctx) };
            }
            return;
        }
        KIND_LONGJMP => {
            // SAFETY: the jump buffer was filled by sigsetjmp in `child`, whose frame is still
            // live (the trigger runs inside it).
            unsafe { siglongjmp(core::ptr::addr_of_mut!(JMP).cast(), 1) };
        }
        _ => {}
    }
    if KIND.load(Ordering::SeqCst) == 1 {
        if n >= 3 {
            let mut l = Line::new();
            let _ = write!(l, "OBS exit {}", 40 + n);
            l.emit();
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(40 + n as i32) };
        }
        return;
    }
    // Fixup: make the stray access succeed when the instruction runs again.
    // SAFETY: mprotect of our own stray page; ftruncate of our own memfd.
    unsafe {
        if sig == libc::SIGSEGV {
            let page = STRAY_SEGV.load(Ordering::SeqCst);
            libc::mprotect(page as *mut libc::c_void, ps(), libc::PROT_READ);
        } else {
            libc::ftruncate(MEMFD.load(Ordering::SeqCst), 2 * ps() as libc::off_t);
        }
    }
}

extern "C" fn app_siginfo(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    app_body(sig, Some(unsafe { &*info }), ctx);
}

extern "C" fn app_plain(sig: libc::c_int) {
    app_body(sig, None, core::ptr::null_mut());
}

const KIND_SKIP: usize = 2;
const KIND_LONGJMP: usize = 3;

/// The stray access under test: one byte load of a known length at a known address, 3 bytes
/// on x86_64 (`movzx eax, byte ptr [rdi]`), 4 on arm64 (`ldrb w0, [x0]`).
///
/// # Safety
/// None: it is meant to fault, in a disposable child.
#[unsafe(naked)]
unsafe extern "C" fn stray_load_insn(addr: usize) -> u32 {
    #[cfg(target_arch = "x86_64")]
    core::arch::naked_asm!("movzx eax, byte ptr [rdi]", "ret");
    #[cfg(target_arch = "aarch64")]
    core::arch::naked_asm!("ldrb w0, [x0]", "ret");
}

const STRAY_LOAD_LEN: usize = if cfg!(target_arch = "x86_64") { 3 } else { 4 };

/// A byte load the compiler cannot remove: the stray access under test.
fn stray_load(addr: usize) -> u8 {
    // SAFETY: not safe at all: this is the stray fault under test, in a disposable child.
    unsafe { stray_load_insn(core::hint::black_box(addr)) as u8 }
}

/// Moves the interrupted PC past the stray load, if that is where it is.
///
/// # Safety
/// `ctx` must be the kernel's ucontext of the running handler.
unsafe fn skip_stray_load(ctx: *mut libc::c_void) {
    let at = stray_load_insn as *const () as usize;
    // SAFETY: the caller vouches for `ctx`.
    unsafe {
        let mc = &mut (*ctx.cast::<libc::ucontext_t>()).uc_mcontext;
        #[cfg(target_arch = "x86_64")]
        {
            let pc = &mut mc.gregs[libc::REG_RIP as usize];
            if *pc as usize == at {
                *pc += STRAY_LOAD_LEN as i64;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if mc.pc as usize == at {
                mc.pc += STRAY_LOAD_LEN as u64;
            }
        }
    }
}

/// A `sigjmp_buf`, larger than glibc's and musl's on x86_64 and arm64.
static mut JMP: [u64; 64] = [0; 64];

unsafe extern "C" {
    #[cfg_attr(target_env = "gnu", link_name = "__sigsetjmp")]
    fn sigsetjmp(env: *mut libc::c_void, savemask: libc::c_int) -> libc::c_int;
    fn siglongjmp(env: *mut libc::c_void, val: libc::c_int) -> !;
}

/// Overflows this thread's stack: each call holds 4 KiB, touched, until the guard page.
#[inline(never)]
fn overflow(depth: usize) -> usize {
    let mut buf = [0u8; 4096];
    // SAFETY: our own array.
    unsafe { core::ptr::write_volatile(&mut buf[0], depth as u8) };
    if core::hint::black_box(depth) == usize::MAX {
        return 0;
    }
    overflow(depth + 1) + usize::from(core::hint::black_box(&buf)[0])
}

/// Makes the rest of the case run as pid 1 of a new pid namespace: `unshare(CLONE_NEWPID)`
/// and `fork`; this process waits for the namespace's init and ends the same way (the same
/// exit status, or killed by the same signal). Without the privilege for a pid namespace the
/// case says so (`OBS skipped: ...`, which [`compare`] reports) and ends, in both children
/// alike: the feature probe is the `unshare` itself.
fn become_pid_ns_init() {
    // SAFETY: unshare affects only the children created afterwards; this process has one
    // thread, so fork leaves a consistent copy.
    unsafe {
        if libc::unshare(libc::CLONE_NEWPID) != 0 {
            let e = std::io::Error::last_os_error();
            let why = match e.raw_os_error() {
                Some(libc::EINVAL) => "this kernel has no pid namespaces",
                Some(libc::EPERM) => "no privilege for a pid namespace (CAP_SYS_ADMIN)",
                _ => "no pid namespace here",
            };
            obs(&format!("skipped: {why} (unshare(CLONE_NEWPID): {e})"));
            std::process::exit(0);
        }
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            assert_eq!(libc::getpid(), 1);
            return;
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let sig = libc::WTERMSIG(status);
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
        libc::_exit(99);
    }
}

/// Sends `sig` to this process (`kill`) or to this thread (`raise`, i.e. `tgkill`). The child
/// has one thread, so either way the signal is delivered before the call returns.
fn send(sig: i32, thread: bool) {
    // SAFETY: sending a signal to ourselves, in a disposable child that expects it.
    unsafe {
        if thread {
            libc::raise(sig);
        } else {
            libc::kill(libc::getpid(), sig);
        }
    }
}

/// A raw `clone` child with `exit_signal = SIGSEGV` exits at once; this process reaps it
/// (`__WALL`, the child is not a SIGCHLD child) and says so.
fn child_exits_with_segv() {
    support::clone_child_exits_with(libc::SIGSEGV);
    support::set_errno(1234);
    obs("reaped the clone child");
}

/// Another thread sends this thread SIGSEGV (`tgkill`) while it blocks in `read` of an empty
/// pipe, then writes one byte: under `SA_RESTART` the read restarts and returns it, without
/// it the read fails with `EINTR`.
fn sent_during_read() {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let w = fds[1];
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: a signal to a thread of this process, which the case expects.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), me, libc::SIGSEGV) };
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: one byte into our own pipe.
        unsafe { libc::write(w, [1u8].as_ptr().cast(), 1) };
    });
    let mut b = [0u8; 1];
    // SAFETY: a read into our own buffer.
    let n = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
    let e = support::errno();
    sender.join().unwrap();
    obs(&format!(
        "read returned {n}{}",
        if n < 0 {
            format!(" errno={e}")
        } else {
            String::new()
        }
    ));
    support::set_errno(1234);
}

fn obs(s: &str) {
    println!("OBS {s}");
}

fn child(case: Case, guard: bool) {
    // No core files from the children that are meant to crash.
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct; this process is a disposable child.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
    if case.pid_ns_init {
        become_pid_ns_init();
    }
    // Measured before anything is installed (a delivery on a thread of its own).
    let frame = support::signal_frame_size();

    // Fixtures: a readable and a PROT_NONE page for the handler's probes; a PROT_NONE page and
    // a page beyond the end of a memfd for the stray faults.
    let probe_pages = support::Region::anon(2);
    probe_pages.fill(0, &[7u8; 64]);
    probe_pages.protect(1, libc::PROT_NONE);
    READABLE.store(probe_pages.page(0), Ordering::SeqCst);
    UNREADABLE.store(probe_pages.page(1), Ordering::SeqCst);
    let stray = support::Region::anon(1);
    stray.protect(0, libc::PROT_NONE);
    STRAY_SEGV.store(stray.page(0), Ordering::SeqCst);
    // SAFETY: memfd_create with a static name; sizing and mapping our own memfd.
    let bus_page = unsafe {
        let fd = libc::memfd_create(c"exact".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, ps() as libc::off_t), 0);
        let p = libc::mmap(
            core::ptr::null_mut(),
            2 * ps(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        MEMFD.store(fd, Ordering::SeqCst);
        p as usize + ps()
    };
    STRAY_BUS.store(bus_page, Ordering::SeqCst);

    // The application's disposition for SIGSEGV and SIGBUS.
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: an all-zero sigaction is valid; the handler matches the flags; disposable
        // child.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            libc::sigemptyset(&mut sa.sa_mask);
            match case.disposition {
                Disposition::Handler {
                    siginfo,
                    resethand,
                    nodefer,
                    mask_usr1,
                    onstack,
                    restart,
                    kind,
                } => {
                    if onstack {
                        sa.sa_flags |= libc::SA_ONSTACK;
                    }
                    if restart {
                        sa.sa_flags |= libc::SA_RESTART;
                    }
                    KIND.store(
                        match kind {
                            Kind::Fixup => 0,
                            Kind::RefaultThenExit => 1,
                            Kind::SkipInstruction => KIND_SKIP,
                            Kind::Longjmp => KIND_LONGJMP,
                        },
                        Ordering::SeqCst,
                    );
                    if siginfo {
                        sa.sa_sigaction = app_siginfo as *const () as usize;
                        sa.sa_flags |= libc::SA_SIGINFO;
                    } else {
                        sa.sa_sigaction = app_plain as *const () as usize;
                    }
                    if resethand {
                        sa.sa_flags |= libc::SA_RESETHAND;
                    }
                    if nodefer {
                        sa.sa_flags |= libc::SA_NODEFER;
                    }
                    if mask_usr1 {
                        libc::sigaddset(&mut sa.sa_mask, libc::SIGUSR1);
                    }
                }
                Disposition::Default => sa.sa_sigaction = libc::SIG_DFL,
                Disposition::Ignore => sa.sa_sigaction = libc::SIG_IGN,
            }
            assert_eq!(libc::sigaction(sig, &sa, core::ptr::null_mut()), 0);
        }
    }

    // The prober, created after the application's disposition.
    let p = if guard {
        Prober::new(Backend::SignalGuard).expect("signal-guard")
    } else {
        Prober::new(Backend::SigprocMask).expect("sigprocmask")
    };
    let mut faulted = 0;
    for _ in 0..20 {
        faulted += usize::from(p.check(probe_pages.page(1), 8) == Ok(false));
        assert_eq!(p.check(probe_pages.page(0), 8), Ok(true));
    }
    PROBER.set(p).ok().unwrap();
    obs(&format!("probes answered no: {faulted}"));
    obs(&format!(
        "app calls before the trigger: {}",
        CALLS.load(Ordering::SeqCst)
    ));

    // The interrupted context blocks SIGUSR2: every handler must run with it blocked.
    // SAFETY: sigset manipulation on our own stack; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut()),
            0
        );
    }
    match case.stacks {
        // Room for the test handler (an unoptimised build's formatting needs more than the
        // 8 KiB std gives), nested frames included.
        Stacks::Std => support::small_altstack(4 * frame + 64 * 1024),
        Stacks::Deep => DEEP.store(1, Ordering::SeqCst),
        Stacks::SmallAltstack => support::small_altstack(frame + 2048),
    }
    support::set_errno(1234);
    obs("ready");
    // The point a `Longjmp` handler leaves to (its frame, this one, stays live throughout the
    // trigger). Nothing that changes between here and a longjmp is read afterwards.
    // SAFETY: a buffer of our own, larger than the libc's sigjmp_buf.
    if unsafe { sigsetjmp(core::ptr::addr_of_mut!(JMP).cast(), 1) } != 0 {
        obs("longjmp landed");
    } else {
        match case.trigger {
            Trigger::SegvFault => {
                stray_load(STRAY_SEGV.load(Ordering::SeqCst));
            }
            Trigger::BusFault => {
                stray_load(STRAY_BUS.load(Ordering::SeqCst));
            }
            Trigger::KillSegv => send(libc::SIGSEGV, false),
            Trigger::KillBus => send(libc::SIGBUS, false),
            Trigger::RaiseSegv => send(libc::SIGSEGV, true),
            Trigger::RaiseThenFault => {
                send(libc::SIGSEGV, true);
                obs(&format!(
                    "after raise: calls={}",
                    CALLS.load(Ordering::SeqCst)
                ));
                stray_load(STRAY_SEGV.load(Ordering::SeqCst));
            }
            Trigger::ChildExitSegv => child_exits_with_segv(),
            Trigger::SentDuringRead => sent_during_read(),
            Trigger::StackOverflow => {
                let t = std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(|| overflow(0))
                    .expect("thread");
                obs(&format!("overflow returned {:?}", t.join().is_ok()));
            }
        }
    }
    let errno = support::errno();
    let mut line = Line::new();
    let _ = write!(
        line,
        "OBS survived: calls={} errno={errno} blocked:",
        CALLS.load(Ordering::SeqCst)
    );
    describe_mask(&mut line, current_mask());
    line.emit();
    // The prober still works after whatever the disposition did (SA_RESETHAND included).
    let p = PROBER.get().unwrap();
    obs(&format!(
        "probes after: {:?} {:?}",
        p.check(probe_pages.page(1), 8),
        p.check(probe_pages.page(0), 8)
    ));
}
