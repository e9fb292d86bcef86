//! What a host can do around SignalGuard's installation and its signals:
//!
//! - `fork()` while another thread is inside the install, between the swap of a signal's
//!   disposition and the publication of what it replaced: the child must not wait forever
//!   for a publication that no thread of its own will make. The installing thread is held
//!   exactly there by a seccomp user-notification filter on its own `rt_sigaction(SIGBUS,
//!   new, ..)`: the supervising thread (the same process, so the same dispositions) performs
//!   the swap itself, forks, and only then lets the installing thread go on. The child's
//!   stray SIGBUS must kill it as the default disposition would, and its own `Prober::new`
//!   must say `Unavailable`;
//! - a thread that blocks SIGSEGV or SIGBUS gets `Unavailable` (its first faulting probe would
//!   be killed by the kernel), and other threads keep probing;
//! - children created with `clone(exit_signal = SIGSEGV)` make the kernel send SIGSEGV with
//!   `CLD_EXITED` (1, as `SEGV_MAPERR`) to a thread that probes readable memory in a loop: no
//!   probe may answer "no" (a sent signal landing on a load is not its fault), the
//!   application's handler sees the signals, and under `SIG_IGN` the process lives (it was
//!   killed before). How seldom such a signal lands exactly on a load PC makes the first
//!   part a weak check (no hit in 2,000 signals on this machine, before or after); the
//!   decision itself is checked on made-up frames by the library's unit tests
//!   (`sent_signal_at_a_load_is_not_its_fault`).

mod support;

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use addrprobe::{Backend, Error, Prober};
use support::{SIGNAL_GUARD_ARCH, is_child, run_child};

// ---------------------------------------------------------------------------------------
// seccomp user notification, just enough of it.

const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_long = 1 << 3;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// `_IOWR('!', 0, struct seccomp_notif)` and `_IOWR('!', 1, struct seccomp_notif_resp)`.
/// (`libc::Ioctl` is `c_ulong` on glibc, `c_int` on musl: the same 32 bits.)
const SECCOMP_IOCTL_NOTIF_RECV: libc::Ioctl = 0xc050_2100_u32 as libc::Ioctl;
const SECCOMP_IOCTL_NOTIF_SEND: libc::Ioctl = 0xc018_2101_u32 as libc::Ioctl;

#[repr(C)]
#[derive(Default)]
struct SeccompNotif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

#[repr(C)]
#[derive(Default)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

/// On the calling thread only: `rt_sigaction(SIGBUS, new != NULL, ..)` waits for the
/// listener; everything else is allowed. The listener's descriptor, or `None` where the
/// kernel has no user notification (before 5.0) or refuses the filter.
fn hold_sigbus_swap() -> Option<i32> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    use support::{bpf_jump as jump, bpf_stmt as stmt};
    let allow = libc::SECCOMP_RET_ALLOW;
    let prog = [
        stmt(BPF_LD | BPF_W | BPF_ABS, 4),
        jump(BPF_JMP | BPF_JEQ | BPF_K, support::AUDIT_ARCH, 1, 0),
        stmt(BPF_RET | BPF_K, allow),
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            libc::SYS_rt_sigaction as u32,
            1,
            0,
        ),
        stmt(BPF_RET | BPF_K, allow),
        // args[0], low word (little-endian): the signal.
        stmt(BPF_LD | BPF_W | BPF_ABS, 16),
        jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SIGBUS as u32, 1, 0),
        stmt(BPF_RET | BPF_K, allow),
        // args[1]: the new action; a NULL one only reads.
        stmt(BPF_LD | BPF_W | BPF_ABS, 24),
        jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2),
        stmt(BPF_LD | BPF_W | BPF_ABS, 28),
        jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
        stmt(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        stmt(BPF_RET | BPF_K, allow),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: no_new_privs and a filter on this thread only (no TSYNC), in a disposable child.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let fd = libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        );
        (fd >= 0).then_some(fd as i32)
    }
}

static LISTENER: AtomicI32 = AtomicI32::new(-1);

