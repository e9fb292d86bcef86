//! `SignalGuard` installs a process-wide SIGSEGV/SIGBUS handler. It must catch only the
//! faults of its own guarded loads and hand every other fault to whatever was installed
//! before, so that a real crash still crashes. Every case runs in a child process (a
//! re-execution of this test binary) and the parent checks how the child ended.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use addrprobe::{Backend, Prober};
use support::{Region, figure, is_child, ps, run_child};

/// No core files from the children that are meant to crash.
fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct; this process is a disposable child.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// A byte load the compiler cannot remove or check: a stray access, not a probe.
fn stray_load(addr: usize) -> u8 {
    let v: u8;
    // SAFETY: not safe at all: this is the stray fault under test; the child is meant to die
    // (or a handler of the test's own to take over).
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("mov {v}, byte ptr [{a}]", a = in(reg) addr, v = out(reg_byte) v, options(nostack, readonly));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly));
    };
    v
}

/// A prober whose faulting probes work (the handler is installed and answers "no").
fn guard() -> Prober {
    let p = Prober::new(Backend::SignalGuard).expect("signal-guard");
    let r = Region::anon(2);
    r.protect(1, libc::PROT_NONE);
    for _ in 0..100 {
        assert_eq!(p.check(r.page(1), 8), Ok(false));
        assert_eq!(p.check(r.page(0), 8), Ok(true));
    }
    p
}

fn expect_signal(test: &str, sig: i32) {
    let out = run_child(test);
    assert_eq!(
        out.signal(),
        Some(sig),
        "{test}: the child should have died of signal {sig}: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("CHILD READY"),
        "{test}: the child did not reach the fault:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    figure(&format!("chaining.{test}"), "passed");
}

#[test]
fn stray_null_load_still_dies_of_sigsegv() {
    if support::no_signal_guard_here("stray_null_load_still_dies_of_sigsegv") {
        return;
    }
    if is_child("stray_null_load_still_dies_of_sigsegv") {
        no_core_dumps();
        let _p = guard();
        println!("CHILD READY");
        stray_load(core::hint::black_box(0));
        println!("CHILD SURVIVED");
        return;
    }
    expect_signal("stray_null_load_still_dies_of_sigsegv", libc::SIGSEGV);
}

/// A MAP_SHARED mapping of a one-page file over two pages: the second is beyond EOF.
fn beyond_eof_page() -> usize {
    // SAFETY: memfd_create with a static name.
    let fd = unsafe { libc::memfd_create(c"beyond-eof".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: sizing and mapping our own memfd.
    unsafe {
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
        p as usize + ps()
    }
}

#[test]
fn stray_load_beyond_eof_still_dies_of_sigbus() {
    if support::no_signal_guard_here("stray_load_beyond_eof_still_dies_of_sigbus") {
        return;
    }
    if is_child("stray_load_beyond_eof_still_dies_of_sigbus") {
        no_core_dumps();
        let p = guard();
        let page = beyond_eof_page();
        // The guarded load itself gets SIGBUS there and answers "no".
        assert_eq!(p.check(page, 8), Ok(false));
        println!("CHILD READY");
        stray_load(page);
        println!("CHILD SURVIVED");
        return;
    }
    expect_signal("stray_load_beyond_eof_still_dies_of_sigbus", libc::SIGBUS);
}

static PREV_CALLS: AtomicUsize = AtomicUsize::new(0);
static PREV_WANT_ADDR: AtomicUsize = AtomicUsize::new(0);

/// The application's own SA_SIGINFO handler: checks it got the right siginfo and exits 42.
extern "C" fn app_handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    PREV_CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let code = if (sig == libc::SIGSEGV || sig == libc::SIGBUS)
        && addr == PREV_WANT_ADDR.load(Ordering::SeqCst)
        && !ctx.is_null()
    {
        42
    } else {
        43
    };
    let msg = b"APP HANDLER CALLED\n";
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(1, msg.as_ptr().cast(), msg.len());
        libc::_exit(code);
    }
}

extern "C" fn app_plain_handler(sig: libc::c_int) {
    let msg = b"APP PLAIN HANDLER CALLED\n";
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(1, msg.as_ptr().cast(), msg.len());
        libc::_exit(if sig == libc::SIGSEGV { 44 } else { 45 });
    }
}

