//! Children made by `fork()`, by glibc's `_Fork()` and by a raw `clone(SIGCHLD)` syscall. The
//! last two run no `pthread_atfork` handler, so only the kernel can tell the crate that it now
//! runs in another process. In every such child, every backend must answer for the child's own
//! address space, and parent and child must never share a pipe: neither may ever get the
//! other's bytes.
//!
//! Each case runs in a re-executed test binary (the harness in `support`), which makes the
//! grandchild. The grandchild only does async-signal-safe work (memory writes, `munmap`,
//! `mprotect`, probes, `read`/`write` on pipes, `_exit`), every loop of it is bounded, and the
//! parent kills it if it has not exited within a timeout.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use addrprobe::{Backend, Guarantee, Prober};
use support::{Region, fd_list, figure, is_child, new_fds, ps};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Fork,
    UnderscoreFork,
    Clone,
}

unsafe extern "C" {
    /// glibc 2.34+: `fork` without atfork handlers (POSIX.1-2024's async-signal-safe fork).
    fn _Fork() -> libc::pid_t;
}

/// Makes a child process the way `kind` says; returns 0 in the child.
///
/// # Safety
///
/// The child must do only async-signal-safe work and leave with `_exit`.
unsafe fn spawn(kind: Kind) -> libc::pid_t {
    match kind {
        // SAFETY: the caller's contract.
        Kind::Fork => unsafe { libc::fork() },
        // SAFETY: the caller's contract.
        Kind::UnderscoreFork => unsafe { _Fork() },
        // SAFETY: clone without CLONE_VM and without a new stack is a fork that runs nothing in
        // user space: the child continues on its copy of this stack. The caller's contract.
        Kind::Clone => unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::SIGCHLD as libc::c_long,
                0usize,
                0usize,
                0usize,
                0usize,
            ) as libc::pid_t
        },
    }
}

fn pat(i: usize, seed: u8) -> u8 {
    (i as u8).wrapping_mul(13).wrapping_add(seed) | 1
}

fn fill(addr: usize, seed: u8) {
    for i in 0..ps() {
        // SAFETY: `addr` is a writable page of ours.
        unsafe { ((addr + i) as *mut u8).write_volatile(pat(i, seed)) };
    }
}

/// Whether `buf` holds exactly `seed`'s pattern.
fn is_pat(buf: &[u8], seed: u8) -> bool {
    buf.iter().enumerate().all(|(i, &b)| b == pat(i, seed))
}

const PARENT_SEED: u8 = 0x10;
const CHILD_SEED: u8 = 0x80;

fn send_byte(fd: i32, v: u8) {
    // SAFETY: writing one byte to our own pipe.
    unsafe { libc::write(fd, [v].as_ptr().cast(), 1) };
}