#[test]
fn fork_during_install_leaves_the_child_its_default_action() {
    const CASE: &str = "fork_during_install_leaves_the_child_its_default_action";
    if !SIGNAL_GUARD_ARCH {
        return;
    }
    if is_child(CASE) {
        // A page beyond the end of a file: the child's stray SIGBUS.
        let ps = support::ps();
        // SAFETY: our own memfd, sized to one page and mapped for two.
        let beyond = unsafe {
            let fd = libc::memfd_create(c"beyond".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, ps as libc::off_t), 0);
            let p = libc::mmap(
                core::ptr::null_mut(),
                2 * ps,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            p as usize + ps
        };
        let installer = std::thread::spawn(|| {
            let Some(fd) = hold_sigbus_swap() else {
                LISTENER.store(-2, Ordering::SeqCst);
                return None;
            };
            LISTENER.store(fd, Ordering::SeqCst);
            Some(Prober::new(Backend::SignalGuard).map(|_| ()))
        });
        let fd = loop {
            match LISTENER.load(Ordering::SeqCst) {
                -1 => std::thread::yield_now(),
                fd => break fd,
            }
        };
        if fd == -2 {
            println!(
                "skipped: no seccomp user notification here (SECCOMP_FILTER_FLAG_NEW_LISTENER)"
            );
            assert!(installer.join().unwrap().is_none());
            println!("CHILD SKIPPED");
            return;
        }
        let mut notif = SeccompNotif::default();
        // SAFETY: the listener's RECV fills our struct of the kernel's layout.
        let r = unsafe { libc::ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &mut notif) };
        assert_eq!(r, 0, "SECCOMP_IOCTL_NOTIF_RECV");
        assert_eq!(notif.nr as libc::c_long, libc::SYS_rt_sigaction);
        assert_eq!(notif.args[0], libc::SIGBUS as u64);
        // The swap, done for the installing thread: the same process, the same dispositions,
        // the same address space (its pointers are ours).
        // SAFETY: the arguments of the held rt_sigaction call, valid in this process.
        let swapped = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                notif.args[0],
                notif.args[1],
                notif.args[2],
                notif.args[3],
            )
        };
        assert_eq!(swapped, 0, "the held rt_sigaction");
        // SAFETY: fork in a multithreaded process: the child only makes async-signal-safe
        // calls (the probe constructor's path fails before anything else: the install state)
        // and then faults.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let got = Prober::new(Backend::SignalGuard).err();
            let unavailable = matches!(got, Some(Error::Unavailable { .. }));
            let msg: &[u8] = if unavailable {
                b"FORKED unavailable\n"
            } else {
                b"FORKED not unavailable\n"
            };
            // SAFETY: write(2) of our own buffer; then the stray fault under test.
            unsafe {
                libc::write(1, msg.as_ptr().cast(), msg.len());
                let v = core::ptr::read_volatile(beyond as *const u8);
                libc::_exit(i32::from(v) + 10);
            }
        }
        assert!(pid > 0, "fork");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = 0;
        let hung = loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break false;
            }
            if Instant::now() > deadline {
                // SAFETY: our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break true;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let resp = SeccompNotifResp {
            id: notif.id,
            val: 0,
            error: 0,
            flags: 0,
        };
        // SAFETY: answering the held call: it returns 0, as the swap we made did.
        let r = unsafe { libc::ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) };
        assert_eq!(r, 0, "SECCOMP_IOCTL_NOTIF_SEND");
        let installed = installer.join().unwrap();
        println!(
            "child hung: {hung}; child killed by signal: {:?}; parent's install: {installed:?}",
            libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
        );
        assert!(!hung, "the forked child hung in the handler");
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS);
        assert_eq!(installed, Some(Ok(())), "the parent's install");
        // The parent's prober works: the same install, finished.
        let p = Prober::new(Backend::SignalGuard).expect("signal-guard");
        assert_eq!(p.check(beyond, 1), Ok(false));
        println!("CHILD DONE");
        return;
    }
    let out = run_child(CASE);
    print!("{}", out.stdout);
    out.assert_success();
    assert!(out.stdout.contains("FORKED unavailable") || out.stdout.contains("CHILD SKIPPED"));
    assert!(out.stdout.contains("CHILD DONE") || out.stdout.contains("CHILD SKIPPED"));
}