fn install_app_handler(sig: i32, siginfo: bool) {
    // SAFETY: installing a handler with the matching signature in a disposable child.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        if siginfo {
            sa.sa_sigaction = app_handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
        } else {
            sa.sa_sigaction = app_plain_handler as *const () as usize;
        }
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, core::ptr::null_mut()), 0);
    }
}

/// An SA_SIGINFO handler installed before the prober still gets stray faults (with their
/// siginfo), and never the probes' own faults.
#[test]
fn previous_siginfo_handler_still_called() {
    if support::no_signal_guard_here("previous_siginfo_handler_still_called") {
        return;
    }
    if is_child("previous_siginfo_handler_still_called") {
        no_core_dumps();
        install_app_handler(libc::SIGSEGV, true);
        let _p = guard(); // 100 faulting probes
        assert_eq!(
            PREV_CALLS.load(Ordering::SeqCst),
            0,
            "probe faults reached the app's handler"
        );
        let r = Region::anon(1);
        r.protect(0, libc::PROT_NONE);
        PREV_WANT_ADDR.store(r.page(0) + 5, Ordering::SeqCst);
        println!("CHILD READY");
        stray_load(r.page(0) + 5);
        println!("CHILD SURVIVED");
        return;
    }
    let out = run_child("previous_siginfo_handler_still_called");
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    assert!(out.stdout.contains("APP HANDLER CALLED"), "{out:?}");
    figure("chaining.previous_siginfo_handler_still_called", "passed");
}

/// The same for SIGBUS, with a plain (non-SA_SIGINFO) handler.
#[test]
fn previous_plain_sigbus_handler_still_called() {
    if support::no_signal_guard_here("previous_plain_sigbus_handler_still_called") {
        return;
    }
    if is_child("previous_plain_sigbus_handler_still_called") {
        no_core_dumps();
        install_app_handler(libc::SIGBUS, false);
        let p = guard();
        let page = beyond_eof_page();
        assert_eq!(p.check(page, 8), Ok(false));
        println!("CHILD READY");
        stray_load(page);
        println!("CHILD SURVIVED");
        return;
    }
    let out = run_child("previous_plain_sigbus_handler_still_called");
    assert_eq!(out.status.code(), Some(45), "{out:?}");
    figure(
        "chaining.previous_plain_sigbus_handler_still_called",
        "passed",
    );
}

fn recurse(n: u64) -> u64 {
    let buf = core::hint::black_box([n as u8; 512]);
    if n == u64::MAX {
        return 0;
    }
    recurse(n + 1).wrapping_add(buf[(n % 512) as usize] as u64)
}

/// Rust's own SIGSEGV handler, installed by std before the prober, still reports a stack
/// overflow.
#[test]
fn rust_stack_overflow_message_still_printed() {
    if support::no_signal_guard_here("rust_stack_overflow_message_still_printed") {
        return;
    }
    if is_child("rust_stack_overflow_message_still_printed") {
        no_core_dumps();
        let _p = guard();
        println!("CHILD READY");
        let t = std::thread::Builder::new()
            .name("overflower".into())
            .stack_size(256 * 1024)
            .spawn(|| recurse(0))
            .unwrap();
        let _ = t.join();
        println!("CHILD SURVIVED");
        return;
    }
    let out = run_child("rust_stack_overflow_message_still_printed");
    assert!(
        out.stderr.contains("has overflowed its stack"),
        "no stack overflow message: {out:?}"
    );
    assert!(
        matches!(out.signal(), Some(libc::SIGABRT | libc::SIGSEGV)),
        "the child should have died of SIGABRT or SIGSEGV: {out:?}"
    );
    figure(
        "chaining.rust_stack_overflow_message_still_printed",
        "passed",
    );
}

