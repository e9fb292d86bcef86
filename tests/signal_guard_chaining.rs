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
        core::arch::asm!("mov {v}, byte ptr [{a}]", a = in(reg) addr, v = out(reg_byte) v, options(nostack, readonly))
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

/// A SIGSEGV sent with `kill` is not a fault of ours: it must still kill the process.
#[test]
fn sent_sigsegv_is_not_swallowed() {
    if is_child("sent_sigsegv_is_not_swallowed") {
        no_core_dumps();
        let _p = guard();
        println!("CHILD READY");
        // SAFETY: kill on our own pid; the child is meant to die.
        unsafe { libc::kill(libc::getpid(), libc::SIGSEGV) };
        // Give a pending signal every chance to arrive.
        std::thread::sleep(std::time::Duration::from_millis(200));
        println!("CHILD SURVIVED");
        return;
    }
    expect_signal("sent_sigsegv_is_not_swallowed", libc::SIGSEGV);
}

/// A sent SIGSEGV must not leave the process without the guard: if it were swallowed by a
/// previous handler that resets the disposition, the next faulting probe would kill.
#[test]
fn sent_sigsegv_to_app_handler_keeps_guard_working() {
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
