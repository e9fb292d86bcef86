//! Descriptors: running out of them, the application closing and reusing the crate's
//! numbers, and threads exiting. Each case changes process-wide state (`RLIMIT_NOFILE`,
//! `close_range`) or counts every descriptor of the process, so each runs in a child
//! process (a re-execution of this test binary) with nothing else going on.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use addrprobe::{AutoOptions, Backend, Error, Prober};
use support::{Region, fd_list, figure, is_child, new_fds, page_pattern, ps, run_child};

/// [readable pattern page][PROT_NONE page]
fn fixture() -> (Region, Vec<u8>) {
    let r = Region::anon(2);
    let bytes = page_pattern(0, 77);
    r.fill(0, &bytes);
    r.protect(1, libc::PROT_NONE);
    (r, bytes)
}

/// How a probe went: `Some(true)` correct, `Some(false)` wrong, `None` an error.
fn probe_ok(p: &Prober, r: &Region, bytes: &[u8]) -> Option<bool> {
    let unsound = p.guarantee() == addrprobe::Guarantee::Unsound;
    let mapped = p.guarantee() == addrprobe::Guarantee::Mapped;
    let yes = p.check(r.page(0), ps()).ok()?;
    let no = p.check(r.page(1), 8).ok()?;
    let mut correct = yes && (no == (unsound || mapped));
    if p.guarantee() == addrprobe::Guarantee::Readable {
        let mut buf = vec![0u8; ps()];
        match p.read(r.page(0), &mut buf) {
            Ok(got) => correct &= got && buf == bytes,
            Err(_) => return None,
        }
    }
    Some(correct)
}

fn set_nofile(n: u64) {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with valid structs, in a disposable child.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur), 0);
        cur.rlim_cur = n;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &cur), 0);
    }
}

/// Lowers `RLIMIT_NOFILE` to just above the highest open descriptor and fills every free
/// number below it: afterwards no descriptor can be opened. Returns the fillers.
fn exhaust() -> Vec<i32> {
    let highest = fd_list().iter().map(|&(n, _)| n).max().unwrap_or(2);
    set_nofile(highest as u64 + 1);
    let mut fillers = Vec::new();
    loop {
        // SAFETY: dup of stdin; the copy is ours.
        let fd = unsafe { libc::dup(0) };
        if fd < 0 {
            assert_eq!(support::errno(), libc::EMFILE);
            break;
        }
        fillers.push(fd);
        assert!(fillers.len() < 4096, "RLIMIT_NOFILE did not take effect");
    }
    // SAFETY: open with a static path.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert_eq!(
        (fd, support::errno()),
        (-1, libc::EMFILE),
        "a descriptor could still be opened"
    );
    fillers
}

fn release(fillers: Vec<i32>) {
    for fd in fillers {
        // SAFETY: closing our own fillers.
        unsafe { libc::close(fd) };
    }
    set_nofile(1024);
}