/// A SIGSEGV sent with `kill` is not a fault of ours: it goes where it would go without the
/// crate. Rust's std handler (installed before `main`) resets the disposition to `SIG_DFL` and
/// returns, so the first one is survived and the second one kills, with or without
/// SignalGuard; in between, faulting probes keep working (the crate takes the `SIG_DFL` that
/// std's handler set as its own previous disposition and keeps its handler installed).
#[test]
fn sent_sigsegv_meets_std_handler_as_without_the_crate() {
    if support::no_signal_guard_here("sent_sigsegv_meets_std_handler_as_without_the_crate") {
        return;
    }
    const NAME: &str = "sent_sigsegv_meets_std_handler_as_without_the_crate";
    if is_child(NAME) {
        no_core_dumps();
        let guard_mode = std::env::var("ADDRPROBE_MODE").as_deref() == Ok("guard");
        let p = if guard_mode {
            guard()
        } else {
            Prober::new(Backend::SigprocMask).expect("sigprocmask")
        };
        let r = Region::anon(1);
        r.protect(0, libc::PROT_NONE);
        println!("CHILD READY");
        for round in 1..=2 {
            // SAFETY: kill on our own pid; the child may die.
            unsafe { libc::kill(libc::getpid(), libc::SIGSEGV) };
            // Give the signal every chance to arrive (it goes to any thread, most likely the
            // harness's main thread).
            std::thread::sleep(std::time::Duration::from_millis(200));
            println!("SURVIVED KILL {round}");
            println!("PROBE {:?}", p.check(r.page(0), 8));
        }
        return;
    }
    let run = |mode: &str| {
        let out = support::run_child_env(
            NAME,
            &[("ADDRPROBE_MODE", mode)],
            std::time::Duration::from_secs(14),
        );
        let lines: Vec<String> = out
            .stdout
            .lines()
            .filter(|l| l.contains("SURVIVED") || l.starts_with("PROBE"))
            .map(String::from)
            .collect();
        (out.signal(), out.status.code(), lines, out)
    };
    let control = run("control");
    let guard = run("guard");
    assert_eq!(
        (control.0, control.1, &control.2),
        (
            Some(libc::SIGSEGV),
            None,
            &vec!["SURVIVED KILL 1".to_string(), "PROBE Ok(false)".into()]
        ),
        "without the crate: {:?}",
        control.3
    );
    assert_eq!(
        (guard.0, guard.1, &guard.2),
        (control.0, control.1, &control.2),
        "with SignalGuard: {:?}",
        guard.3
    );
    figure(&format!("chaining.{NAME}"), "passed");
}

/// A sent SIGSEGV must not leave the process without the guard: if it were swallowed by a
/// previous handler that resets the disposition, the next faulting probe would kill.
#[test]
fn sent_sigsegv_to_app_handler_keeps_guard_working() {
    if support::no_signal_guard_here("sent_sigsegv_to_app_handler_keeps_guard_working") {
        return;
    }
    if is_child("sent_sigsegv_to_app_handler_keeps_guard_working") {
        // The application handles sent SIGSEGVs itself (a plain counting handler).
        extern "C" fn count(_: libc::c_int) {
            PREV_CALLS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: installing a handler with the matching signature in a disposable child.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = count as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGSEGV, &sa, core::ptr::null_mut()),
                0
            );
        }
        let p = guard();
        for _ in 0..10 {
            // SAFETY: a thread-directed SIGSEGV (delivered before raise returns), handled by
            // `count`.
            unsafe { libc::raise(libc::SIGSEGV) };
        }
        assert_eq!(
            PREV_CALLS.load(Ordering::SeqCst),
            10,
            "the app's handler missed sent signals"
        );
        let r = Region::anon(1);
        r.protect(0, libc::PROT_NONE);
        assert_eq!(p.check(r.page(0), 8), Ok(false));
        assert_eq!(
            PREV_CALLS.load(Ordering::SeqCst),
            10,
            "a probe fault reached the app"
        );
        return;
    }
    let out = run_child("sent_sigsegv_to_app_handler_keeps_guard_working");
    out.assert_success();
    figure(
        "chaining.sent_sigsegv_to_app_handler_keeps_guard_working",
        "passed",
    );
}

/// Sixteen threads create SignalGuard probers at once. The handler must be installed once:
/// installed twice, it would have saved itself as the "previous" handler, and a stray fault
/// would loop through it instead of reaching the application's handler.
#[test]
fn concurrent_install_installs_once() {
    if support::no_signal_guard_here("concurrent_install_installs_once") {
        return;
    }
    if is_child("concurrent_install_installs_once") {
        no_core_dumps();
        install_app_handler(libc::SIGSEGV, true);
        let barrier = std::sync::Barrier::new(16);
        let r = Region::anon(2);
        r.protect(1, libc::PROT_NONE);
        let (a0, a1) = (r.page(0), r.page(1));
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    barrier.wait();
                    let p = Prober::new(Backend::SignalGuard).expect("signal-guard");
                    for _ in 0..100 {
                        assert_eq!(p.check(a1, 8), Ok(false));
                        assert_eq!(p.check(a0, 8), Ok(true));
                    }
                });
            }
        });
        assert_eq!(
            PREV_CALLS.load(Ordering::SeqCst),
            0,
            "probe faults reached the app's handler"
        );
        PREV_WANT_ADDR.store(a1, Ordering::SeqCst);
        println!("CHILD READY");
        stray_load(a1);
        println!("CHILD SURVIVED");
        return;
    }
    let out = run_child("concurrent_install_installs_once");
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    assert_eq!(
        out.stdout.matches("APP HANDLER CALLED").count(),
        1,
        "{out:?}"
    );
    figure("chaining.concurrent_install_installs_once", "passed");
}