#[test]
fn a_thread_that_blocks_sigsegv_gets_unavailable() {
    const CASE: &str = "a_thread_that_blocks_sigsegv_gets_unavailable";
    if !SIGNAL_GUARD_ARCH {
        return;
    }
    if is_child(CASE) {
        for sig in [libc::SIGSEGV, libc::SIGBUS] {
            let got = std::thread::spawn(move || {
                // SAFETY: blocking one signal on this new thread only.
                unsafe {
                    let mut set: libc::sigset_t = core::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, sig);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
                }
                Prober::new(Backend::SignalGuard).err()
            })
            .join()
            .unwrap();
            println!("signal {sig} blocked: {got:?}");
            assert!(matches!(got, Some(Error::Unavailable { .. })), "{got:?}");
        }
        let p = Prober::new(Backend::SignalGuard).expect("signal-guard");
        assert_eq!(p.check(0, 1), Ok(false));
        println!("CHILD DONE");
        return;
    }
    let out = run_child(CASE);
    print!("{}", out.stdout);
    out.assert_success();
    assert!(out.stdout.contains("CHILD DONE"));
}

static SEGVS_SEEN: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn count_segv(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo of an SA_SIGINFO handler.
    if unsafe { (*info).si_code } == libc::CLD_EXITED {
        SEGVS_SEEN.fetch_add(1, Ordering::SeqCst);
    }
}

/// Probes readable memory in a loop on another thread while `children` raw `clone` children
/// with `exit_signal = SIGSEGV` exit; (probes made, probes answered "no").
fn probe_while_children_exit(p: &'static Prober, children: usize) -> (usize, usize) {
    let prober = std::thread::spawn(move || {
        let words = [0x5a5a_5a5a_5a5a_5a5a_u64; 64];
        let (mut made, mut no) = (0usize, 0usize);
        let loads = p.guarded().expect("guarded loads");
        while !STOP.load(Ordering::Relaxed) {
            for w in &words {
                made += 1;
                no += usize::from(loads.load_u64(w as *const u64 as usize).is_none());
            }
        }
        (made, no)
    });
    for _ in 0..children {
        support::clone_child_exits_with(libc::SIGSEGV);
    }
    STOP.store(true, Ordering::SeqCst);
    prober.join().unwrap()
}

#[test]
fn exit_signals_during_probes_are_not_faults() {
    const CASE: &str = "exit_signals_during_probes_are_not_faults";
    if !SIGNAL_GUARD_ARCH {
        return;
    }
    for disposition in ["handler", "ignore"] {
        let child = format!("{CASE}_{disposition}");
        if is_child(CASE) {
            // The parent below runs one child per disposition through the environment.
            if std::env::var("ADDRPROBE_EXIT_DISPOSITION").as_deref() != Ok(disposition) {
                continue;
            }
            // SAFETY: a disposition for SIGSEGV in this disposable child.
            unsafe {
                let mut sa: libc::sigaction = core::mem::zeroed();
                if disposition == "handler" {
                    sa.sa_sigaction = count_segv as *const () as usize;
                    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                } else {
                    sa.sa_sigaction = libc::SIG_IGN;
                }
                assert_eq!(
                    libc::sigaction(libc::SIGSEGV, &sa, core::ptr::null_mut()),
                    0
                );
            }
            let p: &'static Prober = Box::leak(Box::new(
                Prober::new(Backend::SignalGuard).expect("signal-guard"),
            ));
            // The kernel gives a process-directed signal to the main thread when it can take
            // it; blocked here, every exit signal goes to the probing thread.
            // SAFETY: blocking SIGSEGV on this thread, which makes no probe from now on.
            unsafe {
                let mut set: libc::sigset_t = core::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGSEGV);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
            }
            let children = 2000 / support::timeout_scale() as usize;
            let (made, no) = probe_while_children_exit(p, children);
            println!(
                "{disposition}: {children} exit signals, {made} probes of readable memory, \
                 {no} answered no, the handler saw {} signals",
                SEGVS_SEEN.load(Ordering::SeqCst)
            );
            assert_eq!(no, 0, "a sent SIGSEGV was taken for a probe's fault");
            if disposition == "handler" {
                assert!(SEGVS_SEEN.load(Ordering::SeqCst) > 0);
            }
            println!("CHILD DONE");
            return;
        }
        let out = support::run_child_env(
            CASE,
            &[("ADDRPROBE_EXIT_DISPOSITION", disposition)],
            Duration::from_secs(60),
        );
        print!("{child}: {}", out.stdout);
        out.assert_success();
        assert!(out.stdout.contains("CHILD DONE"), "{child}");
    }
}
