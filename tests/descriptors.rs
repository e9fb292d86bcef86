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

fn nofile() -> u64 {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) }, 0);
    cur.rlim_cur
}

/// The crate's descriptors sit at the lowest free numbers at or above this (see `sys`).
fn expected_floor(limit: u64) -> u64 {
    1024.min(limit.saturating_sub(16))
}

/// Opens every backend and returns the numbers of the descriptors the crate added.
fn crate_numbers(before: &[(i32, String)]) -> (Vec<Prober>, Vec<(i32, String)>) {
    let probers = support::all_probers();
    let fds = new_fds(before, &fd_list());
    // /dev/null, four pooled pipes and (on 6.11+) /proc/self/maps.
    assert!(fds.len() >= 5, "expected the crate's descriptors: {fds:?}");
    (probers, fds)
}

fn child_fds_sit_high() {
    let before = fd_list();
    let limit = nofile();
    for lim in [limit, 1024, 200] {
        set_nofile(lim);
        let floor = expected_floor(lim);
        let (probers, fds) = crate_numbers(&before);
        println!("RLIMIT_NOFILE {lim}: the crate holds {fds:?}");
        for (n, target) in &fds {
            assert!(
                (floor..lim).contains(&(*n as u64)),
                "RLIMIT_NOFILE {lim}: {target} sits at {n}, not in [{floor}, {lim})"
            );
        }
        if lim >= 1024 + 16 {
            assert!(fds.iter().all(|&(n, _)| n >= 1024));
            figure("fds_high.lowest_crate_fd", fds[0].0);
        }
        // Every probe still works there.
        let (r, bytes) = fixture();
        for p in &probers {
            assert_eq!(probe_ok(p, &r, &bytes), Some(true), "{}", p.backend());
        }
        drop(probers);
        assert_eq!(fd_list(), before, "descriptors left open at limit {lim}");
    }
    set_nofile(limit);
    figure("fds_high", "passed");
}

/// With `RLIMIT_NOFILE` above 1040 every descriptor of the crate sits at 1024 or above; with
/// a lower limit, in the top 16 numbers it allows.
#[test]
fn crate_descriptors_sit_above_the_lowest_free_numbers() {
    if is_child("crate_descriptors_sit_above_the_lowest_free_numbers") {
        return child_fds_sit_high();
    }
    let out = run_child("crate_descriptors_sit_above_the_lowest_free_numbers");
    out.assert_success();
    out.forward_figures();
}

/// Bytes this thread has passed to `write`-like syscalls (`wchar` of /proc/thread-self/io).
fn thread_wchar() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

fn child_dev_null_bytes() {
    if thread_wchar().is_none() {
        println!("note: /proc/thread-self/io is missing (no task I/O accounting): not measured");
        return;
    }
    let p = Prober::new(Backend::DevNull).expect("dev-null");
    let r = Region::anon(64);
    let ps = ps();
    let mut most = 0;
    for (off, len, pages) in [
        (0, 64 * ps, 64),
        (ps / 2, 63 * ps, 64),
        (100, 1, 1),
        (0, ps, 1),
        (ps - 1, 2, 2),
    ] {
        let w0 = thread_wchar().unwrap();
        assert_eq!(p.check(r.addr + off, len), Ok(true));
        let w1 = thread_wchar().unwrap();
        let written = w1 - w0;
        assert!(
            (1..=pages as u64).contains(&written),
            "dev-null wrote {written} bytes to probe {len} bytes over {pages} pages"
        );
        most = most.max(written);
    }
    figure("dev_null.bytes_written_per_64_pages", most);
}

/// dev-null's probe passes at most one byte per page to the kernel, so a descriptor lost to
/// another file between the identity check and the write receives no more than that.
#[test]
fn dev_null_writes_at_most_one_byte_per_page() {
    if is_child("dev_null_writes_at_most_one_byte_per_page") {
        return child_dev_null_bytes();
    }
    let out = run_child("dev_null_writes_at_most_one_byte_per_page");
    out.assert_success();
    out.forward_figures();
}

const FLIPS: usize = 2_000_000;
/// At most this many probe pairs; they stop once dev-null lost the race `HITS` times.
const RACE_PROBES: usize = 100_000;
const HITS: usize = 8;
const RACE_PAGES: usize = 64;
const INTERIOR: u8 = 0x55;

fn marker(page: usize) -> u8 {
    0x80 + page as u8
}

fn file_size(fd: i32) -> usize {
    // SAFETY: fstat of our own descriptor into a zeroed struct.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        assert_eq!(libc::fstat(fd, &mut st), 0);
        st.st_size as usize
    }
}

/// An unlinked file of the application's, opened `O_APPEND`.
fn app_file(name: &str) -> i32 {
    let path = std::env::temp_dir().join(format!("addrprobe-{name}-{}", std::process::id()));
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: open with a NUL-terminated path; unlink it at once.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND | libc::O_CLOEXEC,
            0o600,
        )
    };
    assert!(fd >= 0);
    // SAFETY: as above.
    unsafe { libc::unlink(c.as_ptr()) };
    fd
}