// ---------------------------------------------------------------------------------------
// An application thread installs its SIGSEGV handler while the main thread creates the first
// SignalGuard prober. Whatever the order, the application's handler must not be lost: a
// handler that another thread installs between reading the old disposition and setting the
// new one would be overwritten, and stray signals would never reach it again.

/// The application's handler saved here what it replaced (written by `sigaction` itself).
static mut APP_OLD: core::mem::MaybeUninit<libc::sigaction> = core::mem::MaybeUninit::zeroed();
static APP_OLD_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static APP_SENT: AtomicUsize = AtomicUsize::new(0);

/// Chains a fault to `old` the way a careful application does: with all three arguments to
/// an SA_SIGINFO handler; a default disposition is restored and the fault re-executes.
///
/// # Safety
/// Only from a SIGSEGV/SIGBUS handler, with its arguments.
unsafe fn chain_like_an_app(
    old: &libc::sigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    if old.sa_sigaction == libc::SIG_DFL || old.sa_sigaction == libc::SIG_IGN {
        // SAFETY: restoring the default disposition; the fault re-executes and kills.
        unsafe {
            let mut dfl: libc::sigaction = core::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, core::ptr::null_mut());
        }
    } else if old.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO the saved address is a three-argument handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { core::mem::transmute(old.sa_sigaction) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the saved address is a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { core::mem::transmute(old.sa_sigaction) };
        f(sig);
    }
}

/// Counts sent SIGSEGVs (its own business) and chains every fault to what it replaced.
extern "C" fn app_counting_chaining(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // SAFETY: the kernel's siginfo.
    if unsafe { (*info).si_code } <= 0 {
        APP_SENT.fetch_add(1, Ordering::SeqCst);
        return;
    }
    // The installing thread may still be inside sigaction: wait for what it replaced.
    for _ in 0..1_000_000_000u64 {
        if APP_OLD_READY.load(Ordering::Acquire) {
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: APP_OLD was written by sigaction before APP_OLD_READY was set.
    unsafe {
        let old = (*core::ptr::addr_of!(APP_OLD)).assume_init_ref();
        chain_like_an_app(old, sig, info, ctx);
    }
}

const RACE_CHILDREN: usize = 300;

fn child_install_race() {
    no_core_dumps();
    let delay: u64 = std::env::var("ADDRPROBE_RACE_DELAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Warm up everything Prober::new does before it installs the handler, so that the
    // install itself starts right after the start signal.
    drop(Prober::new(Backend::Msync).expect("msync"));
    let go = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(1);
            go.fetch_add(1, Ordering::SeqCst);
            while go.load(Ordering::SeqCst) < 2 {
                core::hint::spin_loop();
            }
            for _ in 0..delay {
                core::hint::spin_loop();
            }
            // SAFETY: installing a handler with the matching signature; `sigaction` writes
            // what it replaced into APP_OLD before we publish it.
            unsafe {
                let mut sa: libc::sigaction = core::mem::zeroed();
                sa.sa_sigaction = app_counting_chaining as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut sa.sa_mask);
                let r = libc::sigaction(
                    libc::SIGSEGV,
                    &sa,
                    (*core::ptr::addr_of_mut!(APP_OLD)).as_mut_ptr(),
                );
                assert_eq!(r, 0);
            }
            APP_OLD_READY.store(true, Ordering::Release);
        });
        pin_to_cpu(0);
        while go.load(Ordering::SeqCst) < 1 {
            core::hint::spin_loop();
        }
        go.store(2, Ordering::SeqCst);
        let p = Prober::new(Backend::SignalGuard).expect("signal-guard");
        std::mem::forget(p);
    });
    // Faulting probes still answer "no" whichever handler the kernel calls first.
    let p = Prober::new(Backend::SignalGuard).expect("signal-guard");
    let r = Region::anon(2);
    r.protect(1, libc::PROT_NONE);
    for _ in 0..10 {
        assert_eq!(p.check(r.page(1), 8), Ok(false));
        assert_eq!(p.check(r.page(0), 8), Ok(true));
    }
    println!("CHILD READY");
    // SAFETY: a thread-directed SIGSEGV, handled by whichever handler the kernel calls.
    unsafe { libc::raise(libc::SIGSEGV) };
    let got = APP_SENT.load(Ordering::SeqCst);
    println!("APP HANDLER SAW {got} SENT SIGNALS");
    std::process::exit(if got == 1 { 0 } else { 1 });
}