/// One byte from `fd`, waiting at most `timeout_ms`; 0 on timeout or EOF.
fn wait_byte(fd: i32, timeout_ms: i32) -> u8 {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd of ours.
    if unsafe { libc::poll(&mut pfd, 1, timeout_ms) } != 1 {
        return 0;
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte from our own pipe.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
    if n == 1 { b[0] } else { 0 }
}

fn pipe_pair() -> [i32; 2] {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    p
}

fn close(fd: i32) {
    // SAFETY: closing a descriptor of this test's own.
    unsafe { libc::close(fd) };
}

/// Waits for `pid` to exit within `timeout`; kills it and returns `None` otherwise.
fn wait_exit(pid: libc::pid_t, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        assert_eq!(r, 0, "waitpid");
        if Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Per backend (index in `Backend::ALL`), what went wrong in the grandchild.
const UNMAPPED: usize = 0;
const PROT_NONE: usize = 1;
const OWN_PAGE: usize = 2;
const READ: usize = 3;
const PARENT_BYTES: usize = 4;
const COUNTERS: usize = 5;
const COUNTER_NAMES: [&str; COUNTERS] = [
    "check of a page the child unmapped",
    "check of a page the child made PROT_NONE",
    "check of the child's own page",
    "read of the child's own page",
    "read returned the PARENT's bytes",
];
type Report = [[u32; COUNTERS]; 8];

fn index(b: Backend) -> usize {
    Backend::ALL.iter().position(|&x| x == b).unwrap()
}

fn send_report(fd: i32, r: &Report) {
    // SAFETY: `Report` is plain integers; writing its bytes to our own pipe (far below
    // PIPE_BUF, so one write).
    unsafe {
        libc::write(
            fd,
            (r as *const Report).cast(),
            core::mem::size_of::<Report>(),
        )
    };
}

fn recv_report(fd: i32) -> Option<Report> {
    let mut r: Report = [[0; COUNTERS]; 8];
    // SAFETY: reading at most one `Report` of plain integers from our own pipe.
    let n = unsafe {
        libc::read(
            fd,
            (&mut r as *mut Report).cast(),
            core::mem::size_of::<Report>(),
        )
    };
    (n == core::mem::size_of::<Report>() as isize).then_some(r)
}

fn describe(r: &Report) -> String {
    let mut s = String::new();
    for (i, b) in Backend::ALL.iter().enumerate() {
        for (c, name) in COUNTER_NAMES.iter().enumerate() {
            if r[i][c] != 0 {
                s += &format!("\n  {b}: {name}: {} wrong", r[i][c]);
            }
        }
    }
    s
}

/// Probes, in the grandchild, page `own` (holding the child's bytes), page `gone` (unmapped
/// here, readable in the parent) and page `none` (PROT_NONE here, readable in the parent).
/// Allocation-free.
fn probe_own_space(probers: &[Prober], own: usize, gone: usize, none: usize, r: &mut Report) {
    let mut buf = [0u8; 4096];
    let n = ps().min(buf.len());
    for p in probers {
        let i = index(p.backend());
        let g = p.guarantee();
        if g != Guarantee::Unsound {
            if p.check(gone, 8) != Ok(false) {
                r[i][UNMAPPED] += 1;
            }
            let want = g == Guarantee::Mapped;
            if p.check(none, 8) != Ok(want) {
                r[i][PROT_NONE] += 1;
            }
        }
        if p.check(own, n) != Ok(true) {
            r[i][OWN_PAGE] += 1;
        }
        if g == Guarantee::Readable {
            buf.fill(0);
            let got = p.read(own, &mut buf[..n]);
            if got != Ok(true) || !is_pat(&buf[..n], CHILD_SEED) {
                r[i][READ] += 1;
            }
            if got == Ok(true) && is_pat(&buf[..n], PARENT_SEED) {
                r[i][PARENT_BYTES] += 1;
            }
        }
    }
}

/// Every available prober, after switching to the `getpid` fallback (kernels without
/// `MADV_WIPEONFORK`) if `fallback`.
fn probers_in_mode(fallback: bool) -> Vec<Prober> {
    if fallback {
        addrprobe::testing::use_getpid_fallback();
    }
    let probers = support::all_probers();
    let wipes = addrprobe::testing::wipes_on_fork();
    println!("new processes noticed by MADV_WIPEONFORK: {wipes}");
    if fallback {
        assert!(!wipes, "the getpid fallback did not take effect");
    }
    probers
}

/// What the SIGUSR1 handler of [`first_probes_in_handler`] probes, and where it reports.
struct HandlerCase<'a> {
    probers: &'a [Prober],
    own: usize,
    gone: usize,
    none: usize,
    report: &'a mut Report,
}

static HANDLER_CASE: core::sync::atomic::AtomicPtr<HandlerCase<'static>> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

extern "C" fn probe_in_handler(_: libc::c_int) {
    let p = HANDLER_CASE.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: set by `first_probes_in_handler` on this thread, which raised the signal
        // and waits for the handler to return before it touches the case again.
        let c = unsafe { &mut *p };
        probe_own_space(c.probers, c.own, c.gone, c.none, c.report);
        HANDLER_CASE.store(core::ptr::null_mut(), Ordering::Release);
    }
}