/// The bytes in `fd`; panics if any of them is not a probe point's byte.
fn landed(fd: i32, what: &str) -> usize {
    let size = file_size(fd);
    let mut got = vec![0u8; size];
    // SAFETY: pread into our own buffer from our own file.
    let n = unsafe { libc::pread(fd, got.as_mut_ptr().cast(), size, 0) };
    assert_eq!(n as usize, size);
    let interior = got.iter().filter(|&&b| b == INTERIOR).count();
    assert_eq!(
        interior, 0,
        "{what}: {interior} bytes from the inside of probed pages landed in the application's file ({size} bytes in all): a lost race must cost at most the probed byte of each page"
    );
    assert!(
        got.iter()
            .all(|&b| (marker(0)..=marker(RACE_PAGES - 1)).contains(&b)),
        "{what}: bytes that no probe point holds landed in the application's file"
    );
    size
}

fn child_lost_race() {
    let before = fd_list();
    let dev = Prober::new(Backend::DevNull).expect("dev-null");
    let pipe = Prober::new(Backend::Pipe).expect("pipe");
    let fds = new_fds(&before, &fd_list());
    let null_n = fds
        .iter()
        .find(|(_, t)| t == "/dev/null")
        .expect("/dev/null")
        .0;
    let pipe_n = fds
        .iter()
        .filter(|(_, t)| t.starts_with("pipe:"))
        .map(|&(n, _)| n)
        .min()
        .expect("a pooled pipe");
    // Our own /dev/null (same device and inode as the crate's) and our own copy of the
    // crate's first pooled pipe: putting them back makes the identity check pass again.
    // SAFETY: open with a static path.
    let own_null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    // SAFETY: F_DUPFD_CLOEXEC of a number that holds the crate's pipe.
    let own_pipe = unsafe { libc::fcntl(pipe_n, libc::F_DUPFD_CLOEXEC, 3) };
    assert!(own_null >= 0 && own_pipe >= 0);
    let (app_null, app_pipe) = (app_file("race-null"), app_file("race-pipe"));

    // Every page holds INTERIOR bytes except its first byte, the one a probe point reads.
    let r = Region::anon(RACE_PAGES);
    for i in 0..RACE_PAGES {
        let mut page = vec![INTERIOR; ps()];
        page[0] = marker(i);
        r.fill(i, &page);
    }
    let len = RACE_PAGES * ps();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let probes = AtomicUsize::new(0);
    let (dev_unavailable, pipe_errors) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = support::Rng(0x9e37_79b9_7f4a_7c15);
            let dwell = |rng: &mut support::Rng| {
                for _ in 0..rng.below(64) {
                    core::hint::spin_loop();
                }
            };
            for _ in 0..FLIPS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // SAFETY: the application's own numbers games: each dup2 replaces what the
                // number holds; the second of each pair puts the crate's file back.
                unsafe {
                    libc::dup2(app_null, null_n);
                    dwell(&mut rng);
                    libc::dup2(own_null, null_n);
                    dwell(&mut rng);
                    libc::dup2(app_pipe, pipe_n);
                    dwell(&mut rng);
                    libc::dup2(own_pipe, pipe_n);
                    dwell(&mut rng);
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        s.spawn(|| {
            for i in 0..RACE_PROBES {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if i % 64 == 0 && file_size(app_null) >= HITS * RACE_PAGES {
                    break;
                }
                match dev.check(r.addr, len) {
                    Ok(true) => {}
                    Err(Error::Unavailable { .. }) => {
                        dev_unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("dev-null: {other:?}"),
                }
                match pipe.check(r.addr, len) {
                    Ok(true) => {}
                    Ok(false) => panic!("pipe: a readable range said no"),
                    Err(_) => {
                        pipe_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                probes.fetch_add(1, Ordering::Relaxed);
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    let probes = probes.load(Ordering::Relaxed);
    println!(
        "{probes} probe pairs; bytes in the application's files: {} (dev-null's number), {} (the pipe's); dev-null unavailable {}, pipe errors {}",
        file_size(app_null),
        file_size(app_pipe),
        dev_unavailable.load(Ordering::Relaxed),
        pipe_errors.load(Ordering::Relaxed)
    );
    let null_bytes = landed(app_null, "dev-null");
    let pipe_bytes = landed(app_pipe, "pipe");
    if null_bytes == 0 {
        println!("note: dev-null never lost the race in this run");
    }
    assert!(null_bytes <= probes * RACE_PAGES && pipe_bytes <= probes * RACE_PAGES);
    // The crate's numbers hold its own files again, and it keeps answering.
    assert_eq!(dev.check(r.addr, len), Ok(true));
    drop((dev, pipe));
    for fd in [own_null, own_pipe, app_null, app_pipe] {
        // SAFETY: our own descriptors.
        unsafe { libc::close(fd) };
    }
    assert_eq!(fd_list(), before, "descriptors left open");
    figure("fd_race.probe_pairs", probes);
    figure("fd_race.dev_null_lost_races", null_bytes / RACE_PAGES);
    figure("fd_race.bytes_landed", null_bytes + pipe_bytes);
    figure("fd_race.interior_bytes_landed", 0);
}

/// A thread keeps replacing the crate's /dev/null and first pooled pipe with a file of its own
/// (dup2 onto their numbers) and putting them back, while another probes a 64-page range with
/// dev-null and pipe. A probe that loses the race (its identity check passed, then the number
/// changed) may write into the file, but only the one probed byte of each page.
#[test]
fn lost_descriptor_race_writes_at_most_one_byte_per_page() {
    if is_child("lost_descriptor_race_writes_at_most_one_byte_per_page") {
        return child_lost_race();
    }
    let out = support::run_child_env(
        "lost_descriptor_race_writes_at_most_one_byte_per_page",
        &[],
        std::time::Duration::from_secs(60),
    );
    out.assert_success();
    out.forward_figures();
}