/// Runs the calling thread on `cpu` only, if the machine has it (best effort).
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a cpu_set_t on the stack, applied to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Many fresh children, each racing an application install against the first SignalGuard
/// install with a different delay. In every child a sent SIGSEGV must reach the application's
/// handler exactly once.
#[test]
fn concurrent_app_install_is_never_lost() {
    if support::no_signal_guard_here("concurrent_app_install_is_never_lost") {
        return;
    }
    if is_child("concurrent_app_install_is_never_lost") {
        return child_install_race();
    }
    let mut lost = Vec::new();
    for i in 0..RACE_CHILDREN {
        let delay = (i * 7 % RACE_CHILDREN).to_string();
        let out = support::run_child_env(
            "concurrent_app_install_is_never_lost",
            &[("ADDRPROBE_RACE_DELAY", &delay)],
            std::time::Duration::from_secs(10),
        );
        if !out.status.success() {
            lost.push((delay, format!("{:?} {}", out.status, out.stdout.trim())));
        }
    }
    figure("chaining.install_race_children", RACE_CHILDREN);
    figure("chaining.install_race_handlers_lost", lost.len());
    assert!(
        lost.is_empty(),
        "{} of {RACE_CHILDREN} children lost the application's handler (delay, status): {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------
// Handlers installed after SignalGuard that chain to it.

static LATER_CALLS: AtomicUsize = AtomicUsize::new(0);
static mut LATER_OLD: core::mem::MaybeUninit<libc::sigaction> = core::mem::MaybeUninit::zeroed();

/// An application handler installed after the prober: counts, then chains to what it
/// replaced (the crate's handler) with all three arguments.
extern "C" fn later_handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    LATER_CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: LATER_OLD was filled by sigaction before the first fault; we chain with our own
    // arguments.
    unsafe {
        let old = (*core::ptr::addr_of!(LATER_OLD)).assume_init_ref();
        chain_like_an_app(old, sig, info, ctx);
    }
}

const LATER_VARIANTS: [(&str, i32, bool); 5] = [
    ("siginfo", libc::SA_SIGINFO, false),
    ("nodefer", libc::SA_SIGINFO | libc::SA_NODEFER, false),
    ("onstack", libc::SA_SIGINFO | libc::SA_ONSTACK, false),
    ("mask_usr1", libc::SA_SIGINFO, true),
    ("resethand", libc::SA_SIGINFO | libc::SA_RESETHAND, false),
];

fn child_later_handler() {
    no_core_dumps();
    let variant = std::env::var("ADDRPROBE_LATER").unwrap();
    let &(_, flags, mask_usr1) = LATER_VARIANTS
        .iter()
        .find(|v| v.0 == variant)
        .expect("variant");
    let p = guard();
    // SAFETY: installing a handler with the matching signature; `sigaction` fills LATER_OLD
    // before any fault can reach the new handler on this (only probing) thread.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = later_handler as *const () as usize;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        if mask_usr1 {
            libc::sigaddset(&mut sa.sa_mask, libc::SIGUSR1);
        }
        let old = (*core::ptr::addr_of_mut!(LATER_OLD)).as_mut_ptr();
        assert_eq!(libc::sigaction(libc::SIGSEGV, &sa, old), 0);
    }
    let r = Region::anon(2);
    r.fill(0, &[9u8; 16]);
    r.protect(1, libc::PROT_NONE);
    println!("CHILD READY");
    for i in 0..100 {
        assert_eq!(p.check(r.page(1), 8), Ok(false), "faulting probe {i}");
        let mut buf = [0u8; 16];
        assert_eq!(p.read(r.page(0), &mut buf), Ok(true));
        assert_eq!(buf, [9u8; 16]);
        println!("PROBE {i} OK");
    }
    assert_eq!(LATER_CALLS.load(Ordering::SeqCst), 100);
    println!("LATER HANDLER CALLS 100");
    // A stray fault goes through the later handler and the crate's to std's, which restores
    // the default: the process dies of SIGSEGV.
    stray_load(r.page(1));
    println!("CHILD SURVIVED");
}