/// Probes once from a SIGUSR1 handler (async-signal-safe: `sigaction`, `tgkill`). A handler
/// that did not run counts as 1,000 wrong answers.
fn first_probes_in_handler(
    probers: &[Prober],
    own: usize,
    gone: usize,
    none: usize,
    report: &mut Report,
) {
    let mut case = HandlerCase {
        probers,
        own,
        gone,
        none,
        report,
    };
    HANDLER_CASE.store(
        (&mut case as *mut HandlerCase<'_>).cast(),
        Ordering::Release,
    );
    // SAFETY: a plain handler for SIGUSR1 in this disposable process; `raise` runs it on this
    // thread before returning.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = probe_in_handler as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &sa, core::ptr::null_mut());
        // Raw syscalls: glibc's cached thread id is the parent's after a raw clone.
        libc::syscall(
            libc::SYS_tgkill,
            libc::syscall(libc::SYS_getpid),
            libc::syscall(libc::SYS_gettid),
            libc::SIGUSR1,
        );
    }
    // Still set: the handler did not run.
    if !HANDLER_CASE
        .swap(core::ptr::null_mut(), Ordering::AcqRel)
        .is_null()
    {
        case.report[0][OWN_PAGE] += 1000;
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn pipe_ino(target: &str) -> Option<&str> {
    target.strip_prefix("pipe:[")?.strip_suffix(']')
}

/// The grandchild unmaps one page and `mprotect`s another that the parent keeps readable,
/// writes its own bytes into a third, and probes all three with every backend, three times
/// (the first probe in a new process replaces what it inherited; in every other round that
/// first probe runs in a signal handler). Meanwhile a
/// thread of the parent keeps a pooled pipe busy, so some children are made while a slot is
/// taken. The parent then looks at the grandchild's descriptors and checks its own answers.
fn child_own_space(kind: Kind, fallback: bool) {
    let before = fd_list();
    let probers = probers_in_mode(fallback);
    let crate_fds = new_fds(&before, &fd_list());
    let parent_pipes: Vec<String> = crate_fds
        .iter()
        .filter_map(|(_, t)| pipe_ino(t).map(str::to_owned))
        .collect();
    let bg = Region::anon(1);
    fill(bg.addr, 3);
    let stop = AtomicBool::new(false);
    let background = AtomicUsize::new(0);
    // Under an emulated CPU (the kernel-matrix guests set a timeout scale) each round takes
    // seconds: three rounds there, each checking all the same (in an arm64 guest the binary
    // took 529 s of its 600 with eight, 476 s with three; the rest is process setup).
    let rounds = if support::timeout_scale() > 1 { 3 } else { 8 };
    std::thread::scope(|s| {
        s.spawn(|| {
            let pipe = probers
                .iter()
                .find(|p| p.backend() == Backend::Pipe)
                .unwrap();
            let mut buf = vec![0u8; ps()];
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(pipe.read(bg.addr, &mut buf), Ok(true));
                assert!(
                    is_pat(&buf, 3),
                    "the parent's background read got foreign bytes"
                );
                background.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Stops the background thread also when an assertion below panics.
        let _stop = StopOnDrop(&stop);
        for round in 0..rounds {
            let r = Region::anon(3);
            let (own, gone, none) = (r.page(0), r.page(1), r.page(2));
            for i in 0..3 {
                fill(r.page(i), PARENT_SEED);
            }
            let to_child = pipe_pair();
            let to_parent = pipe_pair();
            // SAFETY: the grandchild only writes memory, munmaps, mprotects, probes, uses its
            // pipes and `_exit`s.
            let pid = unsafe { spawn(kind) };
            assert!(pid >= 0, "{kind:?} failed");
            if pid == 0 {
                fill(own, CHILD_SEED);
                // SAFETY: the grandchild's own copies of pages of the region.
                unsafe {
                    libc::munmap(gone as *mut libc::c_void, ps());
                    libc::mprotect(none as *mut libc::c_void, ps(), libc::PROT_NONE);
                }
                let mut report: Report = [[0; COUNTERS]; 8];
                if round % 2 == 1 {
                    // The first probes of this new process (which replace what it inherited)
                    // run inside a signal handler.
                    first_probes_in_handler(&probers, own, gone, none, &mut report);
                }
                for _ in 0..3 {
                    probe_own_space(&probers, own, gone, none, &mut report);
                }
                send_report(to_parent[1], &report);
                // Stay until the parent has looked at our descriptors.
                wait_byte(to_child[0], 10_000);
                // SAFETY: _exit skips destructors and atexit handlers, as such a child must.
                unsafe { libc::_exit(0) };
            }
            close(to_parent[1]);
            close(to_child[0]);
            let got = if wait_byte_ready(to_parent[0]) {
                recv_report(to_parent[0])
            } else {
                None
            };
            // The grandchild's descriptors at the crate's numbers now belong to it alone.
            let mut shared = Vec::new();
            if got.is_some() {
                for (n, parent_target) in &crate_fds {
                    let Ok(link) = std::fs::read_link(format!("/proc/{pid}/fd/{n}")) else {
                        continue;
                    };
                    let target = link.to_string_lossy().into_owned();
                    if let Some(ino) = pipe_ino(&target) {
                        if parent_pipes.iter().any(|p| p == ino) {
                            shared.push(format!("fd {n}: the parent's pipe {target}"));
                        }
                    } else if parent_target.ends_with("/maps")
                        && target != format!("/proc/{pid}/maps")
                    {
                        shared.push(format!("fd {n}: {target} describes another process"));
                    }
                }
            }
            send_byte(to_child[1], b'X');
            let status = wait_exit(pid, Duration::from_secs(10));
            close(to_parent[0]);
            close(to_child[1]);
            let report = got.unwrap_or_else(|| {
                panic!("{kind:?} round {round}: no report from the grandchild (status {status:?})")
            });
            assert!(
                report.iter().flatten().all(|&c| c == 0),
                "{kind:?} round {round}: the grandchild got answers that are not for its own address space:{}",
                describe(&report)
            );
            assert_eq!(
                status.map(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0),
                Some(true)
            );
            assert!(
                shared.is_empty(),
                "{kind:?} round {round}: after probing, the grandchild still holds:\n{}",
                shared.join("\n")
            );
            // The parent's answers are still for its own address space.
            let mut buf = vec![0u8; ps()];
            for p in &probers {
                assert_eq!(p.check(gone, 8), Ok(true), "{}", p.backend());
                if p.guarantee() == Guarantee::Readable {
                    assert_eq!(p.read(own, &mut buf), Ok(true), "{}", p.backend());
                    assert!(is_pat(&buf, PARENT_SEED), "{}: parent read", p.backend());
                }
            }
        }
    });
    let key = key(kind, fallback);
    figure(&format!("{key}.own_space_rounds"), rounds);
    figure(
        &format!("{key}.background_pipe_reads"),
        background.load(Ordering::Relaxed),
    );
    figure(&format!("{key}.own_space_wrong"), 0);
}

fn wait_byte_ready(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd of ours.
    unsafe { libc::poll(&mut pfd, 1, 10_000) == 1 }
}

const PARENT_READS: usize = 4_000;
const CHILD_READS: usize = 40_000;

/// Parent and grandchild copy their own (different) bytes at the same address through every
/// reading backend at the same time. Neither may ever get the other's bytes, or an error.
fn child_concurrent(kind: Kind, fallback: bool) {
    drop(probers_in_mode(fallback));
    let readers: Vec<Prober> = [Backend::Pipe, Backend::SigprocMask, Backend::ProcessVmReadv]
        .into_iter()
        .map(|b| Prober::new(b).unwrap_or_else(|e| panic!("{b}: {e}")))
        .collect();
    let maps = Prober::new(Backend::ProcmapQuery).ok();
    let r = Region::anon(2);
    let (own, gone) = (r.page(0), r.page(1));
    fill(own, PARENT_SEED);
    fill(gone, PARENT_SEED);
    let to_child = pipe_pair();
    let to_parent = pipe_pair();
    // SAFETY: the grandchild only writes memory, munmaps, probes, uses its pipes and `_exit`s.
    let pid = unsafe { spawn(kind) };
    assert!(pid >= 0, "{kind:?} failed");
    if pid == 0 {
        fill(own, CHILD_SEED);
        // SAFETY: the grandchild's own copy of the page.
        unsafe { libc::munmap(gone as *mut libc::c_void, ps()) };
        // SAFETY: making our own end of the stop pipe non-blocking.
        unsafe { libc::fcntl(to_child[0], libc::F_SETFL, libc::O_NONBLOCK) };
        send_byte(to_parent[1], b'R');
        let mut report: Report = [[0; COUNTERS]; 8];
        let mut buf = [0u8; 4096];
        let n = ps().min(buf.len());
        for it in 0..CHILD_READS {
            for p in &readers {
                let i = index(p.backend());
                buf.fill(0);
                let got = p.read(own, &mut buf[..n]);
                if got != Ok(true) || !is_pat(&buf[..n], CHILD_SEED) {
                    report[i][READ] += 1;
                }
                if got == Ok(true) && is_pat(&buf[..n], PARENT_SEED) {
                    report[i][PARENT_BYTES] += 1;
                }
                if p.check(gone, 8) != Ok(false) {
                    report[i][UNMAPPED] += 1;
                }
            }
            if let Some(m) = &maps
                && m.check(gone, 8) != Ok(false)
            {
                report[index(Backend::ProcmapQuery)][UNMAPPED] += 1;
            }
            if it % 16 == 0 {
                let mut b = [0u8; 1];
                // SAFETY: a non-blocking read of one byte from our own pipe.
                if unsafe { libc::read(to_child[0], b.as_mut_ptr().cast(), 1) } == 1 {
                    break;
                }
            }
        }
        send_report(to_parent[1], &report);
        // SAFETY: _exit skips destructors and atexit handlers, as such a child must.
        unsafe { libc::_exit(0) };
    }
    close(to_parent[1]);
    close(to_child[0]);
    assert_eq!(
        wait_byte(to_parent[0], 10_000),
        b'R',
        "the grandchild did not start"
    );
    let (mut foreign, mut errors, mut wrong_check) = (0usize, 0usize, 0usize);
    let mut buf = vec![0u8; ps()];
    for _ in 0..PARENT_READS {
        for p in &readers {
            buf.fill(0);
            match p.read(own, &mut buf) {
                Ok(true) if is_pat(&buf, PARENT_SEED) => {}
                Ok(_) => foreign += 1,
                Err(e) => {
                    if errors == 0 {
                        eprintln!("parent: {}: {e}", p.backend());
                    }
                    errors += 1;
                }
            }
            if p.check(gone, 8) != Ok(true) {
                wrong_check += 1;
            }
        }
        if let Some(m) = &maps
            && m.check(gone, 8) != Ok(true)
        {
            wrong_check += 1;
        }
    }
    send_byte(to_child[1], b'S');
    let status = wait_exit(pid, Duration::from_secs(10));
    let report = recv_report(to_parent[0]);
    close(to_parent[0]);
    close(to_child[1]);
    let report = report
        .unwrap_or_else(|| panic!("{kind:?}: no report from the grandchild (status {status:?})"));
    assert_eq!(
        (foreign, errors, wrong_check),
        (0, 0, 0),
        "{kind:?}: the parent's reads got foreign bytes / errors, or its checks were wrong, while its child probed"
    );
    assert!(
        report.iter().flatten().all(|&c| c == 0),
        "{kind:?}: the grandchild got wrong answers while its parent probed:{}",
        describe(&report)
    );
    assert_eq!(
        status.map(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0),
        Some(true)
    );
    let key = key(kind, fallback);
    figure(&format!("{key}.parent_reads"), PARENT_READS * readers.len());
    figure(&format!("{key}.foreign_reads"), foreign);
    figure(&format!("{key}.concurrent_wrong"), 0);
}

/// `fork_kinds.<how the crate notices a new process>.<how the child was made>`
fn key(kind: Kind, fallback: bool) -> String {
    let mode = if fallback {
        "getpid"
    } else if addrprobe::testing::wipes_on_fork() {
        "wipeonfork"
    } else {
        "getpid_kernel"
    };
    format!("fork_kinds.{mode}.{kind:?}")
}

fn run(case: &str, f: fn()) {
    if is_child(case) {
        return f();
    }
    let out = support::run_child_env(case, &[], Duration::from_secs(60));
    out.assert_success();
    out.forward_figures();
}

#[test]
fn fork_child_answers_for_its_own_space() {
    run("fork_child_answers_for_its_own_space", || {
        child_own_space(Kind::Fork, false)
    });
}

#[test]
fn fork_parent_and_child_read_concurrently() {
    run("fork_parent_and_child_read_concurrently", || {
        child_concurrent(Kind::Fork, false)
    });
}

#[test]
fn fork_child_answers_for_its_own_space_getpid_fallback() {
    run(
        "fork_child_answers_for_its_own_space_getpid_fallback",
        || child_own_space(Kind::Fork, true),
    );
}

#[test]
fn fork_parent_and_child_read_concurrently_getpid_fallback() {
    run(
        "fork_parent_and_child_read_concurrently_getpid_fallback",
        || child_concurrent(Kind::Fork, true),
    );
}

#[test]
fn underscore_fork_child_answers_for_its_own_space() {
    run("underscore_fork_child_answers_for_its_own_space", || {
        child_own_space(Kind::UnderscoreFork, false)
    });
}

#[test]
fn underscore_fork_parent_and_child_read_concurrently() {
    run("underscore_fork_parent_and_child_read_concurrently", || {
        child_concurrent(Kind::UnderscoreFork, false)
    });
}

#[test]
fn underscore_fork_child_answers_for_its_own_space_getpid_fallback() {
    run(
        "underscore_fork_child_answers_for_its_own_space_getpid_fallback",
        || child_own_space(Kind::UnderscoreFork, true),
    );
}

#[test]
fn underscore_fork_parent_and_child_read_concurrently_getpid_fallback() {
    run(
        "underscore_fork_parent_and_child_read_concurrently_getpid_fallback",
        || child_concurrent(Kind::UnderscoreFork, true),
    );
}

#[test]
fn clone_child_answers_for_its_own_space() {
    run("clone_child_answers_for_its_own_space", || {
        child_own_space(Kind::Clone, false)
    });
}

#[test]
fn clone_parent_and_child_read_concurrently() {
    run("clone_parent_and_child_read_concurrently", || {
        child_concurrent(Kind::Clone, false)
    });
}

#[test]
fn clone_child_answers_for_its_own_space_getpid_fallback() {
    run(
        "clone_child_answers_for_its_own_space_getpid_fallback",
        || child_own_space(Kind::Clone, true),
    );
}

#[test]
fn clone_parent_and_child_read_concurrently_getpid_fallback() {
    run(
        "clone_parent_and_child_read_concurrently_getpid_fallback",
        || child_concurrent(Kind::Clone, true),
    );
}