fn child_fd_exhaustion() {
    let (r, bytes) = fixture();
    let before = fd_list();
    let fillers = exhaust();
    // Every backend that needs a descriptor says so clearly.
    const NEED_FD: [Backend; 3] = [Backend::DevNull, Backend::Pipe, Backend::ProcmapQuery];
    for b in NEED_FD {
        match Prober::new(b) {
            Err(
                e @ Error::Unavailable {
                    errno: Some(libc::EMFILE),
                    ..
                },
            ) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(b.name()) && msg.contains("EMFILE"),
                    "unclear error: {msg}"
                );
                println!("{b}: {msg}");
            }
            other => panic!("Prober::new({b}) with no free descriptor: {other:?}"),
        }
    }
    // The others work (SigprocMask without `read`, which copies through a pipe).
    for b in Backend::ALL.into_iter().filter(|b| !NEED_FD.contains(b)) {
        if b == Backend::SignalGuard && support::no_signal_guard_here("signal-guard without fds") {
            continue;
        }
        let p = Prober::new(b).unwrap_or_else(|e| panic!("{b} with no free descriptor: {e}"));
        let check_yes = p.check(r.page(0), ps());
        assert_eq!(check_yes, Ok(true), "{b}");
    }
    // SigprocMask still checks, but cannot read without its pipe pool, and says so.
    let sp = Prober::new(Backend::SigprocMask).expect("sigprocmask needs no descriptor");
    assert!(!sp.supports_read(), "sigprocmask cannot read with no pipe");
    drop(sp);
    let p = Prober::auto().expect("auto() with no free descriptor");
    // auto() prefers a backend that can also read: process_vm_readv needs no descriptor.
    assert!(
        p.supports_read(),
        "auto() picked {} which cannot read",
        p.backend()
    );
    assert_eq!(p.backend(), Backend::ProcessVmReadv);
    assert!(
        !NEED_FD.contains(&p.backend()),
        "auto() picked {}",
        p.backend()
    );
    assert_eq!(p.check(r.page(0), ps()), Ok(true));
    assert_eq!(p.check(r.page(1), 8), Ok(false));
    // SigprocMask copies through a pipe: with none, `read` is an error, never a wrong answer.
    let mut buf = vec![0u8; ps()];
    match p.read(r.page(0), &mut buf) {
        Ok(true) => assert_eq!(buf, bytes),
        Err(Error::Unavailable { .. }) => {}
        other => panic!("read with no free descriptor: {other:?}"),
    }
    let g = AutoOptions::new()
        .allow_signal_handler(true)
        .build()
        .expect("auto with handler");
    assert_eq!(probe_ok(&g, &r, &bytes), Some(true));
    drop((p, g));
    release(fillers);
    // Nothing was left open by the failed attempts.
    assert_eq!(
        fd_list(),
        before,
        "descriptors leaked by failed Prober::new"
    );
    figure("fd_exhaustion.fds_before", before.len());

    // A pipe prober made before the exhaustion keeps its pool; probes that need a private
    // pipe (pool busy) return an error, never a wrong answer.
    let pipe = Prober::new(Backend::Pipe).expect("pipe");
    let with_pool = fd_list();
    let fillers = exhaust();
    assert_eq!(probe_ok(&pipe, &r, &bytes), Some(true));
    let (ok, err) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..500 {
                    match probe_ok(&pipe, &r, &bytes) {
                        Some(true) => ok.fetch_add(1, Ordering::Relaxed),
                        None => err.fetch_add(1, Ordering::Relaxed),
                        Some(false) => panic!("wrong answer with no free descriptor"),
                    };
                }
            });
        }
    });
    figure(
        "fd_exhaustion.pool_probes_correct",
        ok.load(Ordering::Relaxed),
    );
    figure(
        "fd_exhaustion.pool_probes_error",
        err.load(Ordering::Relaxed),
    );
    release(fillers);
    assert_eq!(fd_list(), with_pool);
    drop(pipe);
    assert_eq!(fd_list(), before);
    figure("fd_exhaustion.fds_after", fd_list().len());
    figure("fd_exhaustion.wrong_answers", 0);
}

#[test]
fn fd_exhaustion() {
    if is_child("fd_exhaustion") {
        return child_fd_exhaustion();
    }
    let out = run_child("fd_exhaustion");
    out.assert_success();
    out.forward_figures();
    figure("fd_exhaustion", "passed");
}

/// The application's own file at a number the crate used to hold.
struct AppFile {
    fd: i32,
    bytes: Vec<u8>,
}

const APP_OFFSET: i64 = 100;

fn open_app_file(dir: &std::path::Path, i: usize) -> AppFile {
    let path = dir.join(format!("app-{i}"));
    let bytes = addrprobe_lab::fixtures::pattern(2 * ps(), i as u8);
    std::fs::write(&path, &bytes).unwrap();
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: open with a NUL-terminated path; lseek on our descriptor.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR) };
    assert!(fd >= 0);
    assert_eq!(
        // SAFETY: lseek on the descriptor we just opened; no memory is involved.
        unsafe { libc::lseek(fd, APP_OFFSET, libc::SEEK_SET) },
        APP_OFFSET
    );
    AppFile { fd, bytes }
}