/// Handlers installed after the prober that chain to the crate's handler, with various
/// flags: faulting probes still answer "no" (through them), and a stray fault still kills. A
/// one-shot handler (`SA_RESETHAND`) is gone after the first fault, and with it the crate's
/// handler: the kernel kills the process at the second faulting probe, as documented.
#[test]
fn later_handlers_that_chain_keep_probes_working() {
    if support::no_signal_guard_here("later_handlers_that_chain_keep_probes_working") {
        return;
    }
    const NAME: &str = "later_handlers_that_chain_keep_probes_working";
    if is_child(NAME) {
        return child_later_handler();
    }
    for (variant, _, _) in LATER_VARIANTS {
        let out = support::run_child_env(
            NAME,
            &[("ADDRPROBE_LATER", variant)],
            std::time::Duration::from_secs(14),
        );
        assert_eq!(out.signal(), Some(libc::SIGSEGV), "{variant}: {out:?}");
        assert!(out.stdout.contains("CHILD READY"), "{variant}: {out:?}");
        if variant == "resethand" {
            assert!(out.stdout.contains("PROBE 0 OK"), "{variant}: {out:?}");
            assert!(!out.stdout.contains("PROBE 1 OK"), "{variant}: {out:?}");
        } else {
            assert!(
                out.stdout.contains("LATER HANDLER CALLS 100"),
                "{variant}: {out:?}"
            );
        }
    }
    figure(&format!("chaining.{NAME}"), "passed");
}

// ---------------------------------------------------------------------------------------
// An alternate signal stack too small for a signal frame.

/// The crate installs no alternate stack of its own; its handler runs on the thread's (it has
/// `SA_ONSTACK`, so that a stack overflow can still be reported). On a thread whose alternate
/// stack cannot hold the kernel's signal frame, the kernel cannot deliver the fault of a
/// probe and kills the process with SIGSEGV, as it would for any SA_ONSTACK handler. Here the
/// alternate stack has 512 writable bytes above a PROT_NONE page.
#[test]
fn too_small_alternate_stack_dies_of_sigsegv() {
    if support::no_signal_guard_here("too_small_alternate_stack_dies_of_sigsegv") {
        return;
    }
    const NAME: &str = "too_small_alternate_stack_dies_of_sigsegv";
    if is_child(NAME) {
        no_core_dumps();
        let p = guard();
        // [PROT_NONE × n][readable page][PROT_NONE]: the alternate stack covers the n
        // inaccessible pages and the first 512 bytes of the readable one, so it is as large as
        // sigaltstack demands (MINSIGSTKSZ, or this CPU's frame size where the kernel checks
        // against AT_MINSIGSTKSZ) but only 512 bytes of it can hold a signal frame, less than
        // any CPU's frame.
        let n = support::signal_frame_size()
            .max(libc::MINSIGSTKSZ)
            .div_ceil(ps())
            .max(1);
        let r = Region::anon(n + 2);
        for i in 0..n {
            r.protect(i, libc::PROT_NONE);
        }
        r.protect(n + 1, libc::PROT_NONE);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ss = libc::stack_t {
                    ss_sp: r.page(0) as *mut libc::c_void,
                    ss_flags: 0,
                    ss_size: n * ps() + 512,
                };
                assert_eq!(
                    // SAFETY: a valid stack_t describing our own mapping; this thread is not
                    // on its alternate stack.
                    unsafe { libc::sigaltstack(&ss, core::ptr::null_mut()) },
                    0,
                    "sigaltstack"
                );
                assert_eq!(p.check(r.page(n), 8), Ok(true), "no fault, no signal frame");
                println!("CHILD READY");
                let got = p.check(r.page(n + 1), 8);
                println!("CHILD SURVIVED {got:?}");
            });
        });
        return;
    }
    expect_signal(NAME, libc::SIGSEGV);
}

// ---------------------------------------------------------------------------------------
// Sent SIGSEGV/SIGBUS while probes fault.

static SENT_SEEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_sent(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo (the crate passes it on unchanged).
    if unsafe { (*info).si_code } <= 0 {
        SENT_SEEN.fetch_add(1, Ordering::SeqCst);
    } else {
        // A real fault was never meant to reach us.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(3) };
    }
}

const SENDS: usize = 500;

/// The prober thread probes `bad` (which faults) and `good` in a loop while the calling
/// thread sends it `sig` with `tgkill`, one at a time, `SENDS` times. Returns the probe rounds.
fn sends_during_probes(p: &Prober, bad: usize, good: usize, sig: i32) -> usize {
    let tid = std::sync::atomic::AtomicI32::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let wrong = AtomicUsize::new(0);
    let rounds = AtomicUsize::new(0);
    let first = SENT_SEEN.load(Ordering::SeqCst);
    let mut missing = None;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: gettid has no preconditions.
            tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            while !stop.load(Ordering::Relaxed) {
                wrong.fetch_add(usize::from(p.check(bad, 8) != Ok(false)), Ordering::Relaxed);
                wrong.fetch_add(usize::from(p.check(good, 8) != Ok(true)), Ordering::Relaxed);
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        });
        while tid.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        'sends: for i in 0..SENDS {
            // A bound against a lost signal, not a timing requirement: a delivery takes
            // microseconds.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            // SAFETY: a signal to a thread of this process that handles it.
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid(),
                    tid.load(Ordering::SeqCst),
                    sig,
                )
            };
            // One at a time: a second one sent while one is pending would merge with it.
            while SENT_SEEN.load(Ordering::SeqCst) <= first + i {
                if std::time::Instant::now() > deadline {
                    missing = Some(i);
                    break 'sends;
                }
                std::thread::yield_now();
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(
        missing, None,
        "a sent signal {sig} never reached the application"
    );
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "wrong probe answers");
    rounds.load(Ordering::Relaxed)
}

/// One thread probes in a loop (its loads fault all the time) while another sends it signals
/// with `tgkill` (`si_code` SI_TKILL), one at a time: SIGBUS while the probes fault with
/// SIGSEGV, then SIGSEGV while they fault with SIGBUS. A sent signal is never a probe's
/// fault, even when it lands while the thread sits at a load instruction: every one must
/// reach the application's handler, and every probe must answer correctly.
///
/// (A signal sent to a thread while one of its probes' faults *of the same signal number* is
/// pending is merged with it by the kernel, as standard signals do not queue, and never
/// delivered; that is why each phase sends the other signal. Documented in the crate.)
#[test]
fn sent_signals_during_faulting_probes_reach_the_app() {
    if support::no_signal_guard_here("sent_signals_during_faulting_probes_reach_the_app") {
        return;
    }
    const NAME: &str = "sent_signals_during_faulting_probes_reach_the_app";
    if is_child(NAME) {
        no_core_dumps();
        for sig in [libc::SIGSEGV, libc::SIGBUS] {
            // SAFETY: installing a handler with the matching signature in a disposable child.
            unsafe {
                let mut sa: libc::sigaction = core::mem::zeroed();
                sa.sa_sigaction = count_sent as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut sa.sa_mask);
                assert_eq!(libc::sigaction(sig, &sa, core::ptr::null_mut()), 0);
            }
        }
        let p = guard();
        let r = Region::anon(2);
        r.protect(1, libc::PROT_NONE);
        let segv_rounds = sends_during_probes(&p, r.page(1), r.page(0), libc::SIGBUS);
        let bus_page = beyond_eof_page();
        assert_eq!(p.check(bus_page, 1), Ok(false));
        let bus_rounds = sends_during_probes(&p, bus_page, r.page(0), libc::SIGSEGV);
        assert_eq!(SENT_SEEN.load(Ordering::SeqCst), 2 * SENDS);
        figure("chaining.sent_during_faulting_probes", 2 * SENDS);
        figure(
            "chaining.sent_during_faulting_probes_rounds",
            segv_rounds + bus_rounds,
        );
        return;
    }
    let out = support::run_child_env(NAME, &[], std::time::Duration::from_secs(60));
    out.assert_success();
    out.forward_figures();
    figure(&format!("chaining.{NAME}"), "passed");
}