fn child_fd_reuse() {
    let (r, bytes) = fixture();
    let dir = std::env::temp_dir().join(format!("addrprobe-fd-reuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let before = fd_list();
    let probers = support::all_probers();
    let crate_fds: Vec<i32> = new_fds(&before, &fd_list())
        .iter()
        .map(|&(n, _)| n)
        .collect();
    println!("the crate holds {crate_fds:?}");
    assert!(
        crate_fds.len() >= 3,
        "expected the pipe pool, /dev/null and /proc/self/maps"
    );
    for p in &probers {
        assert_eq!(
            probe_ok(p, &r, &bytes),
            Some(true),
            "{} before close_range",
            p.backend()
        );
    }

    // The application closes everything above stderr...
    // SAFETY: close_range on this disposable child's descriptors.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    assert_eq!(ret, 0, "close_range");
    // ...and opens its own: a non-blocking pipe holding 100 bytes, then files, until every
    // number the crate had is the application's.
    let mut app_pipe = [0i32; 2];
    assert_eq!(
        // SAFETY: pipe2 writes two descriptors.
        unsafe { libc::pipe2(app_pipe.as_mut_ptr(), libc::O_NONBLOCK) },
        0
    );
    let pipe_bytes = addrprobe_lab::fixtures::pattern(100, 200);
    assert_eq!(
        // SAFETY: writing our own bytes into our own pipe.
        unsafe { libc::write(app_pipe[1], pipe_bytes.as_ptr().cast(), 100) },
        100
    );
    let mut files = Vec::new();
    let max = *crate_fds.iter().max().unwrap();
    while files.last().is_none_or(|f: &AppFile| f.fd < max) {
        files.push(open_app_file(&dir, files.len()));
    }
    let app_fds: Vec<i32> = app_pipe
        .iter()
        .copied()
        .chain(files.iter().map(|f| f.fd))
        .collect();
    for n in &crate_fds {
        assert!(app_fds.contains(n), "fd {n} was not reused");
    }

    // Every backend keeps answering correctly, or returns an error.
    let (mut correct, mut errors) = (0, 0);
    let mut run_all = |ps: &[Prober]| {
        for p in ps {
            for _ in 0..50 {
                match probe_ok(p, &r, &bytes) {
                    Some(true) => correct += 1,
                    None => errors += 1,
                    Some(false) => panic!("{}: wrong answer after fd reuse", p.backend()),
                }
            }
        }
    };
    run_all(&probers);
    // New probers open fresh descriptors (the reused numbers are left alone), and the old
    // ones share them.
    let fresh = support::all_probers();
    run_all(&fresh);
    run_all(&probers);
    println!("after fd reuse: {correct} correct, {errors} errors");
    for p in &fresh {
        assert_eq!(
            probe_ok(p, &r, &bytes),
            Some(true),
            "{}: a fresh prober must work",
            p.backend()
        );
    }

    // Nothing read from or wrote to the application's descriptors.
    let verify_app = || {
        for f in &files {
            let mut got = vec![0u8; f.bytes.len() + 1];
            // SAFETY: pread and lseek on the application's own descriptor.
            let n = unsafe { libc::pread(f.fd, got.as_mut_ptr().cast(), got.len(), 0) };
            assert_eq!(n as usize, f.bytes.len(), "fd {}: size changed", f.fd);
            assert_eq!(
                &got[..f.bytes.len()],
                &f.bytes[..],
                "fd {}: content changed",
                f.fd
            );
            // SAFETY: as above.
            let off = unsafe { libc::lseek(f.fd, 0, libc::SEEK_CUR) };
            assert_eq!(off, APP_OFFSET, "fd {}: the file offset moved", f.fd);
        }
    };
    verify_app();
    drop(fresh);
    drop(probers);
    // Dropping every prober closed none of the application's descriptors...
    verify_app();
    let mut got = [0u8; 101];
    // SAFETY: reading the application's own pipe.
    let n = unsafe { libc::read(app_pipe[0], got.as_mut_ptr().cast(), 101) };
    assert_eq!(n, 100, "the application's pipe lost or gained bytes");
    assert_eq!(&got[..100], &pipe_bytes[..]);
    // ...and left nothing of the crate's open.
    let open: Vec<i32> = fd_list()
        .iter()
        .map(|&(n, _)| n)
        .filter(|&n| n > 2)
        .collect();
    let mut want = app_fds.clone();
    want.sort();
    assert_eq!(
        open, want,
        "after dropping every prober only the application's descriptors remain"
    );
    let _ = std::fs::remove_dir_all(&dir);
    figure("fd_reuse.reused_numbers", crate_fds.len());
    figure("fd_reuse.probes_correct", correct);
    figure("fd_reuse.probes_error", errors);
    figure("fd_reuse.app_bytes_changed", 0);
}

#[test]
fn fd_reuse_after_close_range() {
    if is_child("fd_reuse_after_close_range") {
        return child_fd_reuse();
    }
    let out = run_child("fd_reuse_after_close_range");
    out.assert_success();
    out.forward_figures();
    figure("fd_reuse", "passed");
}

const THREADS: usize = 10_000;
const BATCH: usize = 16;

fn child_thread_exit() {
    let (r, bytes) = fixture();
    let probers = support::all_probers();
    let before = fd_list();
    let probes = AtomicUsize::new(0);
    for _ in 0..THREADS / BATCH {
        std::thread::scope(|s| {
            for _ in 0..BATCH {
                s.spawn(|| {
                    for p in &probers {
                        assert_eq!(probe_ok(p, &r, &bytes), Some(true), "{}", p.backend());
                        probes.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
    }
    let after = fd_list();
    assert_eq!(
        after, before,
        "short-lived threads changed the descriptor table"
    );
    figure("thread_exit.threads", THREADS / BATCH * BATCH);
    figure("thread_exit.probes", probes.load(Ordering::Relaxed));
    figure("thread_exit.fds_before", before.len());
    figure("thread_exit.fds_after", after.len());
}

/// 10,000 short-lived threads, 16 at a time (more than the pipe pool's slots, so private
/// pipes are made and closed too), each probing with every backend.
#[test]
fn thread_exit_leaks_no_fd() {
    if is_child("thread_exit_leaks_no_fd") {
        return child_thread_exit();
    }
    let out = run_child("thread_exit_leaks_no_fd");
    out.assert_success();
    out.forward_figures();
}
